/**
 * `handset update` and `handset slot` on a disk of plain files: a good update writes only the
 * inactive slot and asks for a trial boot; the health check commits it (kept on the next boot) or
 * reboots without tryboot (the old slot again); every bad bundle and a busy phone are refused
 * before a byte is written.
 */
import { generateKeyPairSync, randomBytes } from "node:crypto";
import { mkdir, readFile, rm, stat, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { main } from "../../firmware/cli.ts";
import { slotCommand } from "../../firmware/commands/slot.ts";
import { updateCommand } from "../../firmware/commands/update.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { HandsetError } from "../../firmware/core/errors.ts";
import { writePayload } from "../../firmware/platform/slot-writer.ts";
import { renderAutoboot } from "../../firmware/update/autoboot.ts";
import {
  ARCH,
  captureOutput,
  committedPartition,
  diskFlags,
  emulatedBoot,
  fakeSystemctl,
  makeBundle,
  makeDisk,
  OTHER_ARCH,
  partitionHash,
  prefixHash,
  sha256,
  slotFlags,
  snapshot,
  type TestDisk,
} from "./fixtures.ts";

let d: TestDisk;
beforeEach(async () => {
  d = await makeDisk();
});
afterEach(async () => {
  await d.cleanup();
});

const payloads = () => ({ boot: randomBytes(100 * 1024), system: randomBytes(700 * 1024) });

async function writeBundle(bytes: Uint8Array, name = "bundle.bin"): Promise<string> {
  const p = join(d.root, name);
  await writeFile(p, bytes);
  return p;
}

async function expectCode(p: Promise<unknown>, code: string): Promise<void> {
  await expect(p).rejects.toSatisfy((e: unknown) => e instanceof HandsetError && e.code === code);
}

/** Lets file I/O and promise chains run: a few turns of the event loop, with real time passing. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((r) => setTimeout(r, 1));
}

/** Runs the health check to its verdict on a manual clock (probe answers are async). */
async function runHealth(
  sys: ReturnType<typeof fakeSystemctl>,
  clock: ManualClock,
  extra: string[] = [],
  during?: (elapsedMin: number) => void,
): Promise<{ code: number | HandsetError; events: Array<Record<string, unknown>> }> {
  const cap = captureOutput();
  let result: number | HandsetError | undefined;
  const p = slotCommand(["health", ...slotFlags(d), ...extra], cap.out, {
    run: sys.run,
    clock,
    pollMs: 5_000,
  }).then(
    (c) => {
      result = c;
    },
    (e: unknown) => {
      result = e as HandsetError;
    },
  );
  // Deterministic: let every pending I/O settle, then jump to the health check's next timer.
  for (let i = 0; result === undefined && i < 10_000; i++) {
    await settle();
    if (result !== undefined) break;
    const next = clock.nextTimerIn();
    if (next === undefined) continue;
    clock.advance(next);
    during?.(clock.monotonic() / 60_000);
  }
  await p;
  return { code: result!, events: cap.events };
}

describe("handset update: the good path", () => {
  it("writes the inactive slot only, leaves autoboot alone, asks for a trial boot; health OK commits; the next boot keeps the new slot", async () => {
    const { boot, system } = payloads();
    const bundle = await writeBundle(makeBundle({ boot, system, key: d.privateKey }));
    const before = await snapshot(d);
    const sys = fakeSystemctl({ status: "registered registrar=sba.lab.test:5061 primary" });
    const cap = captureOutput();
    expect(await updateCommand([bundle, ...diskFlags(d)], cap.out, { run: sys.run })).toBe(0);

    // The running slot (a) and the config's autoboot.txt are byte-identical, with the same mtime.
    const after = await snapshot(d);
    for (const n of ["boot_a", "system_a", "data", "config/autoboot.txt"])
      expect(after[join(d.disk, n)], n).toEqual(before[join(d.disk, n)]);
    // The inactive slot (b) holds the payloads, and nothing past them changed.
    expect(await prefixHash(d, "boot_b", boot.length)).toBe(sha256(boot));
    expect(await prefixHash(d, "system_b", system.length)).toBe(sha256(system));
    expect((await stat(join(d.disk, "system_b"))).size).toBe(d.systemBytes);
    // The trial boot was requested the emulated way: flag, then a plain systemctl reboot.
    expect(await stat(join(d.config, "tryboot"))).toBeTruthy();
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([["systemctl", "reboot"]]);
    expect(cap.events.map((e) => e["event"])).toEqual(
      expect.arrayContaining(["update.verified", "update.written", "update.reboot"]),
    );
    expect(await committedPartition(d)).toBe(2);

    // The bootloader starts slot b once, as a trial.
    expect(await emulatedBoot(d)).toEqual({ partition: 3, tryboot: true });
    const st = captureOutput();
    await slotCommand(["status", ...slotFlags(d)], st.out, { run: sys.run });
    expect(st.events[0]).toMatchObject({
      event: "slot.status",
      running: "b",
      committed: "a",
      state: "trial",
      slots: { b: { version: "2.0.0", state: "written" } },
    });
    // An update during the trial would overwrite the way back: refused.
    await expectCode(
      updateCommand([bundle, ...diskFlags(d)], captureOutput().out, { run: sys.run }),
      "update-trial-pending",
    );

    // Health: registered at once → commit: autoboot [all] = 3.
    const clock = new ManualClock();
    const h = await runHealth(sys, clock);
    expect(h.code).toBe(0);
    expect(h.events.find((e) => e["event"] === "slot.commit")).toMatchObject({ slot: "b", changed: true });
    expect(await readFile(join(d.config, "autoboot.txt"), "utf8")).toBe(renderAutoboot(3));
    expect(sys.calls.filter((c) => c[1] === "reboot")).toHaveLength(1); // no rollback reboot

    // The next (plain) boot stays on b, and its health check is a no-op.
    expect(await emulatedBoot(d)).toEqual({ partition: 3, tryboot: false });
    const h2 = await runHealth(sys, new ManualClock());
    expect(h2.code).toBe(0);
    expect(h2.events[0]).toMatchObject({ event: "slot.health", trial: false, slot: "b" });
    // slot commit is a no-op now.
    const c = captureOutput();
    await slotCommand(["commit", ...slotFlags(d)], c.out, { run: sys.run });
    expect(c.events[0]).toMatchObject({ event: "slot.commit", slot: "b", changed: false });

    // And the next update goes to slot a, leaving b (now running) alone.
    const p2 = payloads();
    const bundle2 = await writeBundle(makeBundle({ ...p2, version: "2.1.0", key: d.privateKey }), "b2.bin");
    const bHash = await partitionHash(d, "system_b");
    expect(
      await updateCommand([bundle2, ...diskFlags(d), "--no-reboot"], captureOutput().out, { run: sys.run }),
    ).toBe(0);
    expect(await partitionHash(d, "system_b")).toBe(bHash);
    expect(await prefixHash(d, "system_a", p2.system.length)).toBe(sha256(p2.system));
  });

  it("--no-reboot writes and verifies, says what is next, and neither reboots nor sets the flag", async () => {
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    const sys = fakeSystemctl({ status: "registered" });
    const cap = captureOutput();
    expect(
      await updateCommand([bundle, ...diskFlags(d), "--no-reboot", "--json"], cap.out, { run: sys.run }),
    ).toBe(0);
    expect(cap.events.at(-1)).toMatchObject({ event: "update.ready", slot: "b", version: "2.0.0" });
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
    await expect(stat(join(d.config, "tryboot"))).rejects.toThrow();
  });

  it('on a Pi (device tree) the trial is systemctl reboot "0 tryboot"', async () => {
    const bl = join(d.proc, "device-tree", "chosen", "bootloader");
    await mkdir(bl, { recursive: true });
    await writeFile(join(bl, "partition"), Buffer.from([0, 0, 0, 2]));
    await writeFile(join(bl, "tryboot"), Buffer.from([0, 0, 0, 0]));
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    const sys = fakeSystemctl({ status: "limited" });
    expect(await updateCommand([bundle, ...diskFlags(d)], captureOutput().out, { run: sys.run })).toBe(0);
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([["systemctl", "reboot", "0 tryboot"]]);
    await expect(stat(join(d.config, "tryboot"))).rejects.toThrow();
  });

  it("is registered on the command line (handset update --help, handset slot --help)", async () => {
    const lines: string[] = [];
    expect(await main(["update", "--help"], { write: (l) => lines.push(l) })).toBe(0);
    expect(lines.join("\n")).toContain("--no-reboot");
    expect(await main(["slot", "--help"], { write: (l) => lines.push(l) })).toBe(0);
    expect(lines.join("\n")).toContain("--window-min");
    const errs: string[] = [];
    expect(await main(["update", "--json"], { write: () => {}, writeErr: (l) => errs.push(l) })).toBe(2);
  });
});

describe("handset update: refused before anything is written", () => {
  const cases: Array<[string, string, (t: TestDisk) => Promise<Uint8Array> | Uint8Array]> = [
    ["unsigned", "update-unsigned", () => makeBundle({ ...payloads(), key: undefined })],
    [
      "signed by a key the phone does not have",
      "update-bad-signature",
      () => makeBundle({ ...payloads(), key: generateKeyPairSync("ed25519").privateKey }),
    ],
    [
      "header tampered (version changed after signing)",
      "update-bad-signature",
      (t) => {
        const b = Buffer.from(makeBundle({ ...payloads(), key: t.privateKey }));
        const i = b.indexOf('"version":"2.0.0"');
        b.write('"version":"9.0.0"', i);
        return b;
      },
    ],
    [
      "payload tampered (one byte of the system payload flipped)",
      "update-tampered",
      (t) => {
        const b = Buffer.from(makeBundle({ ...payloads(), key: t.privateKey }));
        b[b.length - 1000]! ^= 0x01;
        return b;
      },
    ],
    [
      "payload tampered (one byte of the boot payload flipped)",
      "update-tampered",
      (t) => {
        const p = payloads();
        const b = Buffer.from(makeBundle({ ...p, key: t.privateKey }));
        b[b.length - p.system.length - 10]! ^= 0x80;
        return b;
      },
    ],
    [
      "for the other arch",
      "update-wrong-arch",
      (t) => makeBundle({ ...payloads(), arch: OTHER_ARCH, key: t.privateKey }),
    ],
    [
      "truncated",
      "update-malformed",
      (t) => makeBundle({ ...payloads(), key: t.privateKey }).subarray(0, 50_000),
    ],
    [
      "system payload larger than its partition",
      "update-too-large",
      (t) =>
        makeBundle({ boot: randomBytes(1000), system: randomBytes(t.systemBytes + 1), key: t.privateKey }),
    ],
    [
      "boot payload larger than its partition",
      "update-too-large",
      (t) => makeBundle({ boot: randomBytes(t.bootBytes + 1), system: randomBytes(1000), key: t.privateKey }),
    ],
    ["not a bundle at all", "update-malformed", () => randomBytes(5000)],
  ];
  for (const [what, code, make] of cases)
    it(`${what} → ${code}`, async () => {
      const bundle = await writeBundle(await make(d));
      const before = await snapshot(d);
      const sys = fakeSystemctl({ status: "registered" });
      const cap = captureOutput();
      await expectCode(updateCommand([bundle, ...diskFlags(d)], cap.out, { run: sys.run }), code);
      expect(await snapshot(d)).toEqual(before);
      expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
      // Through the CLI too: non-zero exit, the code in the JSON error event (no reboot: --no-reboot).
      const lines: string[] = [];
      const exit = await main(["update", bundle, ...diskFlags(d), "--no-reboot", "--json"], {
        write: (l) => lines.push(l),
        writeErr: () => {},
      });
      expect(exit).toBe(1);
      expect(JSON.parse(lines.at(-1)!)).toMatchObject({ event: "error", code });
      expect(await snapshot(d)).toEqual(before);
    });

  it("no update key → update-no-key (there is no default key)", async () => {
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    await rm(join(d.keys, "key-1.pem"));
    const before = await snapshot(d);
    await expectCode(
      updateCommand([bundle, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
      "update-no-key",
    );
    await expectCode(
      updateCommand(
        [bundle, "--disk", d.disk, "--proc", d.proc, "--keys", join(d.root, "nowhere")],
        captureOutput().out,
        {
          run: fakeSystemctl({ status: "registered" }).run,
        },
      ),
      "update-no-key",
    );
    expect(await snapshot(d)).toEqual(before);
  });

  it("a private key in the keys directory is refused, not taken for a public one", async () => {
    await writeFile(
      join(d.keys, "oops.pem"),
      d.privateKey.export({ type: "pkcs8", format: "pem" }).toString(),
    );
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    await expectCode(
      updateCommand([bundle, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
      "update-key-invalid",
    );
  });

  for (const status of ["signing-in", "in-call"])
    it(`phone ${status} → update-busy, nothing written, no reboot`, async () => {
      const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
      const before = await snapshot(d);
      const sys = fakeSystemctl({ status });
      await expectCode(
        updateCommand([bundle, ...diskFlags(d)], captureOutput().out, { run: sys.run }),
        "update-busy",
      );
      expect(await snapshot(d)).toEqual(before);
      expect(sys.calls).toEqual([
        ["systemctl", "show", "-p", "ActiveState", "-p", "StatusText", "-p", "NRestarts", "handset.service"],
      ]);
    });

  it("the slot writer refuses the running slot's partition, also through a symlink", async () => {
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    const before = await partitionHash(d, "system_a");
    const { symlink } = await import("node:fs/promises");
    await symlink(join(d.disk, "system_a"), join(d.root, "alias"));
    for (const target of [join(d.disk, "system_a"), join(d.root, "alias")])
      await expectCode(
        writePayload({
          source: bundle,
          start: 0,
          size: 10,
          sha256: "0".repeat(64),
          target,
          protected: [join(d.disk, "boot_a"), join(d.disk, "system_a")],
        }),
        "update-running-slot",
      );
    expect(await partitionHash(d, "system_a")).toBe(before);
  });

  it("an update while autoboot.txt disagrees with the running slot is refused", async () => {
    await writeFile(join(d.proc, "cmdline"), "handset.boot_partition=3\n"); // b running, [all] = a, no tryboot
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    const before = await snapshot(d);
    await expectCode(
      updateCommand([bundle, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
      "update-slot-mismatch",
    );
    expect(await snapshot(d)).toEqual(before);
  });
});

describe("handset slot health: a bad trial goes back", () => {
  async function toTrial(): Promise<void> {
    const bundle = await writeBundle(makeBundle({ ...payloads(), key: d.privateKey }));
    expect(
      await updateCommand([bundle, ...diskFlags(d)], captureOutput().out, {
        run: fakeSystemctl({ status: "registered" }).run,
      }),
    ).toBe(0);
    expect(await emulatedBoot(d)).toEqual({ partition: 3, tryboot: true });
  }

  it("StatusText stays sign-in-required past the window → plain reboot, autoboot untouched, next boot is the old slot", async () => {
    await toTrial();
    const ab = await readFile(join(d.config, "autoboot.txt"));
    const sys = fakeSystemctl({ status: "sign-in-required" });
    const clock = new ManualClock();
    const h = await runHealth(sys, clock, ["--window-min", "3"]);
    expect(h.code).toBeInstanceOf(HandsetError);
    expect((h.code as HandsetError).code).toBe("slot-unhealthy");
    const rollback = h.events.find((e) => e["event"] === "slot.rollback");
    expect(rollback).toMatchObject({ slot: "b", to: "a", afterMs: 3 * 60_000 });
    expect(String(rollback?.["reason"])).toContain("sign-in-required");
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([["systemctl", "reboot"]]);
    expect(await readFile(join(d.config, "autoboot.txt"))).toEqual(ab);
    await expect(stat(join(d.config, "tryboot"))).rejects.toThrow();
    expect(await emulatedBoot(d)).toEqual({ partition: 2, tryboot: false });
  });

  it("the phone service restarts during the window (NRestarts grows) → rollback, even though it says registered", async () => {
    await toTrial();
    const sys = fakeSystemctl({ status: "registering", restarts: 0 });
    const clock = new ManualClock();
    const h = await runHealth(sys, clock, [], (min) => {
      if (min >= 1) {
        sys.phone.restarts = 1;
        sys.phone.status = "registered";
      }
    });
    expect((h.code as HandsetError).code).toBe("slot-unhealthy");
    const rollback = h.events.find((e) => e["event"] === "slot.rollback");
    expect(String(rollback?.["reason"])).toContain("restarted");
    expect(rollback?.["afterMs"]).toBeLessThanOrEqual(65_000);
    expect(await committedPartition(d)).toBe(2);
    expect(await emulatedBoot(d)).toEqual({ partition: 2, tryboot: false });
  });

  it("registered after a few minutes, within the window → commit", async () => {
    await toTrial();
    const sys = fakeSystemctl({ status: "registering" });
    const clock = new ManualClock();
    const h = await runHealth(sys, clock, [], (min) => {
      if (min >= 4) sys.phone.status = "limited";
    });
    expect(h.code).toBe(0);
    expect(await committedPartition(d)).toBe(3);
    expect(sys.calls.filter((c) => c[1] !== "show")).toEqual([]);
  });

  it("--window-min out of range is a usage error", async () => {
    for (const w of ["0", "121", "abc"])
      await expectCode(
        slotCommand(["health", ...slotFlags(d), "--window-min", w], captureOutput().out, {
          run: fakeSystemctl({ status: "registered" }).run,
        }),
        "usage",
      );
  });
});

describe("slot status and commit with a damaged autoboot.txt", () => {
  it("autoboot.txt half-written but .new complete: status reads .new, commit repairs to one good file", async () => {
    await writeFile(join(d.config, "autoboot.txt"), "[all]\ntryboot_a_b=1\nboot_parti");
    await writeFile(join(d.config, "autoboot.txt.new"), renderAutoboot(2));
    const st = captureOutput();
    await slotCommand(["status", ...slotFlags(d)], st.out, {
      run: fakeSystemctl({ status: "registered" }).run,
    });
    expect(st.events[0]).toMatchObject({
      running: "a",
      committed: "a",
      autoboot: { from: "autoboot.txt.new" },
    });
    await slotCommand(["commit", ...slotFlags(d)], captureOutput().out, {
      run: fakeSystemctl({ status: "registered" }).run,
    });
    expect(await readFile(join(d.config, "autoboot.txt"), "utf8")).toBe(renderAutoboot(2));
    await expect(stat(join(d.config, "autoboot.txt.new"))).rejects.toThrow();
    expect(ARCH).toMatch(/^(amd64|arm64)$/);
  });
});
