/**
 * `handset discover --dhcp-server <lab dhcp> --ntp <lab ntp> --json` through discoverCommand,
 * with real UDP sockets on loopback against the lab responders.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { discoverCommand, sntpOverUdp } from "../../firmware/commands/discover.ts";
import { createOutput } from "../../firmware/commands/output.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { type DhcpResponder, startDhcpResponder } from "../lab/dhcp-responder.ts";
import { type NtpResponder, startNtpResponder } from "../lab/ntp-responder.ts";

const CERT_PROV = "https://pool.lab.test:443/CertProv/CertProvisioningService.svc";
let dhcp: DhcpResponder;
let ntp: NtpResponder;
let kod: NtpResponder;

beforeAll(async () => {
  ntp = await startNtpResponder({ offsetMs: 12_345, stratum: 3 });
  kod = await startNtpResponder({ kissCode: "RATE" });
  dhcp = await startDhcpResponder({
    certProvUrl: CERT_PROV,
    registrarFqdn: "sba.lab.test",
    ntp: [ntp.address],
    timeOffsetS: -18000,
  });
});

afterAll(async () => {
  await Promise.all([dhcp?.stop(), ntp?.stop(), kod?.stop()]);
});

async function run(argv: string[]) {
  const lines: string[] = [];
  const errors: string[] = [];
  const out = createOutput(
    true,
    (l) => lines.push(l),
    (l) => errors.push(l),
  );
  let code: number;
  try {
    code = await discoverCommand(argv, out);
  } catch (err) {
    out.error(err);
    code = 1;
  }
  return {
    code,
    errors,
    events: lines.map((l) => JSON.parse(l) as Record<string, unknown> & { event: string }),
  };
}

describe("handset discover against the lab responders", () => {
  it("prints the provisioning URL, registrar, NTP servers, offset, clock-set and the plan", async () => {
    const { code, events, errors } = await run([
      "--dhcp-server",
      dhcp.address,
      "--ntp",
      ntp.address,
      "--json",
    ]);
    expect(errors).toEqual([]);
    expect(code).toBe(0);
    const byName = Object.fromEntries(events.map((e) => [e.event, e]));
    expect(byName["dhcp"]).toMatchObject({
      event: "dhcp",
      certProvUrl: CERT_PROV,
      registrars: ["sba.lab.test"],
      ntp: ["127.0.0.1"],
      timeOffsetS: -18000,
      server: dhcp.address,
      problems: [],
    });
    expect(byName["clock-set"]).toMatchObject({ server: ntp.address });
    expect(Math.abs((byName["clock-set"]!["offsetMs"] as number) - 12_345)).toBeLessThan(25);
    expect(byName["plan"]).toMatchObject({
      certProvUrl: CERT_PROV,
      registrars: [{ host: "sba.lab.test", port: 5061, source: "dhcp", transport: "tls" }],
      timeOffsetS: -18000,
    });
    expect(events.map((e) => e.event)).toEqual(["dhcp", "clock-set", "plan"]);
    expect(dhcp.answered()).toBeGreaterThan(0);
  });

  it("SNTP against a lab server with a configured offset recovers it within a few ms", async () => {
    const clock = new SystemClock();
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      const [host, port] = ntp.address.split(":");
      const r = await sntpOverUdp(
        { host: host!, port: Number(port) },
        { clock, random: new SeededRandom(i) },
      );
      expect(r.stratum).toBe(3);
      samples.push(r.offsetMs);
    }
    samples.sort((a, b) => a - b);
    expect(Math.abs(samples[2]! - 12_345)).toBeLessThan(5);
  });

  it("reports a Kiss-o'-Death and falls through to the next server", async () => {
    const { code, events } = await run(["--dhcp-server", dhcp.address, "--ntp", kod.address, "--json"]);
    expect(code).toBe(0);
    expect(events.find((e) => e.event === "ntp")).toMatchObject({ error: "sntp-kod", server: kod.address });
    expect(events.some((e) => e.event === "clock-not-set")).toBe(true);
  });

  it("a silent DHCP server: dhcp-timeout, and a one-line error when nothing was found", async () => {
    const silent = await startNtpResponder({}); // a UDP port that never answers DHCP
    try {
      const { code, events } = await run([
        "--dhcp-server",
        silent.address,
        "--ntp",
        ntp.address,
        "--timeout",
        "0.3",
        "--json",
      ]);
      expect(code).toBe(1);
      expect(events[0]).toMatchObject({ event: "dhcp", error: "dhcp-timeout" });
      expect(events.at(-1)).toMatchObject({ event: "error", code: "nothing-found" });
    } finally {
      await silent.stop();
    }
  });

  it("usage errors are typed", async () => {
    expect((await run(["--json"])).events.at(-1)).toMatchObject({ event: "error", code: "usage" });
    expect((await run(["--dhcp-server", "nope", "--json"])).events.at(-1)).toMatchObject({ code: "usage" });
  });
});
