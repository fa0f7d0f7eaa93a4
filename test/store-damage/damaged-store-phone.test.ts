/**
 * Issue 14 at the phone itself: the Phone state machine on its real services against the lab.
 * With one identity file damaged it boots straight to `registered` (never `sign-in-required`);
 * with every file damaged it says so ("Identity damaged" on the sign-in form, error event
 * store-damaged "The stored identity is damaged") instead of "no identity yet", and a new
 * sign-in at the keypad brings it back (a phone that only repeats "damaged" is dead on the wall).
 */
import { cp, mkdtemp, rm, truncate } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore } from "../../firmware/commands/identity.ts";
import { createPhoneServices } from "../../firmware/commands/phone-services.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { ClockService } from "../../firmware/discovery/clock-service.ts";
import type { DisplayFrame } from "../../firmware/hal/display.ts";
import type { Key, KeyEvent } from "../../firmware/hal/keys.ts";
import { Phone, type PhoneEvent } from "../../firmware/phone/phone.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { type Lab, phoneNetwork, startLab } from "../lab/lab.ts";
import { signedInStore, sleep } from "../scenarios/harness.ts";

let lab: Lab;
let signedIn: string;
const made: string[] = [];

beforeAll(async () => {
  lab = await startLab({ site: "branch", expires: 600 });
  signedIn = await signedInStore(lab);
  made.push(signedIn);
}, 60_000);

afterAll(async () => {
  await lab?.stop();
  for (const d of made) await rm(d, { recursive: true, force: true });
});

async function damagedCopy(files: string[]): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "handset-damage-phone-"));
  made.push(dir);
  await cp(signedIn, dir, { recursive: true });
  for (const f of files) await truncate(join(dir, f), 100);
  return dir;
}

async function bootPhone(
  dir: string,
  until: (e: PhoneEvent) => boolean,
  atSignIn?: { keys: string; until: (e: PhoneEvent) => boolean },
) {
  const clock = new ManualClock(Date.now());
  const random = new CryptoRandom();
  const services = createPhoneServices({
    config: { ...phoneNetwork(lab.ready), dhcpTimeoutMs: 4_000 },
    store: openStore(dir, random),
    trustedRoots: [lab.ca.cert],
    clock: new ClockService({ base: clock }),
    random,
    logger: silentLogger,
  });
  const frames: DisplayFrame[] = [];
  const events: PhoneEvent[] = [];
  const off = { set: () => {} };
  let press: (k: Key) => void = () => {};
  const phone = new Phone({
    keys: {
      onKey: (l) => {
        press = (k) => l({ key: k, kind: "press" } as KeyEvent);
        return () => {};
      },
    },
    display: { cols: 20, rows: 4, show: (f) => frames.push(f), setBacklight: () => {} },
    indicators: { messageWaiting: off, status: off },
    services,
    clock,
    random,
  });
  phone.events.on((e) => events.push(e));
  phone.start();
  const deadline = Date.now() + 15_000;
  while (!events.some(until) && Date.now() < deadline) await sleep(10);
  if (atSignIn) {
    for (const k of atSignIn.keys) press(k as Key);
    while (!events.some(atSignIn.until) && Date.now() < deadline + 15_000) await sleep(10);
  }
  await phone.stop();
  return { frames, events, states: events.flatMap((e) => (e.event === "state" ? [e.state] : [])) };
}

describe("the phone on a damaged store", () => {
  it("identity.json damaged: registers, never asks for sign-in", async () => {
    const dir = await damagedCopy(["identity.json"]);
    const { states } = await bootPhone(dir, (e) => e.event === "state" && e.state === "registered");
    expect(states).toContain("registered");
    expect(states).not.toContain("sign-in-required");
  }, 30_000);

  it('every file damaged: store-damaged "The stored identity is damaged" on the sign-in form, and a new sign-in registers', async () => {
    const dir = await damagedCopy(["identity.json", "identity.prev.json"]);
    const isState = (state: string) => (e: PhoneEvent) => e.event === "state" && e.state === state;
    const { frames, events, states } = await bootPhone(dir, isState("sign-in-required"), {
      keys: "4711#1234#",
      until: isState("registered"),
    });
    expect(events).toContainEqual(
      expect.objectContaining({
        event: "error",
        code: "store-damaged",
        message: "The stored identity is damaged",
      }),
    );
    const form = frames.find((f) => f.lines.some((l) => l.includes("Identity damaged")));
    expect(form?.lines.join("\n")).toContain("Ext:");
    expect(frames.some((f) => f.lines.some((l) => /no identity/i.test(l)))).toBe(false);
    expect(states.at(-1)).toBe("registered");
  }, 30_000);
});
