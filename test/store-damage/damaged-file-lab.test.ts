/**
 * Issue 14, "the store survives one bad file", end to end: a phone signs in once against the
 * lab (extension + PIN, real HTTPS, real certificate); then each identity file in turn is
 * truncated, has one byte of its private key flipped, or is deleted, and the phone's real
 * services (discovery, store, registrar policy over TLS-DSK) boot from that store. Every time
 * the phone must register without a new sign-in (no web ticket, no PIN) and leave the store
 * whole again (both files verified, both holding the certificate and key).
 *
 * On the old store the sign-in's last step left identity.prev.json as the half-finished
 * "csr-sent" record without the certificate, so any damage to identity.json meant a new PIN.
 * When every file is damaged the services fail with "store-damaged", never a sign-in prompt.
 */
import { cp, mkdtemp, readdir, readFile, rm, truncate, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { IdentityStore } from "../../firmware/store/identity-store.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { isUp, makeRig, register, settle, signedInStore, waitStatus } from "../scenarios/harness.ts";

const FILES = ["identity.json", "identity.prev.json"] as const;

type Damage = (path: string) => Promise<void>;
const DAMAGES: Array<[string, Damage]> = [
  [
    "truncated",
    async (path) => {
      const size = (await readFile(path)).length;
      await truncate(path, Math.floor(size / 2));
    },
  ],
  [
    "one byte of the private key flipped",
    async (path) => {
      const bytes = await readFile(path);
      const at = bytes.indexOf("PRIVATE KEY-----") + 200;
      expect(at).toBeGreaterThan(200);
      bytes[at] = bytes[at]! ^ 0x01;
      await writeFile(path, bytes);
    },
  ],
  ["deleted", (path) => rm(path)],
];

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

async function copyOfSignedIn(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "handset-damage-"));
  made.push(dir);
  await cp(signedIn, dir, { recursive: true });
  return dir;
}

describe("one damaged identity file: the phone still registers, without a new sign-in", () => {
  it("the signed-in store keeps the certificate and key in both files", async () => {
    const states = await new IdentityStore(nodeFileSystem, signedIn).inspect();
    for (const s of states) {
      expect(s.status, s.file).toBe("ok");
      if (s.status === "ok") expect(s.record.credential?.certPem, s.file).toContain("BEGIN CERTIFICATE");
    }
  });

  for (const file of FILES)
    for (const [how, damage] of DAMAGES)
      it(`${file} ${how}`, async () => {
        const dir = await copyOfSignedIn();
        await damage(join(dir, file));
        const tickets = lab.web.stats.ticketsIssued;
        const certs = lab.web.stats.certsIssued;

        const rig = await makeRig(lab, dir);
        try {
          expect(await rig.services.identity()).toMatchObject({
            hasCredential: true,
            uri: "sip:4711@lab.test",
          });
          register(rig);
          const up = await waitStatus(rig, isUp);
          expect(up).toMatchObject({ state: "registered", registrar: lab.ready.sba });
          expect(rig.statuses.filter((s) => s.state === "sign-in-required")).toEqual([]);
        } finally {
          await rig.handle?.stop();
          await settle(lab, rig);
        }
        // No PIN sign-in, no new certificate: the stored one carried the phone.
        expect(lab.web.stats.ticketsIssued).toBe(tickets);
        expect(lab.web.stats.certsIssued).toBe(certs);

        // And the store is whole again: one more bad file would be survived too.
        const states = await new IdentityStore(nodeFileSystem, dir).inspect();
        for (const s of states) {
          expect(s.status, s.file).toBe("ok");
          if (s.status === "ok") expect(s.record.credential, s.file).toBeDefined();
        }
        if (how !== "deleted")
          expect((await readdir(dir)).filter((n) => n.startsWith("identity.corrupt-"))).toHaveLength(1);
      }, 30_000);
});

describe("every identity file damaged", () => {
  it('the phone services say "store-damaged" (never "no identity yet") and start afresh for a new sign-in', async () => {
    const dir = await copyOfSignedIn();
    await DAMAGES[0]![1](join(dir, FILES[0]));
    await DAMAGES[1]![1](join(dir, FILES[1]));
    const rig = await makeRig(lab, dir);
    expect(await rig.services.identity()).toMatchObject({
      hasCredential: false,
      damaged: { code: "store-damaged", message: "The stored identity is damaged" },
    });
    // A new sign-in works on the fresh store and clears the report.
    await rig.services.signIn({ extension: "4711", pin: "1234" });
    expect(await rig.services.identity()).toMatchObject({ hasCredential: true });
    expect((await rig.services.identity()).damaged).toBeUndefined();
  }, 30_000);
});
