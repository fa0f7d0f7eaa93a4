/**
 * Issue 9 §2 and §3 (SIP parts), at the mechanism: a Registration on a fake clock over real
 * loopback TLS to the lab registrar, with the registrar's fault switches.
 */
import { connect as tlsConnect } from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { clientVersionProfile } from "../../firmware/platform/tls-dsk-node-engine.ts";
import { LAB_DIAGNOSTIC } from "../../firmware/sip/registration/diagnostics.ts";
import { RegistrarRefusal, type RegistrationEvent } from "../../firmware/sip/registration/registration.ts";
import { type IssuedCert, LabCa } from "../lab/ca.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import { LabRegistrar } from "../lab/registrar.ts";
import { advance, next, recordingLogger, rig, sleep, waitFor } from "./helpers.ts";

let lab: Lab;
let sameNameOtherKey: IssuedCert;
let otherName: IssuedCert;
let foreign: IssuedCert;
const stops: Array<() => unknown> = [];

beforeAll(async () => {
  lab = await startLab({ site: "hq" });
  [sameNameOtherKey, otherName] = await Promise.all([
    lab.ca.issueServer(lab.ready.names.pool, []),
    lab.ca.issueServer("other.lab.test", []),
  ]);
  foreign = await (await LabCa.create("Foreign Root")).issueServer(lab.ready.names.pool, []);
});
afterAll(async () => {
  await lab?.stop();
});
afterEach(async () => {
  lab.pool.faults = {};
  lab.pool.keepAliveS = 300;
  for (const s of stops.splice(0)) await s();
});

async function registered(over: Parameters<typeof rig>[3] = {}, address = lab.pool.address) {
  const clock = new ManualClock(Date.now());
  const r = await rig(lab, clock, address, over);
  stops.push(() => {
    r.reg.stop();
    r.core.close();
  });
  const first = next(r.reg, "registered");
  r.reg.start();
  const e = await first;
  return { ...r, clock, first: e };
}

function failure(e: RegistrationEvent): Extract<RegistrationEvent, { type: "failed" }> {
  if (e.type !== "failed") throw new Error(`expected a failure, got ${e.type}`);
  return e;
}

describe("unsigned answers after the SA (issue 9 §2)", () => {
  it("an unsigned 301 after the SA is not followed: unsigned-rejection, flow dropped", async () => {
    const { reg, wire, events } = await registered();
    lab.pool.faults.unsignedAfterSa = {
      status: 301,
      reason: "Redirect request to Home Server",
      headers: [["Contact", "<sip:evil.example:5061;transport=TLS>;q=0.7"]],
    };
    const failed = next(reg, "redirected");
    reg.refresh();
    const e = failure(await failed);
    expect(e.error.code).toBe("unsigned-rejection");
    expect(e.verified).toBe(false);
    expect(events.some((x) => x.type === "redirected")).toBe(false);
    await sleep(20);
    expect(wire.closed).toBe(true);
  });

  it("a signed 301 is still followed", async () => {
    const clock = new ManualClock(Date.now());
    lab.pool.faults.signedRefusal = {
      status: 301,
      reason: "Redirect request to Home Server",
      headers: [["Contact", `<sip:${lab.sba.address};transport=TLS>;q=0.7`]],
    };
    const { reg, core } = await rig(lab, clock, lab.pool.address);
    stops.push(() => {
      reg.stop();
      core.close();
    });
    const got = next(reg, "redirected");
    reg.start();
    const e = await got;
    expect(e).toMatchObject({
      type: "redirected",
      targets: [{ port: Number(lab.sba.address.split(":")[1]) }],
    });
  });

  it("an unsigned 403 naming a certificate ErrorId is neither a certificate refusal nor trusted", async () => {
    const { reg } = await registered();
    lab.pool.faults.unsignedAfterSa = {
      status: 403,
      reason: "Forbidden",
      headers: [
        ["ms-diagnostics", `${LAB_DIAGNOSTIC.certificateRevoked};reason="Certificate has been revoked"`],
      ],
    };
    const failed = next(reg, "registered");
    reg.refresh();
    const e = failure(await failed);
    expect(e.error).toBeInstanceOf(RegistrarRefusal);
    expect(e.error.code).toBe("unsigned-rejection");
    expect((e.error as RegistrarRefusal).meaning).toBe("unknown");
  });

  it("an unsigned 503 with a huge Retry-After after the SA carries no Retry-After", async () => {
    const { reg } = await registered();
    lab.pool.faults.unsignedAfterSa = {
      status: 503,
      reason: "Service Unavailable",
      headers: [["Retry-After", "999999999"]],
    };
    const failed = next(reg, "registered");
    reg.refresh();
    const e = failure(await failed);
    expect(e.error.code).toBe("unsigned-rejection");
    expect(e.retryAfterS).toBeUndefined();
  });

  it("a signed 403 is typed by its ErrorId, not by its text", async () => {
    const clock = new ManualClock(Date.now());
    // [MS-OCER] 1010 is next-hop certificate trust (a server problem), whatever the text says.
    lab.pool.faults.signedRefusal = {
      status: 403,
      reason: "Forbidden",
      headers: [
        ["ms-diagnostics", '1010;reason="Certificate trust with next-hop server could not be established"'],
      ],
    };
    const { reg, core } = await rig(lab, clock, lab.pool.address);
    stops.push(() => {
      reg.stop();
      core.close();
    });
    const got = next(reg, "registered");
    reg.start();
    const e = failure(await got);
    expect(e.verified).toBe(true);
    expect(e.error).toMatchObject({ code: "registration-forbidden", meaning: "unknown", verified: true });
  });

  it("unsigned NOTIFY and OPTIONS from the server after the SA are dropped: no answer, no effect", async () => {
    const { reg, events } = await registered();
    const aor = lab.ready.testClient.uri;
    const notify = await lab.pool.sendToUser(
      aor,
      "NOTIFY",
      [
        ["Event", "registration-notify"],
        ["Content-Type", "text/registration-event"],
      ],
      "deregistered;event=rejected",
      { unsigned: true, timeoutMs: 300 },
    );
    const options = await lab.pool.sendToUser(aor, "OPTIONS", [], "", { unsigned: true, timeoutMs: 300 });
    expect(notify).toBeUndefined();
    expect(options).toBeUndefined();
    expect(reg.state).toBe("registered");
    expect(events.filter((e) => e.type === "failed")).toEqual([]);
    // A signed OPTIONS on the same flow is still answered, signed.
    const signed = await lab.pool.sendToUser(aor, "OPTIONS", [], "", { timeoutMs: 2_000 });
    expect(signed).toEqual({ status: 200, signatureOk: true });
  });
});

describe("the tunnel is bound to the flow (issue 9 §2)", () => {
  it("a tampered server Finished fails the handshake; nothing is registered", async () => {
    for (const innerTls of ["1.2", "1.0"] as const) {
      lab.pool.faults.tamperServerFinished = true;
      const clock = new ManualClock(Date.now());
      const { reg, core, events } = await rig(lab, clock, lab.pool.address, { innerTls });
      stops.push(() => {
        reg.stop();
        core.close();
      });
      const got = next(reg, "registered");
      reg.start();
      const e = failure(await got);
      expect(e.error.code).toMatch(/^tls-/);
      expect(events.some((x) => x.type === "authenticated")).toBe(false);
    }
  });

  it("an inner certificate other than the outer one (same CA, same name, other key) is refused before client flight 2", async () => {
    lab.pool.faults.innerCert = { cert: sameNameOtherKey.cert, key: sameNameOtherKey.key };
    const before = { ...lab.pool.stats };
    const clock = new ManualClock(Date.now());
    const { reg, core, wire } = await rig(lab, clock, lab.pool.address);
    stops.push(() => {
      reg.stop();
      core.close();
    });
    const got = next(reg, "registered");
    reg.start();
    const e = failure(await got);
    expect(e.error.code).toBe("tunnel-cert-mismatch");
    expect(lab.pool.stats.handshakes).toBe(before.handshakes);
    // unsigned REGISTER + ClientHello: our certificate and signature never went out.
    expect(wire.requests.filter((m) => m === "REGISTER")).toHaveLength(2);
    await sleep(20);
    expect(wire.closed).toBe(true);
  });

  it("an inner certificate from another CA is refused too", async () => {
    lab.pool.faults.innerCert = { cert: foreign.cert, key: foreign.key };
    const clock = new ManualClock(Date.now());
    const { reg, core } = await rig(lab, clock, lab.pool.address);
    stops.push(() => {
      reg.stop();
      core.close();
    });
    const got = next(reg, "registered");
    reg.start();
    expect(failure(await got).error.code).toMatch(/^(tunnel-cert-mismatch|tls-server-cert-untrusted)$/);
  });

  it("a targetname the outer certificate does not carry is refused, even when the tunnel certificate matches it", async () => {
    lab.pool.faults.targetname = "other.lab.test";
    lab.pool.faults.innerCert = { cert: otherName.cert, key: otherName.key };
    const clock = new ManualClock(Date.now());
    const { reg, core, wire } = await rig(lab, clock, lab.pool.address);
    stops.push(() => {
      reg.stop();
      core.close();
    });
    const got = next(reg, "registered");
    reg.start();
    const e = failure(await got);
    expect(e.error.code).toBe("tunnel-targetname-mismatch");
    expect(wire.requests).toEqual(["REGISTER"]); // no ClientHello for a name we cannot bind
  });

  it("@SECLEVEL=0 only in the TLS 1.0 profile; auto is the 1.2 profile", () => {
    expect(clientVersionProfile("1.0").ciphers).toContain("@SECLEVEL=0");
    for (const p of ["1.2", "auto"] as const) {
      expect(clientVersionProfile(p).ciphers).not.toContain("@SECLEVEL=0");
      expect(clientVersionProfile(p).minVersion).toBe("TLSv1.2");
    }
  });

  it("auto against a registrar that speaks only TLS 1.0 inside: falls back once, registers on TLS 1.0", async () => {
    const old = new LabRegistrar({ ...lab.pool.o, name: "old-pool", innerMaxVersion: "TLSv1" });
    await old.start(0);
    stops.push(() => old.stop());
    const { first, events } = await registered({ innerTls: "auto" }, old.address);
    expect(first.type).toBe("registered");
    const auth = events.filter((e) => e.type === "authenticated");
    expect(auth).toEqual([expect.objectContaining({ tlsVersion: "TLSv1" })]);
    expect(events.filter((e) => e.type === "challenged")).toHaveLength(2);
  });
});

describe("hostile values give at most one request in the next minute (issue 9 §3)", () => {
  // Values the SIP grammar accepts (delta-seconds ≤ 2³²−1) but no sane registrar sends.
  for (const value of ["0", "1", "4294967295"]) {
    it(`Expires: ${value} is clamped into [60 s, 24 h] and logged once`, async () => {
      lab.pool.faults.expiresHeader = value;
      const logger = recordingLogger();
      // Liveness probes (OPTIONS after 25 s of silence) do not depend on server values: off here.
      const { first, wire, clock } = await registered({ logger, livenessTimeoutMs: 0 });
      expect(first).toMatchObject({ type: "registered" });
      const expires = (first as { expires: number }).expires;
      expect(expires).toBeGreaterThanOrEqual(60);
      expect(expires).toBeLessThanOrEqual(86_400);
      const before = wire.requests.length;
      await advance(clock, 59_999);
      expect(wire.requests.length - before).toBeLessThanOrEqual(1);
      // Two more minutes: refreshes keep coming, the out-of-range value is logged once.
      await advance(clock, 120_000);
      expect(logger.lines.filter((l) => l.message.includes("out of range"))).toHaveLength(1);
    });
  }

  // Values outside the grammar (negative, not a number, over 2³²−1): the parser refuses the
  // message, so the answer is dropped and the REGISTER ends at Timer F: a failed flow, no spin.
  for (const [name, fault] of [
    ["Expires: -5", { expiresHeader: "-5" }],
    ["Expires: 99999999999999", { expiresHeader: "99999999999999" }],
    ["Retry-After: -5", { signedRefusal: { status: 503, headers: [["Retry-After", "-5"]] } }],
    [
      "Retry-After: 99999999999999",
      { signedRefusal: { status: 503, headers: [["Retry-After", "99999999999999"]] } },
    ],
  ] as const) {
    it(`${name}: the malformed answer is dropped; registrar-timeout, one request in the minute`, async () => {
      Object.assign(lab.pool.faults, fault);
      const clock = new ManualClock(Date.now());
      const { reg, core, wire } = await rig(lab, clock, lab.pool.address, { livenessTimeoutMs: 0 });
      stops.push(() => {
        reg.stop();
        core.close();
      });
      const got = next(reg, "registered");
      reg.start();
      // The handshake runs (three REGISTERs), then the completing signed REGISTER gets no usable answer.
      await waitFor(() => wire.requests.length >= 4);
      const before = wire.requests.length;
      await advance(clock, 59_999);
      const e = failure(await got);
      expect(e.error.code).toBe("registrar-timeout");
      expect(wire.requests.length - before).toBe(0);
    });
  }

  for (const value of [0, -5, 1, 1e12]) {
    it(`ms-keep-alive timeout=${value}`, async () => {
      lab.pool.keepAliveS = value;
      const { first, wire, clock } = await registered({ livenessTimeoutMs: 0 });
      const ka = (first as { keepAliveS?: number }).keepAliveS!;
      expect(ka).toBeGreaterThanOrEqual(10);
      expect(ka).toBeLessThanOrEqual(600);
      const [requests, pings] = [wire.requests.length, wire.pings];
      await advance(clock, 59_999);
      expect(wire.requests.length - requests).toBeLessThanOrEqual(1);
      expect(wire.pings - pings).toBeLessThanOrEqual(6); // ≥ 10 s apart
    });
  }

  for (const value of ["0", "1", "4294967295"]) {
    it(`Retry-After: ${value} on a signed 503 is clamped into [30 s, 1 h]`, async () => {
      lab.pool.faults.signedRefusal = {
        status: 503,
        reason: "Service Unavailable",
        headers: [["Retry-After", value]],
      };
      const clock = new ManualClock(Date.now());
      const { reg, core } = await rig(lab, clock, lab.pool.address);
      stops.push(() => {
        reg.stop();
        core.close();
      });
      const got = next(reg, "registered");
      reg.start();
      const e = failure(await got);
      expect(e.retryAfterS).toBeGreaterThanOrEqual(30);
      expect(e.retryAfterS).toBeLessThanOrEqual(3_600);
    });
  }
});

describe("fatal framing errors close the flow (issue 9 §3)", () => {
  it("a bad Content-Length from the registrar closes the flow at once: failed sip-content-length", async () => {
    const { reg, wire } = await registered();
    const failed = next(reg, "unregistered");
    const n = lab.pool.sendRawToUser(
      lab.ready.testClient.uri,
      "NOTIFY sip:x SIP/2.0\r\nVia: SIP/2.0/TLS h;branch=z9hG4bKx\r\nContent-Length: 12abc\r\n\r\n",
    );
    expect(n).toBe(1);
    const e = failure(await failed);
    expect(e.error.code).toBe("sip-content-length");
    expect(wire.closed).toBe(true);
  });

  it("the lab registrar closes a connection whose bytes cannot be framed", async () => {
    const before = lab.pool.stats.framingErrors;
    const [host, port] = lab.pool.address.split(":");
    const socket = tlsConnect({
      host,
      port: Number(port),
      ca: [lab.ca.cert],
      servername: lab.ready.names.pool,
    });
    await new Promise<void>((resolve, reject) => {
      socket.once("secureConnect", () => resolve());
      socket.once("error", reject);
    });
    const closed = new Promise<void>((resolve) => socket.once("close", () => resolve()));
    socket.on("error", () => {});
    socket.write("REGISTER sip:lab.test SIP/2.0\r\nContent-Length: -1\r\n\r\n");
    await closed;
    expect(lab.pool.stats.framingErrors).toBe(before + 1);
  });
});
