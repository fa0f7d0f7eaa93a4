/**
 * The desk (firmware/phone/calls.ts) being transferred, and sending DTMF, on call-rig's pool: a
 * ManualClock, every message signed and verified with TLS-DSK as Lync would, bytes on the wire.
 * Bob is the desk under test (a CallDesk on a line of its own); alice and carol are call-rig
 * phones (CallAgents). Alice calls bob, then REFERs bob to carol.
 */
import { describe, expect, it } from "vitest";
import type { Line } from "../../firmware/accounts/account.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { CallDesk, type DeskEvent, DTMF_DIGIT_MS, REPLACED_BYE_MS } from "../../firmware/phone/calls.ts";
import { header } from "../../firmware/sip/message/message.ts";
import type { Call } from "../../firmware/sip/session/call.ts";
import { bareCore, DOMAIN, dial, eventsOf, FakeMedia, FakePool, phone, settle } from "../sip/call-rig.ts";

interface Bob {
  desk: CallDesk;
  events: DeskEvent[];
  ports: FakeMedia[];
  /** Line keeps held now (one per call in progress). */
  keeps(): number;
}

function bobDesk(pool: FakePool, o: { acceptTransfers?: boolean } = {}): Bob {
  const { core } = bareCore(pool, "bob");
  let keeps = 0;
  const line: Line = {
    core,
    identity: { aor: `sip:bob@${DOMAIN}`, epid: "bob0000" },
    contact: `sip:bob@${DOMAIN};gruu;opaque=user:epid:bob0000`,
    registrar: "pool.lab.test:5061",
    keep: () => {
      keeps++;
      let done = false;
      return () => {
        if (!done) keeps--;
        done = true;
      };
    },
  };
  const ports: FakeMedia[] = [];
  const desk = new CallDesk({
    clock: pool.clock,
    random: new SeededRandom(7),
    logger: silentLogger,
    media: () => {
      const m = new FakeMedia("10.0.9.9");
      ports.push(m);
      return m;
    },
    ...o,
  });
  const events: DeskEvent[] = [];
  desk.events.on((e) => events.push(e));
  desk.onLine({ type: "line", line });
  return { desk, events, ports, keeps: () => keeps };
}

/** Alice calls bob, bob's desk answers: the connected call, both sides. */
function connected(o: { acceptTransfers?: boolean; carol?: Parameters<typeof phone>[2] } = {}) {
  const pool = new FakePool();
  const alice = phone(pool, "alice");
  const carol = phone(pool, "carol", o.carol);
  const bob = bobDesk(pool, o);
  const call = dial(alice, `sip:bob@${DOMAIN}`);
  settle(pool);
  expect(bob.desk.view()?.phase).toBe("incoming");
  expect(bob.desk.answer()).toBe(true);
  settle(pool);
  expect(call.state).toBe("confirmed");
  return { pool, alice, carol, bob, call };
}

const notifyBodies = (pool: FakePool) =>
  pool.delivered("alice", "NOTIFY").map((e) => e.message.body.toString().trim());
const progress = (alice: ReturnType<typeof phone>, call: Call) =>
  eventsOf(alice, call, "transfer").map((e) => `${e.progress}${e.status ? ` ${e.status}` : ""}`);

describe("being transferred (blind transfer received, RFC 3515 / RFC 5589 §6)", () => {
  it("202, dials the Refer-To with Referred-By, NOTIFYs 100/180/200; alice's BYE ends the original quietly", () => {
    const { pool, alice, carol, bob, call } = connected();
    expect(call.blindTransfer(`sip:carol@${DOMAIN}`)).toBe(true);
    settle(pool);
    expect(pool.delivered("alice", "202 REFER")).toHaveLength(1);
    // The INVITE the REFER triggered names who referred us (RFC 3892 §3).
    const invite = pool.delivered("carol", "INVITE")[0]!.message;
    expect(header(invite, "Referred-By")).toBe(`<sip:alice@${DOMAIN}>`);
    expect(header(invite, "From")).toContain(`<sip:bob@${DOMAIN}>`);
    expect(carol.incoming).toHaveLength(1);
    expect(bob.desk.view()).toMatchObject({ phase: "connected", number: "alice", transferringTo: "carol" });
    // While the transfer runs, the keys that would act on the original call do nothing.
    expect(bob.desk.toggleHold()).toBe(false);
    expect(bob.desk.toggleMute()).toBe(false);
    expect(bob.desk.sendDigit("1")).toBe(false);
    expect(bob.keeps()).toBe(2);

    carol.incoming[0]!.answer();
    settle(pool);
    expect(notifyBodies(pool)).toEqual(["SIP/2.0 100 Trying", "SIP/2.0 180 Ringing", "SIP/2.0 200 OK"]);
    expect(progress(alice, call)).toEqual([
      "requested",
      "accepted 202",
      "trying 100",
      "trying 180",
      "succeeded 200",
    ]);
    expect(call.endReason).toEqual({ reason: "transferred" });
    // Bob's desk now carries the call to carol; the original ended without a call-ended screen.
    expect(bob.desk.view()).toMatchObject({ phase: "connected", direction: "outgoing", number: "carol" });
    expect(bob.desk.view()?.transferringTo).toBeUndefined();
    expect(bob.events.filter((e) => e.type === "ended")).toEqual([]);
    expect(bob.events.find((e) => e.type === "transferred")).toEqual({
      type: "transferred",
      end: expect.objectContaining({ direction: "incoming", number: "alice", reason: "transferred" }),
    });
    expect(bob.keeps()).toBe(1); // alice's BYE came: the original's keep is let go
    expect(bob.ports[0]!.closed).toBe(true);
    // No BYE of bob's crosses alice's.
    pool.clock.advance(REPLACED_BYE_MS + 100);
    expect(pool.delivered("alice", "BYE")).toEqual([]);
    expect(carol.incoming[0]!.state).toBe("confirmed");

    expect(bob.desk.hangUp()).toBe(true);
    settle(pool);
    expect(carol.incoming[0]!.endReason).toEqual({ reason: "remote-hangup" });
    expect(bob.events.at(-2)).toMatchObject({
      type: "ended",
      end: { number: "carol", reason: "local-hangup" },
    });
    expect(bob.keeps()).toBe(0);
    expect(pool.refused).toEqual([]);
  });

  it("a transferor that leaves the call up after the 200 NOTIFY gets our BYE after a grace period", () => {
    const { pool, alice, carol, bob, call } = connected();
    // Alice's BYE never arrives (a transferor that waits for the transferee to hang up).
    pool.tamper = (m, from) =>
      from === "alice" && m.kind === "request" && m.method === "BYE" ? "drop" : "pass";
    call.blindTransfer(`sip:carol@${DOMAIN}`);
    settle(pool);
    carol.incoming[0]!.answer();
    settle(pool);
    expect(bob.keeps()).toBe(2);
    expect(pool.delivered("alice", "BYE")).toEqual([]);
    pool.clock.advance(REPLACED_BYE_MS);
    settle(pool);
    expect(pool.delivered("alice", "BYE")).toHaveLength(1);
    expect(bob.keeps()).toBe(1);
    expect(bob.desk.view()?.number).toBe("carol");
    void alice;
  });

  it("carol is busy: NOTIFY 486 ends the subscription, bob stays with alice and the screen says so", () => {
    const { pool, alice, bob, call } = connected({ carol: { onIncoming: (c) => c.reject(486) } });
    call.blindTransfer(`sip:carol@${DOMAIN}`);
    settle(pool);
    expect(notifyBodies(pool)).toEqual(["SIP/2.0 100 Trying", "SIP/2.0 486 Busy Here"]);
    const last = pool.delivered("alice", "NOTIFY").at(-1)!.message;
    expect(header(last, "Subscription-State")).toBe("terminated;reason=noresource");
    expect(progress(alice, call)).toEqual(["requested", "accepted 202", "trying 100", "failed 486"]);
    expect(call.state).toBe("confirmed");
    expect(bob.desk.view()).toMatchObject({ phase: "connected", number: "alice", transfer: "failed" });
    expect(bob.desk.view()?.transferringTo).toBeUndefined();
    expect(bob.keeps()).toBe(1);
    // The original call works as before.
    expect(bob.desk.toggleHold()).toBe(true);
  });

  it("alice hangs up before carol answers: the transfer's call goes on and becomes bob's call", () => {
    const { pool, alice, carol, bob, call } = connected();
    call.blindTransfer(`sip:carol@${DOMAIN}`);
    settle(pool);
    call.hangUp();
    settle(pool);
    expect(bob.desk.view()).toMatchObject({ phase: "ringing", number: "carol", direction: "outgoing" });
    expect(bob.events.some((e) => e.type === "ended")).toBe(false);
    carol.incoming[0]!.answer();
    settle(pool);
    expect(bob.desk.view()).toMatchObject({ phase: "connected", number: "carol" });
    expect(bob.keeps()).toBe(1);
    void alice;
  });

  it("bob hangs up while carol rings: carol's INVITE is cancelled, alice hears 487, then BYE", () => {
    const { pool, alice, carol, bob, call } = connected();
    call.blindTransfer(`sip:carol@${DOMAIN}`);
    settle(pool);
    bob.desk.hangUp();
    settle(pool);
    expect(carol.incoming[0]!.endReason?.reason).toBe("remote-cancelled");
    expect(notifyBodies(pool).at(-1)).toBe("SIP/2.0 487 Request Terminated");
    expect(call.endReason).toEqual({ reason: "remote-hangup" });
    expect(bob.keeps()).toBe(0);
    void alice;
  });

  it("a desk that takes no transfers answers 603", () => {
    const { pool, alice, bob, call } = connected({ acceptTransfers: false });
    call.blindTransfer(`sip:carol@${DOMAIN}`);
    settle(pool);
    expect(pool.delivered("alice", "603 REFER")).toHaveLength(1);
    expect(progress(alice, call)).toEqual(["requested", "failed 603"]);
    expect(bob.desk.view()?.transferringTo).toBeUndefined();
  });
});

describe("DTMF during a call", () => {
  it("digits go to the call's media port as telephone-events and show in the view", () => {
    const { pool, bob } = connected();
    for (const d of ["1", "2", "*", "#"]) expect(bob.desk.sendDigit(d)).toBe(true);
    expect(bob.ports[0]!.digits).toEqual(
      ["1", "2", "*", "#"].map((digit) => ({ digit, durationMs: DTMF_DIGIT_MS })),
    );
    expect(bob.desk.view()?.digits).toBe("12*#");
    expect(bob.desk.sendDigit("A")).toBe(false); // not a keypad key
    expect(bob.desk.sendDigit("x")).toBe(false);
    void pool;
  });

  it("no DTMF before the call is answered; a port that cannot send keeps the digit on screen only", () => {
    const pool = new FakePool();
    const alice = phone(pool, "alice");
    const bob = bobDesk(pool);
    dial(alice, `sip:bob@${DOMAIN}`);
    settle(pool);
    expect(bob.desk.sendDigit("5")).toBe(false);
    expect(bob.desk.view()?.digits).toBe("");
    bob.desk.answer();
    settle(pool);
    bob.ports[0]!.closed = true; // the port refuses now, as the real one does without media
    expect(bob.desk.sendDigit("5")).toBe(false);
    expect(bob.desk.view()?.digits).toBe("5");
  });
});
