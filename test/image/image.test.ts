/**
 * The flashable image, end to end (issue 10): `npm run image` builds both arches (amd64 first; the
 * arm64 root, 15 minutes of emulated package scripts, builds in the background meanwhile); the system slot
 * is bit-identical across builds; the amd64 image boots under qemu (TCG) with the emulated Pi
 * firmware of emulated-board.ts, systemd starts the phone, it registers against the lab on the
 * host, and a SIGKILL brings it back by itself; updates switch slots and are kept, are refused
 * before writing when unsigned or tampered, roll back when the health check fails, and survive a
 * power cut mid-write; the arm64 image boots under qemu-system-aarch64 -M virt to registered.
 *
 * Run by `npm run test:image` (vitest.image.config.ts; .ci/run runs it after `npm test`). Needs
 * root and the Debian packages missingPeers() names: without them it says which and skips, and
 * under CI=true it fails.
 *
 * HANDSET_IMAGE_WORK=DIR keeps the build and the boots' console logs in DIR (a later run with
 * HANDSET_IMAGE_REUSE=1 boots the images already built there instead of building again).
 */
import { execFile } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { mosquittoRr, mosquittoSub, siteAcl, startMosquitto } from "../support/mosquitto.ts";
import { type Boot, chooseBoot, type GuestEvent, makeStick, powerOn } from "./emulated-board.ts";
import {
  type Built,
  buildArchImage,
  buildImages,
  CI,
  copyDisk,
  imagePath,
  type LabRig,
  missingPeers,
  prepareData,
  REPO,
  runLogged,
  serveFiles,
  sha256,
  startLabRig,
} from "./image-rig.ts";

const run = promisify(execFile);
const MIN = 60_000;

const reason = await missingPeers();
if (reason && CI) throw new Error(reason);
if (reason) process.stderr.write(`image tests skipped: ${reason}\n`);

const keepWork = process.env["HANDSET_IMAGE_WORK"];
const reuse = process.env["HANDSET_IMAGE_REUSE"] === "1";

/** The emulated phone's name on the fleet broker. */
const DEVICE = "phone-img";

const isState = (state: string) => (e: GuestEvent) => e.event === "state" && e["state"] === state;

describe.skipIf(reason !== undefined).sequential("the flashable image", () => {
  let work: string;
  let built: Built;
  let rig: LabRig;
  /**
   * The arm64 image: built in the background while the amd64 tests boot on the other core (its
   * emulated package scripts take most of the build's time); the arm64 test waits for it.
   */
  let arm64: Promise<{ ok: true } | { ok: false; error: unknown }>;
  const figures: Record<string, unknown> = {};

  beforeAll(async () => {
    work = keepWork ?? (await mkdtemp(join(tmpdir(), "handset-image-")));
    await mkdir(work, { recursive: true });
    if (reuse && existsSync(join(work, "built.json"))) {
      built = JSON.parse(await readFile(join(work, "built.json"), "utf8")) as Built;
      arm64 = Promise.resolve({ ok: true });
    } else {
      built = await buildImages(work, "amd64");
      figures["amd64BuildSeconds"] = built.seconds;
      arm64 = buildArchImage(work, built, "arm64").then(
        async (seconds) => {
          figures["arm64BuildSeconds"] = seconds;
          await writeFile(join(work, "built.json"), JSON.stringify(built));
          return { ok: true as const };
        },
        (error: unknown) => ({ ok: false as const, error }),
      );
    }
    rig = await startLabRig(work);
  }, 40 * MIN);

  afterAll(async () => {
    await arm64; // never leave the build running behind the tests
    await rig?.stop();
    if (work) await writeFile(join(work, "figures.json"), JSON.stringify(figures, null, 2));
    if (!keepWork && work) await rm(work, { recursive: true, force: true });
  }, 40 * MIN);

  /** The arm64 build's outcome: its error fails the test that needs the image. */
  async function arm64Built(): Promise<void> {
    const r = await arm64;
    if (!r.ok) throw r.error;
  }

  async function checkOutputs(arch: "amd64" | "arm64") {
    const dir = join(built.dir, arch);
    const manifest = JSON.parse(await readFile(join(dir, "MANIFEST.json"), "utf8")) as {
      version: string;
      arch: string;
      outputs: Record<string, { sha256: string; size: number }>;
      files: Array<{ path: string; sha256?: string }>;
    };
    expect(manifest.version).toBe(built.version);
    expect(manifest.arch).toBe(arch);
    expect(manifest.outputs["system.erofs"]!.sha256).toBe(await sha256(join(dir, "system.erofs")));
    expect(manifest.outputs["boot.vfat"]!.sha256).toBe(await sha256(join(dir, "boot.vfat")));
    expect(existsSync(imagePath(built, arch))).toBe(true);
    const paths = new Set(manifest.files.map((f) => f.path));
    expect(paths.has(`/opt/handset/${built.version}/handset.mjs`)).toBe(true);
    expect(paths.has("/etc/systemd/system/handset.service")).toBe(true);
    expect(manifest.files.filter((f) => f.sha256 === undefined).length).toBeLessThan(manifest.files.length);
    const sbom = JSON.parse(await readFile(join(dir, "SBOM.json"), "utf8")) as {
      bomFormat: string;
      components: Array<{ name: string; version: string; purl?: string }>;
    };
    expect(sbom.bomFormat).toBe("CycloneDX");
    const names = new Map(sbom.components.map((c) => [c.name, c.version]));
    expect(names.get("nodejs")).toMatch(/^20\./);
    expect(names.has("systemd")).toBe(true);
    expect(names.has("node-forge")).toBe(true);
    expect(names.has("vitest")).toBe(false);
    figures[`${arch}ImageBytes`] = manifest.outputs[`handset-${built.version}-${arch}.img`]?.size;
    figures[`${arch}SystemBytes`] = manifest.outputs["system.erofs"]!.size;
  }

  it("npm run image (amd64): the disk, slot payloads, a manifest with every file's sha256, an SBOM", async () => {
    await checkOutputs("amd64");
  });

  it(
    "reproducible: a second build of the amd64 image gives the same system slot and boot partition",
    async () => {
      const again = join(work, "image-again");
      await runLogged(
        "bash",
        [
          "scripts/image/build.sh",
          "--arch",
          "amd64",
          "--out",
          again,
          "--update-key",
          join(built.keys, "update-keys", "update-key.pub.pem"),
        ],
        join(work, "image-again.log"),
      );
      for (const f of ["system.erofs", "boot.vfat", `handset-${built.version}-amd64.img`])
        expect(await sha256(join(again, "amd64", f)), f).toBe(await sha256(join(built.dir, "amd64", f)));
      await rm(again, { recursive: true, force: true });
    },
    15 * MIN,
  );

  it(
    "amd64 under qemu: systemd starts the unit, the phone registers, a SIGKILL brings it back",
    async () => {
      const disk = await copyDisk(imagePath(built, "amd64"), join(work, "amd64-kill.img"));
      await prepareData(disk, rig, work);
      const boot = await powerOn({ arch: "amd64", disk, workDir: join(work, "amd64-kill") });
      try {
        expect(boot.partition).toBe(2);
        const t0 = Date.now();
        await boot.waitForEvent(isState("registered"), 5 * MIN);
        figures["amd64BootToRegisteredS"] = (Date.now() - t0) / 1000;
        // systemd hears the state from the firmware's STATUS= (sd_notify): what the health check reads.
        const show = await untilShell(
          boot,
          "systemctl show -p ActiveState -p SubState -p MainPID -p StatusText handset",
          /StatusText=registered/,
          MIN,
        );
        expect(show.out).toMatch(/ActiveState=active/);
        const pid = /MainPID=(\d+)/.exec(show.out)![1];
        // The identity is the one signed in on the host, 0600 under a 0700 directory.
        const perms = await boot.shell(
          "stat -c '%a %U %n' /var/lib/handset /var/lib/handset/*.pem 2>/dev/null || stat -c '%a %U %n' /var/lib/handset",
        );
        expect(perms.out).toMatch(/^700 handset \/var\/lib\/handset$/m);
        const seen = boot.events().length;
        await boot.shell("systemctl kill -s KILL handset.service");
        await boot.waitForEvent(isState("registered"), 3 * MIN, seen);
        const after = await boot.shell("systemctl show -p MainPID -p NRestarts -p ActiveState handset");
        expect(after.out).toMatch(/ActiveState=active/);
        expect(after.out).toMatch(/NRestarts=1/);
        expect(/MainPID=(\d+)/.exec(after.out)![1]).not.toBe(pid);
        // Never a login on a phone; the default config holds no credentials.
        const login = await boot.shell(
          "systemctl list-units --all --no-legend 'getty@*' 'serial-getty@*' | grep -c running || true",
        );
        expect(login.out.trim()).toBe("0");
        const security = await boot.shell("systemd-analyze security --no-pager handset.service | tail -1");
        figures["systemdAnalyzeSecurity"] = security.out.trim();
        const verify = await boot.shell(
          "systemd-analyze verify handset.service handset-health.service handset-firstboot.service handset-update.path handset-update.service 2>&1; echo verify=$?",
        );
        figures["systemdAnalyzeVerify"] = verify.out.trim();
        expect(verify.out).toMatch(/verify=0/);
      } finally {
        await boot.kill();
      }
    },
    12 * MIN,
  );

  /** An update bundle of the image's own payloads, signed (or not) for this run. */
  async function makeBundle(name: string, o: { version: string; sign: boolean; tamper?: boolean }) {
    const dir = join(built.dir, "amd64");
    const out = join(work, "stick", name);
    await mkdir(join(work, "stick"), { recursive: true });
    const key = o.sign ? join(built.keys, "update-key.pem") : join(work, "other-keys", "update-key.pem");
    if (!o.sign && !existsSync(key))
      await runLogged(
        "npx",
        ["tsx", "scripts/update-bundle.ts", "keygen", "--out", join(work, "other-keys")],
        join(work, "keygen2.log"),
      );
    await runLogged(
      "npx",
      [
        "tsx",
        "scripts/update-bundle.ts",
        "create",
        "--version",
        o.version,
        "--arch",
        "amd64",
        "--boot",
        join(dir, "boot.vfat"),
        "--system",
        join(dir, "system.erofs"),
        "--key",
        key,
        "--out",
        out,
      ],
      join(work, `bundle-${name}.log`),
    );
    if (o.tamper) {
      // One byte of the system payload, far from the header: only its sha256 can tell.
      const fh = await (await import("node:fs/promises")).open(out, "r+");
      const { size } = await fh.stat();
      const b = Buffer.alloc(1);
      await fh.read(b, 0, 1, size - 4096);
      b[0] = b[0]! ^ 0xff;
      await fh.write(b, 0, 1, size - 4096);
      await fh.close();
    }
  }

  const updateJson = (out: string) =>
    out
      .split(/\r?\n/)
      .filter((l) => l.startsWith("{"))
      .map((l) => JSON.parse(l) as GuestEvent);

  it(
    "updates: unsigned and tampered refused before writing; a good one trial-boots slot B and is kept; a failing one rolls back",
    async () => {
      await makeBundle("good.bundle", { version: "0.1.1", sign: true });
      await makeBundle("unsigned.bundle", { version: "0.1.1", sign: false });
      await makeBundle("tampered.bundle", { version: "0.1.1", sign: true, tamper: true });
      const stick = join(work, "stick.ext4");
      await makeStick(join(work, "stick"), stick);
      // The good update comes from the fleet: a broker on the host, the bundle on an HTTP server
      // on the host (the guest reaches both at 10.0.2.2), the command sent as an operator.
      const broker = await startMosquitto({
        users: [
          { username: DEVICE, password: "phone-pw" },
          { username: "operator", password: "operator-pw" },
        ],
        acl: siteAcl(),
      });
      const bundles = await serveFiles(join(work, "stick"));
      const disk = await copyDisk(imagePath(built, "amd64"), join(work, "amd64-update.img"));
      await prepareData(disk, rig, work, {
        mqtt: {
          port: broker.port,
          deviceId: DEVICE,
          username: DEVICE,
          password: "phone-pw",
          commands: ["ping", "update"],
        },
      });
      const operator = { username: "operator", password: "operator-pw" };
      const boots: Boot[] = [];
      const on = async () => {
        const b = await powerOn({
          arch: "amd64",
          disk,
          workDir: join(work, "amd64-update"),
          extraDisks: [stick],
        });
        boots.push(b);
        return b;
      };
      try {
        let boot = await on();
        expect([boot.partition, boot.tryboot]).toEqual([2, false]);
        await boot.waitForEvent(isState("registered"), 5 * MIN);
        await boot.shell("mkdir -p /run/stick && mount -o ro /dev/vdb /run/stick");
        const slotB = "head -c 16777216 /dev/disk/by-partlabel/system_b | sha256sum";
        const before = (await boot.shell(slotB)).out;
        for (const [name, code] of [
          ["unsigned.bundle", "update-bad-signature"],
          ["tampered.bundle", "update-tampered"],
        ] as const) {
          const r = await boot.shell(`handset update --json /run/stick/${name}`, 5 * MIN);
          expect(r.code, r.out).not.toBe(0);
          const err = updateJson(r.out).find((e) => e.event === "error");
          expect(err?.["code"], r.out).toBe(code);
        }
        // Tampering is found while hashing, before the first write: slot B's first 16 MiB unchanged.
        expect((await boot.shell(slotB)).out).toBe(before);
        expect((await boot.shell("ls /boot/firmware/tryboot 2>&1")).out).toMatch(/No such file/);

        // The good one, over MQTT: the phone (idle) leaves the request, the root installer
        // streams the bundle from the URL into B and trial-reboots.
        const events = mosquittoSub(broker, {
          ...operator,
          topics: [`handset/v1/${DEVICE}/event`],
          qos: 1,
          format: "%p",
        });
        await events.subscribed;
        const reply = await mosquittoRr(broker, {
          ...operator,
          topic: `handset/v1/${DEVICE}/cmd/update`,
          responseTopic: "handset/v1/_fleet/operator/reply",
          message: JSON.stringify({ url: `${bundles.guestUrl}/good.bundle`, version: "0.1.1" }),
          timeoutS: 60,
        });
        const answer = JSON.parse(reply.stdout.trim() || "{}") as Record<string, unknown>;
        expect(answer["status"], reply.stdout + reply.stderr).toBe("ok");
        expect(answer["result"]).toMatchObject({ requested: true, version: "0.1.1" });
        await boot.exited; // the root installer rebooted the guest for the trial
        figures["mqttUpdateBundleBytes"] = bundles.served();
        boot = await on();
        expect([boot.partition, boot.tryboot]).toEqual([3, true]);
        await boot.waitForEvent(isState("registered"), 5 * MIN);
        await boot.waitForConsole(/handset\[\d+\]: \{"event":"slot\.commit"/, 5 * MIN);
        const status = await boot.shell("handset slot status --json");
        expect(status.out).toMatch(/"running":"b"/);
        // The fleet hears how it went, and the retained state names the new slot.
        const result = await until(
          () => events.lines().find((l) => l.includes('"type":"update.result"')),
          3 * MIN,
        );
        expect(JSON.parse(result)).toMatchObject({ ok: true, version: "0.1.1", slot: "b" });
        await events.stop();
        const state = mosquittoSub(broker, {
          ...operator,
          topics: [`handset/v1/${DEVICE}/state`],
          format: "%p",
          count: 1,
          timeoutS: 30,
        });
        const retained = JSON.parse((await state.done).stdout.trim()) as { firmware?: { slot?: string } };
        expect(retained.firmware?.slot).toBe("b");
        // Kept: a plain reboot starts B again.
        await boot.shell("systemctl reboot").catch(() => undefined);
        await boot.exited;
        expect((await chooseBootPeek(disk)).partition).toBe(3);
        boot = await on();
        expect([boot.partition, boot.tryboot]).toEqual([3, false]);
        await boot.waitForEvent(isState("registered"), 5 * MIN);

        // A failing update: after it is written the registrar is gone (a bad release's symptom),
        // the health check (1 min window here) fails, and the plain reboot brings B back.
        await boot.shell("mkdir -p /run/stick && mount -o ro /dev/vdb /run/stick");
        await boot.shell(
          "cp -p /var/lib/handset/config/phone.json /var/lib/handset/config/phone.good && " +
            'sed -i \'s/"10.0.2.2:[0-9]*"/"10.0.2.2:1"/g\' /var/lib/handset/config/phone.json && ' +
            "echo HANDSET_HEALTH_WINDOW_MIN=1 >> /var/lib/handset/config/handset.env",
        );
        await boot.shell("handset update --json /run/stick/good.bundle", 10 * MIN).catch(() => undefined);
        await boot.exited;
        boot = await on();
        expect([boot.partition, boot.tryboot]).toEqual([2, true]);
        await boot.waitForConsole(/handset\[\d+\]: \{"event":"slot\.rollback"/, 5 * MIN);
        await boot.exited; // the health check's plain reboot
        boot = await on();
        expect([boot.partition, boot.tryboot]).toEqual([3, false]);
        // systemctl restart returns at READY=1 of the new process: a Node start under TCG, which
        // took more than the shell's default minute on a loaded machine.
        await boot.shell(
          "mv /var/lib/handset/config/phone.good /var/lib/handset/config/phone.json && systemctl restart handset",
          5 * MIN,
        );
        await boot.waitForEvent(isState("registered"), 5 * MIN, 0);
      } finally {
        for (const b of boots) await b.kill();
        await bundles.stop();
        await broker.dispose();
      }
    },
    45 * MIN,
  );

  it(
    "power cut during an update's write: the next power-on boots the running slot, registered",
    async () => {
      const disk = await copyDisk(imagePath(built, "amd64"), join(work, "amd64-cut.img"));
      await prepareData(disk, rig, work);
      const stick = join(work, "stick.ext4");
      let boot = await powerOn({
        arch: "amd64",
        disk,
        workDir: join(work, "amd64-cut"),
        extraDisks: [stick],
      });
      try {
        await boot.waitForEvent(isState("registered"), 5 * MIN);
        await boot.shell("mkdir -p /run/stick && mount -o ro /dev/vdb /run/stick");
        await boot.shell("(handset update --json /run/stick/good.bundle > /run/update.log 2>&1 &)");
        // Cut once the system payload is being written (its first progress line).
        for (let i = 0; i < 120; i++) {
          const log = (await boot.shell("cat /run/update.log")).out;
          if (/"event":"update.progress"[^}]*"payload":"system"/.test(log)) break;
          expect(log).not.toMatch(/"event":"error"/);
          await new Promise((r) => setTimeout(r, 1000));
        }
        await boot.kill(); // the plug
        boot = await powerOn({ arch: "amd64", disk, workDir: join(work, "amd64-cut"), extraDisks: [stick] });
        expect([boot.partition, boot.tryboot]).toEqual([2, false]);
        await boot.waitForEvent(isState("registered"), 5 * MIN);
      } finally {
        await boot.kill();
      }
    },
    15 * MIN,
  );

  it(
    "arm64: the image's outputs as amd64's, and under qemu-system-aarch64 -M virt (TCG) the unit runs and the phone registers",
    async () => {
      await arm64Built();
      await checkOutputs("arm64");
      const disk = await copyDisk(imagePath(built, "arm64"), join(work, "arm64.img"));
      await prepareData(disk, rig, work);
      const boot = await powerOn({ arch: "arm64", disk, workDir: join(work, "arm64"), memoryMiB: 1536 });
      try {
        const t0 = Date.now();
        await boot.waitForEvent(isState("registered"), 15 * MIN);
        figures["arm64BootToRegisteredS"] = (Date.now() - t0) / 1000;
        const show = await boot.shell("systemctl show -p ActiveState -p StatusText handset; uname -m");
        expect(show.out).toMatch(/ActiveState=active/);
        expect(show.out).toMatch(/aarch64/);
      } finally {
        await boot.kill();
      }
    },
    40 * MIN,
  );
});

/** Polls probe until it gives a value (or the time is up). */
async function until<T>(probe: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms`);
    await new Promise((res) => setTimeout(res, 1000));
  }
}

/** Runs a guest command until its output matches (or the time is up: the last output fails the test). */
async function untilShell(boot: Boot, command: string, re: RegExp, timeoutMs: number) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const r = await boot.shell(command);
    if (re.test(r.out) || Date.now() > deadline) {
      expect(r.out).toMatch(re);
      return r;
    }
    await new Promise((res) => setTimeout(res, 2000));
  }
}

/** What the emulated firmware would boot next, without consuming a tryboot flag. */
async function chooseBootPeek(disk: string) {
  const copy = `${disk}.peek`;
  await run("cp", ["--sparse=always", disk, copy]);
  try {
    return await chooseBoot(copy);
  } finally {
    await rm(copy, { force: true });
  }
}

void REPO;
