/**
 * Scenario 2: a reboot with the WAN cut — the phone starts from the store and registers on the
 * SBA, without the central web services. Scenario 5: the certificate enters its renewal window
 * while the WAN is cut — the phone keeps working on the old certificate and renews once the WAN
 * returns.
 */
import { X509Certificate } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSimBoard } from "../../board/sim/index.ts";
import { openStore } from "../../firmware/commands/identity.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { startPhone } from "../../firmware/main.ts";
import type { PhoneEvent } from "../../firmware/phone/phone.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { type Lab, phoneNetwork, startLab } from "../lab/lab.ts";
import { isUp, makeRig, pass, register, settle, signedInStore, sleep, waitStatus } from "./harness.ts";

describe("scenario 2: reboot with the WAN cut", () => {
  let lab: Lab;
  beforeAll(async () => {
    lab = await startLab({ site: "branch" });
  });
  afterAll(async () => {
    await lab?.stop();
  });

  it("boots from the store and registers on the SBA with the central pool unreachable", async () => {
    const storeDir = await signedInStore(lab);
    lab.wan.cut();
    const events: PhoneEvent[] = [];
    const board = createSimBoard({ clock: new SystemClock() });
    const phone = await startPhone({
      config: {
        storeDir,
        trustedRoots: [lab.ca.cert],
        network: phoneNetwork(lab.ready),
      },
      board,
      logger: silentLogger,
      onEvent: (e) => events.push(e),
    });
    try {
      const deadline = Date.now() + 20_000;
      while (
        !events.some((e) => e.event === "state" && (e.state === "registered" || e.state === "limited"))
      ) {
        if (Date.now() > deadline)
          throw new Error(`not registered: ${JSON.stringify(events.filter((e) => e.event === "state"))}`);
        await sleep(20);
      }
      const states = events.filter((e) => e.event === "state").map((e) => e.state);
      expect(states).not.toContain("sign-in-required");
      const up = events.find((e) => e.event === "state" && e.registrar);
      expect(up).toMatchObject({ registrar: lab.ready.sba });
      expect(board.current.lines.join("\n")).toMatch(/Registered|Limited/);
    } finally {
      await phone.stop();
      lab.wan.restore();
    }
  });
});

describe("scenario 5: renewal window while the WAN is cut", () => {
  let lab: Lab;
  // The pool's web services must share the phone's (simulated) time, as a real pool shares real time.
  let poolNow = () => Date.now();
  beforeAll(async () => {
    // One-day certificates: renewal falls due after 12 h (never earlier than half the lifetime).
    lab = await startLab({
      site: "branch",
      expires: 600,
      web: { certValidityDays: 1, now: () => poolNow() },
    });
  });
  afterAll(async () => {
    await lab?.stop();
  });

  it("keeps registering on the old certificate, and renews once the WAN returns", {
    timeout: 90_000,
  }, async () => {
    const storeDir = await signedInStore(lab);
    const store = openStore(storeDir, new CryptoRandom());
    const serial = async () => new X509Certificate((await store.load())!.credential!.certPem).serialNumber;
    const oldSerial = await serial();

    const rig = await makeRig(lab, storeDir);
    poolNow = () => rig.clock.now();
    try {
      register(rig);
      await waitStatus(rig, isUp);
      lab.wan.cut();
      const mark = rig.statuses.length;
      // 16 h of simulated time: 11 h until the renewal is due, then hours of failing retries.
      await pass(lab, rig, 16 * 3600_000, 90_000);
      expect(await serial()).toBe(oldSerial);
      expect(rig.statuses.slice(mark).filter((s) => !isUp(s))).toEqual([]);
      // Renewal fell due and failed (the web services are across the cut WAN), without a word to
      // the registration.
      const lifecycle = rig.logs
        .filter((l) => l.message === "certificate lifecycle")
        .map((l) => l.fields?.["type"]);
      expect(lifecycle).toContain("renewal-due");

      lab.wan.restore();
      const deadline = Date.now() + 40_000;
      while ((await serial()) === oldSerial) {
        if (Date.now() > deadline)
          throw new Error(
            `no renewal after the WAN came back: ${JSON.stringify(rig.logs.filter((l) => /renew|certificate/.test(l.message)).slice(-6))}`,
          );
        await pass(lab, rig, 300_000, 60_000, { thorough: true });
        await settle(lab, rig);
      }
      expect(rig.statuses.slice(mark).filter((s) => !isUp(s))).toEqual([]);
      // The renewed certificate is the one the registrar sees at the next re-authentication.
      expect(lab.directory.isPublished("sip:4711@lab.test", (await store.load())!.credential!.certPem)).toBe(
        true,
      );
    } finally {
      await rig.handle?.stop();
      await settle(lab, rig);
    }
  });
});
