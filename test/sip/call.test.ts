/**
 * The call state machine (firmware/sip/session/call.ts) end to end: two or three phones, each a
 * UserAgentCore with its real TLS-DSK SecurityAssociation and a CallAgent, on the fake pool of
 * call-rig.ts (which verifies every phone signature and signs what it delivers), on one
 * ManualClock.
 */
import { describe, expect, it } from "vitest";
import { addHeader, header, request, type SipRequest } from "../../firmware/sip/message/message.ts";
import type { Dialog, DialogUser, InviteClientUser } from "../../firmware/sip/user-agent-core.ts";
import { bareCore, dial, eventsOf, FakePool, phone, settle, states } from "./call-rig.ts";

function twoPhones(o: { bob?: Parameters<typeof phone>[2]; alice?: Parameters<typeof phone>[2] } = {}) {
  const pool = new FakePool();
  const alice = phone(pool, "alice", o.alice);
  const bob = phone(pool, "bob", o.bob);
  return { pool, alice, bob };
}

/** alice calls bob and bob answers: both confirmed. */
function connected(o: Parameters<typeof twoPhones>[0] = {}) {
  const r = twoPhones(o);
  const call = dial(r.alice, "sip:bob@lab.test");
  settle(r.pool);
  const inc = r.bob.incoming[0]!;
  expect(inc.answer()).toBe(true);
  settle(r.pool);
  expect(call.state).toBe("confirmed");
  expect(inc.state).toBe("confirmed");
  return { ...r, call, inc };
}

const requestsFrom = (pool: FakePool, from: string, method: string) =>
  pool.wire.filter((e) => e.from === from && e.what === method);

describe("a call, both ways", () => {
  it("rings, is answered, carries who is calling, lasts on the clock and hangs up cleanly", () => {
    const { pool, alice, bob } = twoPhones();
    // The pool asserts the caller's identity, as a Lync front end does (RFC 3325).
    pool.tamper = (m) => {
      if (m.kind === "request" && m.method === "INVITE")
        addHeader(m, "P-Asserted-Identity", '"Alice Example" <sip:alice@lab.test>, <tel:+493012345>');
      return "pass";
    };
    const call = dial(alice, "sip:bob@lab.test");
    expect(call.state).toBe("calling");
    settle(pool);
    const inc = bob.incoming[0]!;
    expect(inc.direction).toBe("incoming");
    expect(inc.state).toBe("ringing");
    expect(call.state).toBe("ringing");
    expect(inc.remoteParty).toEqual({
      uri: "sip:alice@lab.test",
      displayName: "Alice",
      asserted: [{ uri: "sip:alice@lab.test", displayName: "Alice Example" }, { uri: "tel:+493012345" }],
    });
    expect(call.remoteParty).toEqual({ uri: "sip:bob@lab.test", asserted: [] });
    settle(pool, 5_000);
    inc.answer();
    expect(inc.state).toBe("answered"); // 200 sent, waiting for the ACK
    settle(pool);
    expect(states(alice, call)).toEqual(["calling", "ringing", "confirmed"]);
    expect(states(bob, inc)).toEqual(["ringing", "answered", "confirmed"]);
    // The INVITE carried our GRUU as Contact, the offer, and the session timer offer.
    const sentInvite = pool.delivered("bob", "INVITE")[0]!.message as SipRequest;
    expect(header(sentInvite, "Contact")).toBe(`<${alice.contact}>`);
    expect(header(sentInvite, "From")).toMatch(
      /^"Alice" <sip:alice@lab\.test>;tag=[0-9a-f]{16};epid=alice0000$/,
    );
    expect(header(sentInvite, "Session-Expires")).toBe("1800");
    expect(header(sentInvite, "Min-SE")).toBe("90");
    expect(alice.media[0]!.agreed).toBe(bob.media[0]!.agreed);
    settle(pool, 60_000);
    call.hangUp();
    expect(call.state).toBe("terminated");
    settle(pool);
    expect(call.endReason).toEqual({ reason: "local-hangup" });
    expect(inc.endReason).toEqual({ reason: "remote-hangup" });
    expect(call.durationMs).toBe(60_000);
    expect(inc.durationMs).toBe(60_000);
    expect(alice.media[0]!.closed && bob.media[0]!.closed).toBe(true);
    expect(pool.refused).toEqual([]); // everything both phones sent was signed and verified
    expect(pool.trace()).toEqual([
      "alice→bob INVITE",
      "bob→alice 180 INVITE",
      "bob→alice 200 INVITE",
      "alice→bob ACK",
      "alice→bob BYE",
      "bob→alice 200 BYE",
    ]);
    // Nothing is left behind once the transactions' timers ran out.
    settle(pool, 40_000);
    for (const p of [alice, bob]) {
      expect(p.core.pending).toBe(0);
      expect(p.core.callState).toEqual({ serverTransactions: 0, dialogs: 0, awaitingAck: 0 });
      expect(p.agent.calls).toEqual([]);
    }
    expect(pool.clock.pendingTimers()).toBe(0);
  });

  it("bob is busy: 486, alice's call ends 'busy'", () => {
    const { pool, alice, bob } = twoPhones({ bob: { onIncoming: (c) => c.reject(486) } });
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    expect(call.endReason).toEqual({ reason: "busy", status: 486 });
    expect(bob.incoming[0]!.endReason).toEqual({ reason: "rejected", status: 486 });
    expect(pool.trace()).toEqual(["alice→bob INVITE", "bob→alice 486 INVITE", "alice→bob ACK"]);
    expect(states(alice, call)).toEqual(["calling", "terminated"]);
  });

  it("bob declines a ringing call: 603, alice's call ends 'declined'", () => {
    const { pool, alice, bob } = twoPhones();
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    bob.incoming[0]!.reject(603);
    settle(pool);
    expect(call.endReason).toEqual({ reason: "declined", status: 603 });
  });

  it("alice gives up while it rings: CANCEL; bob has a missed call", () => {
    const { pool, alice, bob } = twoPhones();
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    expect(call.cancel()).toBe(true);
    expect(call.endReason).toEqual({ reason: "cancelled" });
    settle(pool);
    const inc = bob.incoming[0]!;
    expect(inc.endReason).toEqual({ reason: "remote-cancelled", status: 487 });
    expect(pool.trace().slice(2)).toEqual([
      "alice→bob CANCEL",
      "bob→alice 200 CANCEL",
      "bob→alice 487 INVITE",
      "alice→bob ACK",
    ]);
    expect(inc.answer()).toBe(false);
  });

  it("when bob's 200 crosses alice's CANCEL, alice ACKs and hangs up; both calls end", () => {
    const { pool, alice, bob } = twoPhones();
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    const inc = bob.incoming[0]!;
    call.cancel();
    expect(inc.answer()).toBe(true); // the CANCEL has not arrived yet
    settle(pool);
    expect(pool.trace().slice(2)).toEqual([
      "alice→bob CANCEL",
      "bob→alice 200 INVITE",
      "bob→alice 200 CANCEL",
      "alice→bob ACK",
      "alice→bob BYE",
      "bob→alice 200 BYE",
    ]);
    expect(call.endReason).toEqual({ reason: "cancelled" });
    expect(states(bob, inc)).toEqual(["ringing", "answered", "confirmed", "terminated"]);
    expect(inc.endReason).toEqual({ reason: "remote-hangup" });
  });

  it("nobody answers: the call is cancelled after noAnswerMs", () => {
    const { pool, alice } = twoPhones({ alice: { call: { noAnswerMs: 30_000 } } });
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool, 29_999);
    expect(call.state).toBe("ringing");
    settle(pool, 1);
    expect(call.endReason).toEqual({ reason: "no-answer" });
    settle(pool);
    expect(pool.trace().at(-1)).toBe("alice→bob ACK"); // of the 487
  });

  it("bob hangs up before the ACK of his 200 arrived: the BYE waits for it (§15)", () => {
    const { pool, alice, bob } = twoPhones();
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    const inc = bob.incoming[0]!;
    inc.answer();
    inc.hangUp(); // the 200 is still on its way
    expect(inc.endReason).toEqual({ reason: "local-hangup" });
    expect(pool.trace().at(-1)).toBe("bob→alice 200 INVITE");
    settle(pool);
    expect(pool.trace().slice(3)).toEqual(["alice→bob ACK", "bob→alice BYE", "alice→bob 200 BYE"]);
    expect(states(alice, call)).toEqual(["calling", "ringing", "confirmed", "terminated"]);
    expect(call.endReason).toEqual({ reason: "remote-hangup" });
    settle(pool, 40_000);
    expect(bob.core.callState).toEqual({ serverTransactions: 0, dialogs: 0, awaitingAck: 0 });
  });

  it("the line is given up before the ACK of bob's 200 arrived (hangUp now): the BYE goes at once, once", () => {
    const { pool, alice, bob } = twoPhones();
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    const inc = bob.incoming[0]!;
    inc.answer();
    inc.hangUp({ now: true }); // the flow is about to close: no ACK could reach bob any more
    expect(inc.endReason).toEqual({ reason: "local-hangup" });
    expect(pool.trace().slice(-2)).toEqual(["bob→alice 200 INVITE", "bob→alice BYE"]);
    settle(pool, 40_000);
    expect(pool.trace().filter((t) => t === "bob→alice BYE")).toHaveLength(1);
    expect(call.endReason).toEqual({ reason: "remote-hangup" });
  });

  it("a 2xx never ACKed: retransmitted for 64·T1, then BYE and 'no-ack'", () => {
    const { pool, alice, bob } = twoPhones();
    pool.tamper = (m) => (m.kind === "request" && m.method === "ACK" ? "drop" : "pass");
    dial(alice, "sip:bob@lab.test");
    settle(pool);
    const inc = bob.incoming[0]!;
    inc.answer();
    settle(pool, 32_000);
    expect(inc.endReason).toEqual({ reason: "no-ack" });
    expect(pool.delivered("alice", "200 INVITE")).toHaveLength(11);
    expect(pool.trace().at(-2)).toBe("bob→alice BYE");
  });

  it("a phone without an incoming-call listener answers 480", () => {
    const { pool, alice } = twoPhones({ bob: { noIncomingListener: true } });
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    expect(call.endReason).toEqual({ reason: "unavailable", status: 480 });
  });

  it("an INVITE requiring an extension we lack gets 420 with Unsupported", () => {
    const { pool, alice, bob } = twoPhones();
    pool.tamper = (m) => {
      if (m.kind === "request" && m.method === "INVITE") addHeader(m, "Require", "100rel");
      return "pass";
    };
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    expect(call.endReason).toEqual({ reason: "failed", status: 420 });
    expect(header(pool.delivered("alice", "420 INVITE")[0]!.message, "Unsupported")).toBe("100rel");
    expect(bob.incoming[0]!.state).toBe("terminated");
  });
});

describe("the offer in our 2xx (RFC 3261 §13.2.1)", () => {
  /** carol is a bare core that sends INVITEs without SDP and answers in the ACK (when `answer`). */
  function offerless(answer: boolean) {
    const pool = new FakePool();
    const carol = bareCore(pool, "carol");
    const bob = phone(pool, "bob");
    const got: string[] = [];
    const dialogs: Dialog[] = [];
    const owner: DialogUser = {
      onRequest: (tx) => {
        got.push(tx.request.method);
        tx.respond(200);
      },
      onAck: () => {},
    };
    const user: InviteClientUser = {
      onSuccess: (r, d) => {
        dialogs.push(d);
        got.push(`${r.status} ${d.state}${r.body.length > 0 ? " with offer" : ""}`);
      },
      onRejected: (r) => got.push(`rejected ${r.status}`),
      onFailure: (why) => got.push(`failure ${why}`),
      ackFor: () =>
        answer
          ? { headers: [["Content-Type", "application/sdp"]], body: "v=0\r\na=sendrecv\r\n" }
          : undefined,
    };
    const invite = request("INVITE", "sip:bob@lab.test", [
      ["Max-Forwards", "70"],
      ["From", "<sip:carol@lab.test>;tag=c1"],
      ["To", "<sip:bob@lab.test>"],
      ["Call-ID", "offerless-1"],
      ["CSeq", "1 INVITE"],
      ["Contact", "<sip:carol@lab.test;gruu>"],
    ]);
    carol.core.sendInvite(invite, user, owner);
    settle(pool);
    return { pool, carol, bob, got, user, dialogs };
  }

  it("an INVITE without an offer gets ours in the 200; the ACK's answer confirms the call", () => {
    const { pool, bob, got } = offerless(true);
    const inc = bob.incoming[0]!;
    expect(inc.state).toBe("ringing");
    inc.answer();
    expect(inc.state).toBe("answered");
    settle(pool);
    expect(got).toEqual(["200 confirmed with offer"]);
    expect(pool.delivered("bob", "ACK")[0]!.message.body.toString()).toContain("v=0");
    expect(bob.media[0]!.log).toEqual(["offer initial sendrecv", "connected", "accepted answer"]);
    expect(inc.state).toBe("confirmed");
  });

  it("an ACK without the answer ends the call with BYE", () => {
    const { pool, bob, got } = offerless(false);
    const inc = bob.incoming[0]!;
    inc.answer();
    settle(pool);
    expect(inc.endReason).toEqual({ reason: "media" });
    expect(got).toEqual(["200 confirmed with offer", "BYE"]);
  });

  it("a re-INVITE without an offer gets a refresh offer in the 200 and its answer in the ACK", () => {
    const { pool, carol, bob, got, user, dialogs } = offerless(true);
    const inc = bob.incoming[0]!;
    inc.answer();
    settle(pool);
    const version = bob.media[0]!.version;
    carol.core.sendReinvite(dialogs[0]!, {}, user);
    settle(pool);
    expect(got).toEqual(["200 confirmed with offer", "200 confirmed with offer"]);
    expect(bob.media[0]!.log.slice(-2)).toEqual(["offer refresh sendrecv", "accepted answer"]);
    expect(bob.media[0]!.version).toBe(version);
    expect(inc.state).toBe("confirmed");
  });
});

describe("hold, resume, refused offers, glare", () => {
  it("hold sends a sendonly re-INVITE, resume a sendrecv one; both ends see who holds", () => {
    const { pool, alice, bob, call, inc } = connected();
    expect(call.hold()).toBe(true);
    settle(pool);
    expect(call.holdState).toEqual({ local: true, remote: false });
    expect(inc.holdState).toEqual({ local: false, remote: true });
    const reinvite = pool.delivered("bob", "INVITE")[1]!.message;
    expect(reinvite.body.toString()).toContain("a=sendonly");
    expect(bob.media[0]!.agreed).toContain("a=recvonly");
    expect(call.resume()).toBe(true);
    settle(pool);
    expect(call.holdState).toEqual({ local: false, remote: false });
    expect(inc.holdState).toEqual({ local: false, remote: false });
    expect(eventsOf(alice, call, "hold")).toEqual([
      { type: "hold", local: true, remote: false },
      { type: "hold", local: false, remote: false },
    ]);
    expect(eventsOf(bob, inc, "hold")).toEqual([
      { type: "hold", local: false, remote: true },
      { type: "hold", local: false, remote: false },
    ]);
    expect(call.state).toBe("confirmed");
    expect(pool.refused).toEqual([]);
  });

  it("a re-INVITE whose offer the media port refuses (SRTP dropped) gets 488; the call stays as it was", () => {
    const { pool, alice, bob, call, inc } = connected({ bob: { media: (m) => (m.srtp = "required") } });
    const agreedBefore = bob.media[0]!.agreed;
    alice.media[0]!.offerCrypto = false; // alice's next offer drops the crypto line
    expect(call.hold()).toBe(true);
    settle(pool);
    const refusal = pool.delivered("alice", "488 INVITE")[0]!.message;
    expect(refusal.kind === "response" && refusal.reason).toBe("Encryption Levels not compatible");
    expect(header(refusal, "Warning")).toBe(`305 ${bob.flow.local.address} "SRTP is required"`);
    expect(pool.trace().at(-1)).toBe("alice→bob ACK"); // of the 488, by alice's transaction
    expect(call.state).toBe("confirmed");
    expect(inc.state).toBe("confirmed");
    expect(call.holdState).toEqual({ local: false, remote: false });
    expect(inc.holdState).toEqual({ local: false, remote: false });
    expect(bob.media[0]!.agreed).toBe(agreedBefore);
    expect(alice.media[0]!.log.at(-1)).toBe("rollback");
    expect(eventsOf(alice, call, "offer-refused")).toEqual([
      { type: "offer-refused", by: "remote", status: 488 },
    ]);
    expect(eventsOf(bob, inc, "offer-refused")).toEqual([
      { type: "offer-refused", by: "local", status: 488, code: "srtp-required" },
    ]);
    // A good offer afterwards goes through.
    alice.media[0]!.offerCrypto = true;
    expect(call.hold()).toBe(true);
    settle(pool);
    expect(call.holdState.local).toBe(true);
  });

  it("an INVITE whose offer is refused is answered 488 and the call never rings", () => {
    const { pool, alice, bob } = twoPhones({
      alice: { media: (m) => (m.offerCrypto = false) },
      bob: { media: (m) => (m.srtp = "required") },
    });
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    expect(call.endReason).toEqual({ reason: "media", status: 488 });
    expect(bob.incoming[0]!.endReason).toEqual({ reason: "media", status: 488 });
    expect(pool.trace()).toEqual(["alice→bob INVITE", "bob→alice 488 INVITE", "alice→bob ACK"]);
  });

  it("glare: crossing re-INVITEs both get 491 and are retried after the §14.1 delays", () => {
    const { pool, alice, call, inc } = connected();
    const t0 = pool.clock.monotonic();
    expect(call.hold()).toBe(true);
    expect(inc.hold()).toBe(true);
    settle(pool);
    expect(pool.delivered("alice", "491 INVITE")).toHaveLength(1);
    expect(pool.delivered("bob", "491 INVITE")).toHaveLength(1);
    settle(pool, 5_000);
    const retries = (from: string) => requestsFrom(pool, from, "INVITE").slice(from === "alice" ? 2 : 1);
    const aliceRetry = retries("alice")[0]!.at - t0;
    const bobRetry = retries("bob")[0]!.at - t0;
    // alice made the Call-ID: 2.1–4 s; bob did not: 0–2 s (10 ms steps).
    expect(aliceRetry).toBeGreaterThanOrEqual(2_100);
    expect(aliceRetry).toBeLessThanOrEqual(4_000);
    expect(bobRetry).toBeLessThanOrEqual(2_000);
    expect(aliceRetry % 10).toBe(0);
    expect(call.holdState).toEqual({ local: true, remote: true });
    expect(inc.holdState).toEqual({ local: true, remote: true });
    expect(alice.media[0]!.agreed).toContain("a=inactive");
  });

  it("answers 481 when the peer's dialog is gone; the other end then ends its call", () => {
    const { pool, call, inc } = connected();
    pool.tamper = (m) => (m.kind === "request" && m.method === "BYE" ? "drop" : "pass");
    call.hangUp(); // bob never hears of it
    settle(pool);
    expect(inc.state).toBe("confirmed");
    pool.tamper = () => "pass";
    inc.hold();
    settle(pool);
    expect(pool.delivered("bob", "481 INVITE")).toHaveLength(1);
    expect(inc.endReason).toEqual({ reason: "remote-hangup", status: 481 });
  });
});

describe("session timers (RFC 4028)", () => {
  it("the refresher re-INVITEs at half the interval with the same SDP; the call lives on", () => {
    const { pool, alice, bob, call, inc } = connected();
    expect(call.sessionTimer).toEqual({ interval: 1800, refresher: "local" });
    expect(inc.sessionTimer).toEqual({ interval: 1800, refresher: "remote" });
    const version = alice.media[0]!.version;
    settle(pool, 3_600_000);
    const refreshes = requestsFrom(pool, "alice", "INVITE").slice(1);
    expect(refreshes.map((e) => Math.round(e.at / 1000))).toEqual([900, 1800, 2700, 3600]);
    expect(header(refreshes[0]!.message, "Session-Expires")).toBe("1800;refresher=uac");
    expect(alice.media[0]!.version).toBe(version); // a refresh repeats the description
    expect(requestsFrom(pool, "bob", "INVITE")).toEqual([]);
    expect(call.state).toBe("confirmed");
    expect(inc.state).toBe("confirmed");
    expect(eventsOf(bob, inc, "hold")).toEqual([]);
  });

  it("without refreshes both ends hang up: the refresher when its refresh times out, the other at expiry", () => {
    const { pool, call, inc } = connected();
    const t0 = pool.clock.monotonic();
    pool.cut = true; // a WAN cut: nothing arrives either way
    settle(pool, 2_000_000);
    expect(call.endReason).toEqual({ reason: "timeout", status: 408 });
    expect(call.endedAt! - t0).toBe(932_000); // refresh at 900 s, Timer B 32 s later
    expect(inc.endReason).toEqual({ reason: "session-expired" });
    expect(inc.endedAt! - t0).toBe(1_768_000); // 1800 − min(32, 1800/3) s (§10)
    expect(pool.trace((e) => e.from === "bob").at(-1)).toBe("bob→alice BYE (drop)");
  });

  it("a 422 is retried with the callee's Min-SE", () => {
    const { pool, alice, bob } = twoPhones({
      alice: { call: { sessionTimer: { interval: 900 } } },
      bob: { call: { sessionTimer: { minSe: 1200 } } },
    });
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    bob.incoming.at(-1)!.answer();
    settle(pool);
    expect(pool.trace().slice(0, 4)).toEqual([
      "alice→bob INVITE",
      "bob→alice 422 INVITE",
      "alice→bob ACK",
      "alice→bob INVITE",
    ]);
    const [first, retry] = requestsFrom(pool, "alice", "INVITE").map((e) => e.message);
    expect(header(retry!, "Min-SE")).toBe("1200");
    expect(header(retry!, "Session-Expires")).toBe("1200");
    expect(header(retry!, "CSeq")).toBe("2 INVITE");
    expect(header(retry!, "Call-ID")).toBe(header(first!, "Call-ID"));
    expect(call.state).toBe("confirmed");
    expect(call.sessionTimer).toEqual({ interval: 1200, refresher: "local" });
    expect(bob.incoming[0]!.endReason).toEqual({ reason: "failed", status: 422 });
  });
});

describe("transfer (RFC 3515)", () => {
  it("blind transfer: alice REFERs bob to carol; bob calls carol and reports; alice's call ends 'transferred'", () => {
    const pool = new FakePool();
    const alice = phone(pool, "alice");
    const carol = phone(pool, "carol");
    const bob = phone(pool, "bob", { call: { acceptTransfers: true } });
    const toCarol: Array<ReturnType<typeof dial>> = [];
    bob.agent.onIncoming((first) =>
      first.on((e) => {
        if (e.type !== "transfer-requested") return;
        const next = dial(bob, e.target);
        toCarol.push(next);
        next.on((s) => {
          if (s.type === "state" && s.state === "ringing") first.reportTransfer(180);
          if (s.type === "state" && s.state === "confirmed") first.reportTransfer(200);
        });
      }),
    );
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool);
    const inc = bob.incoming[0]!;
    inc.answer();
    settle(pool);
    expect(call.blindTransfer("sip:carol@lab.test")).toBe(true);
    settle(pool);
    expect(eventsOf(bob, inc, "transfer-requested")).toEqual([
      { type: "transfer-requested", target: "sip:carol@lab.test", referredBy: "<sip:alice@lab.test>" },
    ]);
    const refer = pool.delivered("bob", "REFER")[0]!.message;
    expect(header(refer, "Refer-To")).toBe("<sip:carol@lab.test>");
    expect(carol.incoming).toHaveLength(1);
    carol.incoming[0]!.answer();
    settle(pool);
    expect(
      eventsOf(alice, call, "transfer").map((e) => `${e.progress}${e.status ? ` ${e.status}` : ""}`),
    ).toEqual(["requested", "accepted 202", "trying 100", "trying 180", "succeeded 200"]);
    expect(call.endReason).toEqual({ reason: "transferred" });
    expect(inc.endReason).toEqual({ reason: "remote-hangup" });
    expect(toCarol[0]!.state).toBe("confirmed");
    expect(carol.incoming[0]!.state).toBe("confirmed");
    const notifies = pool.delivered("alice", "NOTIFY").map((e) => e.message);
    expect(notifies.map((n) => n.body.toString().trim())).toEqual([
      "SIP/2.0 100 Trying",
      "SIP/2.0 180 Ringing",
      "SIP/2.0 200 OK",
    ]);
    expect(header(notifies[0]!, "Event")).toBe(`refer;id=${header(refer, "CSeq")!.split(" ")[0]}`);
    expect(header(notifies[2]!, "Subscription-State")).toBe("terminated;reason=noresource");
    expect(header(notifies[0]!, "Content-Type")).toBe("message/sipfrag;version=2.0");
    expect(pool.refused).toEqual([]);
  });

  it("a phone that takes no transfers answers REFER 603; the transferor's call carries on", () => {
    const { pool, alice, call, inc } = connected();
    call.blindTransfer("sip:carol@lab.test");
    settle(pool);
    expect(pool.delivered("alice", "603 REFER")).toHaveLength(1);
    expect(eventsOf(alice, call, "transfer").map((e) => e.progress)).toEqual(["requested", "failed"]);
    expect(call.state).toBe("confirmed");
    expect(inc.state).toBe("confirmed");
  });
});

describe("signatures reach the calls", () => {
  it("an unsigned INVITE never makes an incoming call; the caller's INVITE times out", () => {
    const { pool, alice, bob } = twoPhones();
    pool.tamper = (m) => (m.kind === "request" && m.method === "INVITE" ? "unsigned" : "pass");
    const call = dial(alice, "sip:bob@lab.test");
    settle(pool, 40_000);
    expect(bob.incoming).toEqual([]);
    expect(call.endReason).toEqual({ reason: "timeout", status: 408 });
  });

  it("a badly signed BYE does not end bob's call as a hang-up: the flow is dropped and the call lost", () => {
    const { pool, bob, call, inc } = connected();
    pool.tamper = (m) => (m.kind === "request" && m.method === "BYE" ? "bad-signature" : "pass");
    call.hangUp();
    settle(pool);
    expect(bob.securityFailures).toEqual(["rspauth-invalid"]);
    expect(inc.endReason).toEqual({ reason: "transport" });
    expect(pool.delivered("alice", "200 BYE")).toEqual([]);
  });

  it("an incoming call not yet ringing hears of its flow's loss too", () => {
    const { pool, alice } = twoPhones();
    const seen: string[] = [];
    const dave = phone(pool, "dave", {
      onIncoming: (c) => {
        seen.push(c.state);
        pool.reset("dave"); // before the agent rings it: no dialog is bound yet
      },
    });
    dial(alice, "sip:dave@lab.test");
    settle(pool);
    expect(seen).toEqual(["incoming"]);
    expect(dave.incoming[0]!.endReason).toEqual({ reason: "transport" });
  });

  it("a call whose flow resets ends 'transport'", () => {
    const { pool, call, inc } = connected();
    pool.reset("bob");
    expect(inc.endReason).toEqual({ reason: "transport" });
    expect(call.state).toBe("confirmed");
  });
});
