/**
 * Sign in once, end to end over real HTTPS and SIP/TLS against the lab pool: extension + PIN →
 * web ticket → key + CSR → certificate in the store → TLS-DSK registration from the store.
 */
import { createPrivateKey, X509Certificate } from "node:crypto";
import { mkdtemp, readdir, readFile, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { openStore, signInDeps } from "../../firmware/commands/identity.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { provisionCommand } from "../../firmware/commands/provision.ts";
import { registerCommand } from "../../firmware/commands/register.ts";
import { createLogger, type LogRecord } from "../../firmware/core/logger.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { signIn } from "../../firmware/provisioning/resumable-sign-in.ts";
import { type Lab, startLab } from "../lab/lab.ts";

let lab: Lab;
beforeAll(async () => {
  lab = await startLab({ site: "hq", web: { maxLogonAttempts: 3 } });
});
afterAll(async () => {
  await lab?.stop();
});

async function run(command: typeof provisionCommand, args: string[]) {
  const lines: string[] = [];
  const errors: string[] = [];
  const out = createOutput(
    true,
    (l) => lines.push(l),
    (l) => errors.push(l),
  );
  let code: number;
  try {
    code = await command(args, out);
  } catch (err) {
    out.error(err);
    code = 1;
  }
  return { code, events: lines.map((l) => JSON.parse(l) as Record<string, unknown>), text: lines.join("\n") };
}

const newStore = () => mkdtemp(join(tmpdir(), "handset-store-"));

async function filesOf(dir: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  for (const f of await readdir(dir)) out[f] = await readFile(join(dir, f), "utf8");
  return out;
}

describe("handset provision + handset register --store", () => {
  it("provisions a certificate matching the stored key, kept 0600, then registers from the store", async () => {
    const dir = await newStore();
    const p = await run(provisionCommand, [
      "--web",
      lab.ready.certProv,
      "--extension",
      "4711",
      "--pin",
      "1234",
      "--store",
      dir,
      "--ca",
      lab.ready.ca,
    ]);
    expect(p.code).toBe(0);
    expect(p.events.at(-1)).toMatchObject({ event: "state", state: "provisioned", uri: "sip:4711@lab.test" });
    expect(p.text).not.toContain("1234");

    const record = await openStore(dir, new CryptoRandom()).load();
    const cred = record!.credential!;
    const cert = new X509Certificate(cred.certPem);
    expect(cert.checkPrivateKey(createPrivateKey(cred.keyPem))).toBe(true);
    expect(cert.checkIssued(new X509Certificate(lab.ca.cert))).toBe(true);
    for (const f of await readdir(dir)) expect((await stat(join(dir, f))).mode & 0o777).toBe(0o600);

    const r = await run(registerCommand, [
      "--store",
      dir,
      "--registrar",
      lab.ready.pool,
      "--ca",
      lab.ready.ca,
      "--refreshes",
      "1",
    ]);
    expect(r.code).toBe(0);
    expect(r.events).toContainEqual(expect.objectContaining({ event: "state", state: "registered" }));
    expect(r.events.at(-1)).toMatchObject({ event: "done", refreshesVerified: 1 });
  });

  it("a wrong PIN exits with invalid-pin and leaves the store exactly as it was", async () => {
    const dir = await newStore();
    const ok = await run(provisionCommand, [
      "--web",
      lab.ready.certProv,
      "--extension",
      "4711",
      "--pin",
      "1234",
      "--store",
      dir,
      "--ca",
      lab.ready.ca,
    ]);
    expect(ok.code).toBe(0);
    const before = await filesOf(dir);
    const bad = await run(provisionCommand, [
      "--web",
      lab.ready.certProv,
      "--extension",
      "4711",
      "--pin",
      "9999",
      "--store",
      dir,
      "--ca",
      lab.ready.ca,
    ]);
    expect(bad.code).toBe(1);
    expect(bad.events.at(-1)).toMatchObject({ event: "error", code: "invalid-pin" });
    expect(bad.text).not.toContain("9999");
    expect(await filesOf(dir)).toEqual(before);
  });

  it("a registrar's 401 sts-uri leads an empty store through sign-in to registration", async () => {
    const dir = await newStore();
    const r = await run(registerCommand, [
      "--store",
      dir,
      "--uri",
      "sip:4711@lab.test",
      "--registrar",
      lab.ready.pool,
      "--ca",
      lab.ready.ca,
      "--extension",
      "4711",
      "--pin",
      "1234",
    ]);
    expect(r.code).toBe(0);
    const states = r.events.filter((e) => e["event"] === "state").map((e) => e["state"]);
    expect(states).toEqual([
      "registering",
      "sign-in-required",
      "signing-in",
      "provisioned",
      "registering",
      "registered",
    ]);
    expect(r.text).not.toContain("1234");
  });

  it("no PIN, ticket or key material reaches a log line or an event during sign-in", async () => {
    const dir = await newStore();
    const records: LogRecord[] = [];
    const random = new CryptoRandom();
    const store = openStore(dir, random);
    const steps: unknown[] = [];
    const result = await signIn(
      signInDeps({
        store,
        ca: [lab.ca.cert],
        random,
        clock: new SystemClock(),
        logger: createLogger((rec) => records.push(rec)),
      }),
      {
        certProvUrl: lab.ready.certProv,
        extension: "4711",
        pin: "1234",
        trustedRoots: [lab.ca.cert],
        onStep: (step, ms) => steps.push({ step, ms }),
      },
    );
    const captured = JSON.stringify({ records, steps });
    expect(records.length).toBeGreaterThan(0);
    expect(captured).not.toContain("1234");
    expect(captured).not.toMatch(/PRIVATE KEY|BEGIN CERTIFICATE|Assertion|BinarySecret/);
    const key = result.record.credential!.keyPem.split("\n")[1]!;
    expect(captured).not.toContain(key.slice(0, 20));
  });
});
