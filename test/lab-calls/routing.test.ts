/**
 * Issue 12: the lab registrars route calls between registered users, as a Lync front end (or an
 * SBA) proxies a call between two of its users: over real loopback TLS, each user on its own
 * TLS-DSK flow and security association, every non-1xx message signed by its sender and checked by
 * its receiver on each leg.
 *
 * The phones register with the firmware's Registration; the call requests themselves are built in
 * the test with the firmware's message helpers and signed with the SA the registration established,
 * because the firmware's user-agent core does not make calls yet (phones.ts).
 *
 * Branch site: A (4711) and B (4712) on the SBA, C (4713) on the central pool across the WAN link,
 * D (4714) a lab user who never registers.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { header, headerList, headers, type SipRequest } from "../../firmware/sip/message/message.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import {
  ackFor,
  addUser,
  answerTo,
  calleeDialog,
  callerDialog,
  cancelOf,
  inDialog,
  isRequest,
  isResponse,
  LabPhone,
  sdp,
  sleep,
  testClient,
  token,
} from "./phones.ts";

let lab: Lab;
let a: LabPhone;
let b: LabPhone;
let c: LabPhone;

beforeAll(async () => {
  lab = await startLab();
  const [userB, userC] = await Promise.all([addUser(lab, "4712"), addUser(lab, "4713")]);
  lab.directory.add("4714", "1234");
  const sba = [lab.ready.sba, lab.ready.names.sba] as const;
  [a, b, c] = await Promise.all([
    LabPhone.register(lab, testClient(lab), ...sba),
    LabPhone.register(lab, userB, ...sba),
    // C's home is the central pool: it registers through the WAN link.
    LabPhone.register(lab, userC, lab.ready.pool, lab.ready.names.pool),
  ]);
}, 60_000);

afterAll(async () => {
  for (const p of [a, b, c]) p?.close();
  await lab?.stop();
});

/** Waits until no byte has crossed the WAN link for a few polls. */
async function quiet(l: Lab): Promise<void> {
  const bytes = () => l.wan.stats.bytesToBranch + l.wan.stats.bytesToCentre;
  let last = bytes();
  for (let still = 0; still < 3; ) {
    await sleep(20);
    const now = bytes();
    still = now === last ? still + 1 : 0;
    last = now;
  }
}

/** The Request-URI A's INVITE reaches B with: B's registered Contact. */
const contactOf = (p: LabPhone) => new RegExp(`^sip:127\\.0\\.0\\.1:${p.port};transport=tls`);

/** A full call from caller to callee: INVITE, 180, 200, ACK, then BYE from the callee. */
async function call(caller: LabPhone, callee: LabPhone) {
  const offer = sdp(40_000);
  const answerSdp = sdp(50_000);
  const invite = caller.invite(callee.aor, offer);
  const trying = await caller.next(isResponse(100));
  const inv = await callee.next(isRequest("INVITE"));
  const tag = token();
  callee.answer(inv.m, 180, "Ringing", { toTag: tag });
  const ringing = await caller.next(isResponse(180));
  const okSent = callee.answer(inv.m, 200, "OK", { toTag: tag, body: answerSdp });
  const ok = await caller.next(isResponse(200, "INVITE"));
  const dCaller = callerDialog(invite, ok.m);
  caller.send(inDialog(dCaller, "ACK", caller.via));
  const ack = await callee.next(isRequest("ACK"));
  const dCallee = calleeDialog(inv.m, okSent);
  callee.send(inDialog(dCallee, "BYE", callee.via));
  const bye = await caller.next(isRequest("BYE"));
  caller.answer(bye.m, 200, "OK");
  const byeOk = await callee.next(isResponse(200, "BYE"));
  return { invite, trying, inv, ringing, ok, ack, bye, byeOk, offer, answerSdp };
}

describe("a call between two users on one registrar (SBA)", () => {
  it("INVITE A→B goes over B's flow with the SBA's Via and Record-Route; 180/200/ACK/BYE end to end", async () => {
    const before = { ...lab.sba.stats };
    const r = await call(a, b);

    // The proxy's own 100 Trying: hop by hop, unsigned like every 1xx.
    expect(r.trying.verdict).toBe("unsigned");
    // B got A's INVITE, re-signed by the SBA with B's SA; A's own signature did not travel.
    const inv = r.inv.m;
    expect(r.inv.verdict).toBe("verified");
    expect(header(inv, "Authorization")).toBeUndefined();
    expect(inv.uri).toMatch(contactOf(b));
    expect(headers(inv, "Via")).toHaveLength(2);
    expect(headers(inv, "Via")[0]).toMatch(/^SIP\/2\.0\/TLS sba\.lab\.test:5061;branch=z9hG4bK/);
    expect(headers(inv, "Via")[1]).toBe(header(r.invite, "Via"));
    expect(header(inv, "Max-Forwards")).toBe("69");
    const rr = headerList(inv, "Record-Route");
    expect(rr).toHaveLength(1);
    expect(rr[0]).toMatch(/^<sip:sba\.lab\.test;transport=tls;lr;lab-dlg=sba-[0-9a-f]+>$/);
    expect(inv.body.toString()).toBe(r.offer);
    expect(header(inv, "From")).toBe(header(r.invite, "From"));

    // The answers came back the same way: 180 unsigned (as Lync), 200 re-signed for A.
    expect(r.ringing.verdict).toBe("unsigned");
    expect(header(r.ringing.m, "Authorization")).toBeUndefined();
    expect(headers(r.ringing.m, "Via")).toHaveLength(1);
    expect(r.ok.verdict).toBe("verified");
    expect(header(r.ok.m, "Authorization")).toBeUndefined();
    expect(r.ok.m.body.toString()).toBe(r.answerSdp);
    expect(headerList(r.ok.m, "Record-Route")).toEqual(rr);

    // ACK and BYE followed the Record-Route: the SBA took its own Route out and kept signing.
    expect(r.ack.verdict).toBe("verified");
    expect(headers(r.ack.m, "Route")).toEqual([]);
    expect(r.bye.verdict).toBe("verified");
    expect(r.bye.m.uri).toMatch(contactOf(a));
    expect(r.byeOk.verdict).toBe("verified");

    // The SBA verified the client signature on INVITE, 180, 200, ACK, BYE and the BYE's 200.
    expect(lab.sba.stats.signedOk - before.signedOk).toBe(6);
    expect(lab.sba.stats.signatureFailures).toBe(before.signatureFailures);
    expect(lab.sba.router.dialogCount).toBe(0);
  });

  it("a re-INVITE and an INFO inside the call follow the Record-Route too", async () => {
    const invite = a.invite(b.aor, sdp(40_002));
    const inv = await b.next(isRequest("INVITE"));
    const okSent = b.answer(inv.m, 200, "OK", { toTag: token(), body: sdp(50_002) });
    const ok = await a.next(isResponse(200, "INVITE"));
    const dA = callerDialog(invite, ok.m);
    const dB = calleeDialog(inv.m, okSent);
    a.send(inDialog(dA, "ACK", a.via));
    await b.next(isRequest("ACK"));

    const hold = sdp(40_002).replace("m=audio", "a=sendonly\r\nm=audio");
    a.send(inDialog(dA, "INVITE", a.via, { body: hold, contact: a.contact }));
    const reinvite = await b.next(isRequest("INVITE"));
    expect(reinvite.verdict).toBe("verified");
    expect(reinvite.m.body.toString()).toBe(hold);
    b.answer(reinvite.m, 200, "OK", { body: sdp(50_002) });
    expect((await a.next(isResponse(200, "INVITE"))).verdict).toBe("verified");

    b.send(inDialog(dB, "INFO", b.via, { extra: [["Content-Type", "application/dtmf-relay"]] }));
    const info = await a.next(isRequest("INFO"));
    expect(info.verdict).toBe("verified");
    a.answer(info.m, 200, "OK");
    expect((await b.next(isResponse(200, "INFO"))).verdict).toBe("verified");

    a.send(inDialog(dA, "BYE", a.via));
    b.answer((await b.next(isRequest("BYE"))).m, 200, "OK");
    await a.next(isResponse(200, "BYE"));
  });

  it("a bad signature is not forwarded: the INVITE is challenged, a forged 200 is dropped", async () => {
    const forged = a.invite(b.aor, sdp(40_004));
    // Re-sent with one digit of the signature changed (a fresh branch, so no retransmission).
    const bad: SipRequest = { ...forged, headers: forged.headers.map((h) => ({ ...h })) };
    const via = bad.headers.find((h) => h.name === "Via")!;
    via.value = via.value.replace(/branch=[^;]+/, `branch=z9hG4bK${token()}`);
    const authz = bad.headers.find((h) => h.name === "Authorization")!;
    authz.value = authz.value.replace(
      /response="(.)/,
      (_s, ch: string) => `response="${ch === "0" ? "1" : "0"}`,
    );
    const failuresBefore = lab.sba.stats.signatureFailures;
    a.send(bad, { sign: false });
    // The genuine one was forwarded; the forged one only got the registrar's challenge.
    const inv = await b.next(isRequest("INVITE"));
    expect(await a.next(isResponse(401))).toBeDefined();
    expect(await b.within(isRequest("INVITE"))).toEqual([]);
    expect(lab.sba.stats.signatureFailures).toBe(failuresBefore + 1);

    // B's 200 with a broken signature never reaches A, nor does one without any; a good one does.
    const ok = answerTo(inv.m, 200, "OK", { toTag: token(), body: sdp(50_004), contact: b.contact });
    b.sa.sign(ok, new CryptoRandom());
    const broken = { ...ok, headers: ok.headers.map((h) => ({ ...h })) };
    const sig = broken.headers.find((h) => h.name === "Authorization")!;
    sig.value = sig.value.replace(/response="(.)/, (_s, ch: string) => `response="${ch === "0" ? "1" : "0"}`);
    const dropped = lab.sba.router.stats.dropped;
    const failures = lab.sba.stats.signatureFailures;
    b.send(broken, { sign: false });
    b.answer(inv.m, 200, "OK", { body: sdp(50_004), sign: false });
    expect(await a.within(isResponse(200, "INVITE"))).toEqual([]);
    expect(lab.sba.router.stats.dropped).toBe(dropped + 2);
    expect(lab.sba.stats.signatureFailures).toBe(failures + 1);
    b.send(ok);
    const good = await a.next(isResponse(200, "INVITE"));
    expect(good.verdict).toBe("verified");
    const dA = callerDialog(forged, good.m);
    a.send(inDialog(dA, "ACK", a.via));
    expect((await b.next(isRequest("ACK"))).verdict).toBe("verified");
    a.send(inDialog(dA, "BYE", a.via));
    b.answer((await b.next(isRequest("BYE"))).m, 200, "OK");
    await a.next(isResponse(200, "BYE"));
  });
});

describe("answers of the registrar's own", () => {
  it("404 for an unknown user; 480 for a lab user registered nowhere (the pool asked across the WAN)", async () => {
    const unknown = a.invite("sip:9999@lab.test", sdp(40_006));
    const nf = await a.next(isResponse(404));
    expect(nf.verdict).toBe("verified");
    a.send(ackFor(unknown, nf.m));

    const fromPeer = lab.pool.router.stats.fromPeer;
    const nobody = a.invite("sip:4714@lab.test", sdp(40_008));
    const ta = await a.next(isResponse(480), 10_000);
    expect(ta.verdict).toBe("verified");
    expect(ta.m.reason).toBe("Temporarily Unavailable");
    // The SBA asked the pool (D might have been registered there); the pool answered 480.
    expect(lab.pool.router.stats.fromPeer).toBeGreaterThan(fromPeer);
    expect(lab.pool.router.stats.answered[480]).toBeGreaterThanOrEqual(1);
    a.send(ackFor(nobody, ta.m));
    // The ACKs to the 404 and 480 ended at the SBA (hop by hop): nobody else saw them.
    expect(await b.within(isRequest("ACK"))).toEqual([]);
  });

  it("CANCEL is hop by hop: 200 from the SBA, its own CANCEL to B, 487 back, each hop ACKed", async () => {
    const invite = a.invite(b.aor, sdp(40_010));
    const inv = await b.next(isRequest("INVITE"));
    const tag = token();
    b.answer(inv.m, 180, "Ringing", { toTag: tag });
    await a.next(isResponse(180));

    a.send(cancelOf(invite));
    const cancelled = await a.next(isResponse(200, "CANCEL"));
    expect(cancelled.verdict).toBe("verified");
    const cancel = await b.next(isRequest("CANCEL"));
    expect(cancel.verdict).toBe("verified");
    // The SBA's CANCEL matches the INVITE it forwarded (its Via, its Request-URI).
    expect(header(cancel.m, "Via")).toBe(headers(inv.m, "Via")[0]);
    expect(cancel.m.uri).toBe(inv.m.uri);
    b.answer(cancel.m, 200, "OK");
    b.answer(inv.m, 487, "Request Terminated", { toTag: tag });

    const terminated = await a.next(isResponse(487));
    expect(terminated.verdict).toBe("verified");
    const ack = await b.next(isRequest("ACK"));
    expect(ack.verdict).toBe("verified");
    expect(header(ack.m, "Via")).toBe(headers(inv.m, "Via")[0]);
    expect(header(ack.m, "To")).toContain(`tag=${tag}`);
    a.send(ackFor(invite, terminated.m));
    expect(await b.within(isRequest("ACK"))).toEqual([]);
    expect(lab.sba.router.dialogCount).toBe(0);
  });
});

describe("calls between the branch and the centre", () => {
  it("SBA user → pool user crosses the WAN link; both registrars record-route; BYE comes back", async () => {
    const wanBytes = lab.wan.stats.bytesToCentre;
    const toPeer = lab.sba.router.stats.toPeer;
    const r = await call(a, c);
    expect(r.inv.verdict).toBe("verified");
    const rr = headerList(r.inv.m, "Record-Route");
    expect(rr).toHaveLength(2);
    expect(rr[0]).toContain("sip:pool.lab.test;transport=tls;lr;lab-dlg=pool-");
    expect(rr[1]).toContain("sip:sba.lab.test;transport=tls;lr;lab-dlg=sba-");
    expect(headers(r.inv.m, "Via")).toHaveLength(3);
    expect(header(r.inv.m, "Max-Forwards")).toBe("68");
    expect(r.inv.m.body.toString()).toBe(r.offer);
    expect(r.ok.verdict).toBe("verified");
    expect(r.ack.verdict).toBe("verified");
    expect(r.bye.verdict).toBe("verified");
    expect(r.byeOk.verdict).toBe("verified");
    expect(lab.sba.router.stats.toPeer).toBeGreaterThan(toPeer);
    expect(lab.wan.stats.bytesToCentre).toBeGreaterThan(wanBytes);
    expect(lab.pool.router.dialogCount).toBe(0);
    expect(lab.sba.router.dialogCount).toBe(0);
  });

  it("pool user → SBA user: the centre opens its own connection to the branch, across the WAN too", async () => {
    // No connection left between them: the pool must dial the SBA itself.
    lab.sba.router.peering!.reset();
    lab.pool.router.peering!.reset();
    const invite = c.invite(b.aor, sdp(40_012));
    const inv = await b.next(isRequest("INVITE"));
    expect(inv.verdict).toBe("verified");
    expect(headerList(inv.m, "Record-Route").map((v) => /lab-dlg=(\w+)-/.exec(v)?.[1])).toEqual([
      "sba",
      "pool",
    ]);
    b.answer(inv.m, 486, "Busy Here", { toTag: token() });
    const busy = await c.next(isResponse(486));
    expect(busy.verdict).toBe("verified");
    c.send(ackFor(invite, busy.m));
    expect(lab.wan.stats.routes["sba"]?.connections).toBeGreaterThanOrEqual(1);
  });

  it("WAN cut: two users on the SBA still call each other (limited service); the pool is out of reach", async () => {
    const timers = { ...lab.sba.router.timers };
    lab.sba.router.timers = { ...timers, connectMs: 800, noAnswerMs: 1_500 };
    lab.sba.router.peering!.reset();
    // Whatever is still on its way across (the last test's ACK) would vanish in the cut and
    // leave a TLS stream with a hole: cut a quiet link, as the outage tests do.
    await quiet(lab);
    lab.wan.cut();
    try {
      const r = await call(a, b);
      expect([r.inv.verdict, r.ok.verdict, r.ack.verdict, r.bye.verdict, r.byeOk.verdict]).toEqual([
        "verified",
        "verified",
        "verified",
        "verified",
        "verified",
      ]);
      expect(headerList(r.inv.m, "Record-Route")).toHaveLength(1);

      // C's registrar cannot be reached: the SBA says so instead of leaving A hanging.
      const t0 = Date.now();
      const toC = a.invite(c.aor, sdp(40_014));
      const timeout = await a.next(isResponse(504), 5_000);
      expect(timeout.verdict).toBe("verified");
      expect(Date.now() - t0).toBeLessThan(4_000);
      a.send(ackFor(toC, timeout.m));
      expect(await c.within(isRequest("INVITE"))).toEqual([]);
    } finally {
      lab.wan.restore();
      lab.sba.router.timers = timers;
    }
    // Back up: C is reachable again.
    const again = a.invite(c.aor, sdp(40_016));
    const inv = await c.next(isRequest("INVITE"), 10_000);
    c.answer(inv.m, 486, "Busy Here", { toTag: token() });
    const busy = await a.next(isResponse(486));
    a.send(ackFor(again, busy.m));
  });
});
