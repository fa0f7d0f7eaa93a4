/**
 * Issue 12, DTMF from the keypad with the real media port (firmware/platform/call-media.ts):
 * two whole phones registered with the lab's SBA, a call between them carrying SRTP over UDP on
 * 127.0.0.1, and keys typed on A's keypad during the call arriving at B's port as RFC 4733
 * telephone-events (AudioStreamEvent "dtmf"). A = 4711, B = 4712.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../firmware/core/logger.ts";
import type { DtmfDigit } from "../../firmware/media/dtmf.ts";
import {
  type CallMediaPort,
  type CallMediaPorts,
  callMediaPorts,
} from "../../firmware/platform/call-media.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { addUser, testClient } from "../lab-calls/phones.ts";
import { type LabHandset, labHandset, until, untilShows } from "./lab-phone.ts";

/** Apart from the ranges of test/platform/ (42000…, 43000…), so the files may run side by side. */
const RANGE = { min: 45000, max: 45999 };

let lab: Lab;
let a: LabHandset;
let b: LabHandset;
const pools: CallMediaPorts[] = [];
/** Every port B made, in order, with the digits it heard. */
const bHeard = new Map<CallMediaPort, DtmfDigit[]>();

function ports(): Promise<CallMediaPorts> {
  return callMediaPorts({
    clock: new SystemClock(),
    random: new CryptoRandom(),
    logger: silentLogger,
    address: "127.0.0.1",
    portRange: RANGE,
    capabilities: { codecs: ["PCMU", "PCMA"], srtp: "required" },
    spares: 1,
  });
}

beforeAll(async () => {
  lab = await startLab();
  const userB = await addUser(lab, "4712");
  const [pa, pb] = await Promise.all([ports(), ports()]);
  pools.push(pa, pb);
  pb.onPort((port) => {
    const heard: DtmfDigit[] = [];
    bHeard.set(port, heard);
    port.events.on((e) => {
      if (e.type === "dtmf") heard.push(e.digit);
    });
  });
  [a, b] = await Promise.all([
    labHandset(lab, testClient(lab), "A", undefined, { media: pa.factory }),
    labHandset(lab, userB, "B", undefined, { media: pb.factory }),
  ]);
}, 60_000);

afterAll(async () => {
  for (const h of [a, b]) await h?.stop();
  for (const p of pools) await p.close();
  await lab?.stop();
});

describe("DTMF with the real media port", () => {
  it("A types 1 5 # during the call: B's port receives the telephone-events, A's screen shows them", async () => {
    a.board.typeKeys("4712#");
    await untilShows(b, "Incoming call");
    b.board.setHook(true);
    await untilShows(a, /^00:0\d/);
    const [aPort] = pools[0]!.live;
    const [bPort] = pools[1]!.live;
    await until(
      a,
      () => aPort?.stats().state === "streaming" && bPort?.stats().state === "streaming",
      "media",
    );
    expect(aPort!.stats().srtp).toBe(true);

    a.board.typeKeys("15#");
    expect(a.screen()[0]).toBe("4712             15#");
    const heard = bHeard.get(bPort!)!;
    await until(b, () => heard.length >= 3, "B to hear three digits", 5_000);
    expect(heard).toEqual(["1", "5", "#"]);

    a.board.press("soft4");
    await untilShows(b, "Call ended");
  }, 30_000);
});
