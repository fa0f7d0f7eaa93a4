/**
 * INVITE server transaction (RFC 3261 §17.2.1, RFC 6026, §9.2 CANCEL), non-INVITE server
 * transaction (§17.2.2), responses (§8.2.6) and server-side matching (§17.2.3), on a ManualClock.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { TransportError } from "../../firmware/core/errors.ts";
import { Dialog, DialogTable } from "../../firmware/sip/dialog/dialog.ts";
import {
  header,
  headers,
  request,
  type SipRequest,
  type SipResponse,
} from "../../firmware/sip/message/message.ts";
import { buildAck, buildCancel } from "../../firmware/sip/transaction/invite-client.ts";
import {
  InviteServerTransaction,
  type IstOptions,
  type IstUser,
  TIMER_H_MS,
  TIMER_L_MS,
  TRYING_AFTER_MS,
} from "../../firmware/sip/transaction/invite-server.ts";
import { cancelTargetKey, serverKeyOfRequest } from "../../firmware/sip/transaction/matching.ts";
import {
  buildResponse,
  type NistUser,
  NonInviteServerTransaction,
  TIMER_J_UNRELIABLE_MS,
} from "../../firmware/sip/transaction/server-non-invite.ts";

const BRANCH = "z9hG4bKpool77";

/** An INVITE from the pool to the phone. */
function invite(extra: Array<[string, string]> = []): SipRequest {
  return request("INVITE", "sip:10.0.0.2:5061;transport=tls", [
    ["Via", `SIP/2.0/TLS pool.lab.test:5061;branch=${BRANCH}`],
    ["Via", "SIP/2.0/TLS 10.0.0.9:5061;branch=z9hG4bKcaller;received=10.0.0.9"],
    ["Max-Forwards", "69"],
    ["Record-Route", "<sip:pool.lab.test:5061;transport=tls;lr>"],
    ["From", '"Bob" <sip:bob@lab.test>;tag=bob1'],
    ["To", "<sip:4711@lab.test>"],
    ["Call-ID", "in-1"],
    ["CSeq", "101 INVITE"],
    ["Contact", "<sip:bob@10.0.0.9:5061;transport=tls>"],
    ["Timestamp", "54"],
    ...extra,
  ]);
}

const TAG = "phone1";

function harness(opts: Partial<IstOptions> = {}) {
  const clock = new ManualClock();
  const events: string[] = [];
  const sent: SipResponse[] = [];
  const user: IstUser = {
    send: (r) => {
      sent.push(r);
      events.push(`send ${r.status}`);
    },
    onCancelled: (c) => events.push(`cancelled ${c.method}`),
    onAck: (a) => events.push(`ack ${header(a, "CSeq")}`),
    onFailure: (why, err) => events.push(`failure ${why}${err ? ` ${err.code}` : ""}`),
    onTerminated: () => events.push("terminated"),
  };
  const tx = new InviteServerTransaction(invite(), clock, user, { toTag: TAG, ...opts });
  return { clock, events, sent, tx };
}

/** The ACK the caller sends for our non-2xx (same branch: §17.1.1.3). */
function ackFor(res: SipResponse): SipRequest {
  return buildAck(invite(), res);
}

describe("INVITE server transaction: Proceeding and 100 Trying", () => {
  it("sends 100 Trying (no To tag, Timestamp copied) when the TU is silent for 200 ms", () => {
    const { tx, clock, sent } = harness();
    expect(tx.state).toBe("proceeding");
    clock.advance(TRYING_AFTER_MS - 1);
    expect(sent).toHaveLength(0);
    clock.advance(1);
    expect(sent.map((r) => r.status)).toEqual([100]);
    expect(header(sent[0]!, "To")).toBe("<sip:4711@lab.test>");
    expect(header(sent[0]!, "Timestamp")).toBe("54");
    expect(headers(sent[0]!, "Via")).toEqual(headers(invite(), "Via"));
    expect(sent[0]!.reason).toBe("Trying");
    expect(clock.pendingTimers()).toBe(0);
  });

  it("sends no 100 when the TU answers within 200 ms", () => {
    const { tx, clock, sent } = harness();
    clock.advance(150);
    expect(tx.respond(tx.response(180))).toBe(true);
    clock.advance(10_000);
    expect(sent.map((r) => r.status)).toEqual([180]);
    expect(header(sent[0]!, "To")).toBe(`<sip:4711@lab.test>;tag=${TAG}`);
    expect(tx.state).toBe("proceeding");
  });

  it("answers a retransmitted INVITE with the latest provisional, or a 100 at once if none went out", () => {
    const a = harness();
    a.tx.receiveRequest(invite());
    expect(a.sent.map((r) => r.status)).toEqual([100]);
    a.clock.advance(TRYING_AFTER_MS);
    expect(a.sent).toHaveLength(1); // the timer was stopped: no second 100
    a.tx.respond(a.tx.response(180));
    a.tx.respond(a.tx.response(183));
    a.tx.receiveRequest(invite());
    expect(a.sent.map((r) => r.status)).toEqual([100, 180, 183, 183]);
  });

  it("an ACK in Proceeding is ignored", () => {
    const { tx, events } = harness();
    tx.receiveRequest(ackFor(tx.response(486)));
    expect(tx.state).toBe("proceeding");
    expect(events).toEqual([]);
  });

  it("the flow failing in Proceeding is reported", () => {
    const { tx, events, clock } = harness();
    tx.transportFailed(new TransportError("connection-reset", "reset"));
    expect(events).toEqual(["failure transport connection-reset", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
    expect(tx.respond(tx.response(200))).toBe(false);
    tx.transportFailed();
    expect(events).toHaveLength(2);
  });
});

describe("INVITE server transaction: Accepted (RFC 6026)", () => {
  it("2xx from the TU → Accepted; Timer L = 64·T1 → Terminated", () => {
    const { tx, clock, events } = harness();
    tx.respond(tx.response(200));
    expect(tx.state).toBe("accepted");
    expect(TIMER_L_MS).toBe(32_000);
    clock.advance(TIMER_L_MS - 1);
    expect(tx.state).toBe("accepted");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["send 200", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("absorbs retransmitted INVITEs, sends the TU's 2xx retransmissions, refuses non-2xx", () => {
    const { tx, events } = harness();
    tx.respond(tx.response(200));
    tx.receiveRequest(invite());
    expect(tx.respond(tx.response(200))).toBe(true);
    expect(tx.respond(tx.response(180))).toBe(false);
    expect(tx.respond(tx.response(500))).toBe(false);
    expect(events).toEqual(["send 200", "send 200"]);
  });

  it("passes an ACK that matches while Accepted up to the TU", () => {
    const { tx, events } = harness();
    const ok = tx.response(200);
    tx.respond(ok);
    tx.receiveRequest(ackFor(ok));
    expect(events).toEqual(["send 200", "ack 101 ACK"]);
    expect(tx.state).toBe("accepted");
  });

  it("a transport failure in Accepted ends it without a report", () => {
    const { tx, events } = harness();
    tx.respond(tx.response(200));
    tx.transportFailed();
    expect(events).toEqual(["send 200", "terminated"]);
  });
});

describe("INVITE server transaction: Completed and Confirmed", () => {
  it("non-2xx → Completed; retransmitted INVITE gets the final again; ACK → Confirmed → Terminated (I = 0)", () => {
    const { tx, clock, events } = harness();
    const busy = tx.response(486);
    tx.respond(busy);
    expect(tx.state).toBe("completed");
    tx.receiveRequest(invite());
    expect(events).toEqual(["send 486", "send 486"]);
    tx.receiveRequest(ackFor(busy));
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["send 486", "send 486", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("with a Timer I configured, Confirmed absorbs ACK retransmissions until it fires", () => {
    const { tx, clock, events } = harness({ timerIMs: 5000 });
    const busy = tx.response(603);
    tx.respond(busy);
    tx.receiveRequest(ackFor(busy));
    expect(tx.state).toBe("confirmed");
    tx.receiveRequest(ackFor(busy));
    tx.receiveRequest(invite());
    expect(tx.respond(tx.response(200))).toBe(false);
    clock.advance(4999);
    expect(tx.state).toBe("confirmed");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["send 603", "terminated"]);
  });

  it("Timer H = 64·T1 without an ACK: no-ack to the TU, Terminated", () => {
    const { tx, clock, events } = harness();
    tx.respond(tx.response(480));
    expect(TIMER_H_MS).toBe(32_000);
    clock.advance(TIMER_H_MS - 1);
    expect(tx.state).toBe("completed");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["send 480", "failure no-ack", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("refuses a second final response and reports a transport failure in Completed", () => {
    const { tx, events } = harness();
    tx.respond(tx.response(486));
    expect(tx.respond(tx.response(200))).toBe(false);
    tx.transportFailed();
    expect(events).toEqual(["send 486", "failure transport", "terminated"]);
  });

  it("late requests after Terminated are absorbed", () => {
    const { tx, events } = harness();
    const busy = tx.response(486);
    tx.respond(busy);
    tx.receiveRequest(ackFor(busy));
    const n = events.length;
    tx.receiveRequest(invite());
    tx.receiveRequest(ackFor(busy));
    expect(events).toHaveLength(n);
  });
});

describe("INVITE server transaction: CANCEL (§9.2)", () => {
  function cancel(): SipRequest {
    return buildCancel(invite());
  }

  it("in Proceeding: 200 to the CANCEL first, then 487 to the INVITE and onCancelled", () => {
    const { tx, events, sent } = harness();
    tx.respond(tx.response(180));
    const answers: SipResponse[] = [];
    expect(
      tx.cancel(cancel(), (ok) => {
        answers.push(ok);
        events.push(`cancel-answer ${ok.status}`);
      }),
    ).toBe(true);
    expect(events).toEqual(["send 180", "cancel-answer 200", "send 487", "cancelled CANCEL"]);
    expect(tx.state).toBe("completed");
    const ok = answers[0]!;
    expect(header(ok, "CSeq")).toBe("101 CANCEL");
    expect(header(ok, "To")).toBe(`<sip:4711@lab.test>;tag=${TAG}`);
    const terminated = sent[1]!;
    expect(terminated.reason).toBe("Request Terminated");
    expect(header(terminated, "To")).toBe(`<sip:4711@lab.test>;tag=${TAG}`);
    expect(header(terminated, "CSeq")).toBe("101 INVITE");
  });

  it("race: the TU's 200 after the CANCEL is refused; the 487 is ACKed as usual", () => {
    const { tx, events } = harness();
    tx.cancel(cancel(), () => {});
    expect(tx.respond(tx.response(200))).toBe(false);
    tx.receiveRequest(ackFor(tx.lastResponse!));
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["send 487", "cancelled CANCEL", "terminated"]);
  });

  it("race: a CANCEL after the 2xx still gets its 200 but does not touch the INVITE", () => {
    const { tx, events } = harness();
    tx.respond(tx.response(200));
    let answered = 0;
    expect(tx.cancel(cancel(), () => answered++)).toBe(false);
    expect(answered).toBe(1);
    expect(tx.state).toBe("accepted");
    expect(events).toEqual(["send 200"]);
  });

  it("a CANCEL after a non-2xx final has no effect either", () => {
    const { tx, events } = harness();
    tx.respond(tx.response(486));
    expect(tx.cancel(cancel(), () => {})).toBe(false);
    expect(events).toEqual(["send 486"]);
  });

  it("a CANCEL before anything was sent stops the 100 timer", () => {
    const { tx, clock, sent } = harness();
    tx.cancel(cancel(), () => {});
    clock.advance(TRYING_AFTER_MS);
    expect(sent.map((r) => r.status)).toEqual([487]);
  });
});

describe("buildResponse (§8.2.6)", () => {
  it("copies Vias in order, From, Call-ID, CSeq; adds our tag to To except on a 100", () => {
    const r = buildResponse(invite(), 180, { toTag: "t9", headers: [["Contact", "<sip:10.0.0.2>"]] });
    expect(headers(r, "Via")).toEqual(headers(invite(), "Via"));
    expect(header(r, "From")).toBe('"Bob" <sip:bob@lab.test>;tag=bob1');
    expect(header(r, "To")).toBe("<sip:4711@lab.test>;tag=t9");
    expect(header(r, "Call-ID")).toBe("in-1");
    expect(header(r, "CSeq")).toBe("101 INVITE");
    expect(header(r, "Contact")).toBe("<sip:10.0.0.2>");
    expect(header(r, "Timestamp")).toBeUndefined();
    expect(header(buildResponse(invite(), 100, { toTag: "t9" }), "To")).toBe("<sip:4711@lab.test>");
  });

  it("keeps the To tag a request already has (re-INVITE), and takes reason and body", () => {
    const re = invite();
    re.headers = re.headers.map((h) =>
      h.name === "To" ? { ...h, value: "<sip:4711@lab.test>;tag=old" } : h,
    );
    const r = buildResponse(re, 200, { toTag: "new", reason: "Fine", body: "v=0\r\n" });
    expect(header(r, "To")).toBe("<sip:4711@lab.test>;tag=old");
    expect(r.reason).toBe("Fine");
    expect(r.body.toString()).toBe("v=0\r\n");
    expect(buildResponse(re, 299).reason).toBe("");
  });
});

describe("non-INVITE server transaction (§17.2.2)", () => {
  function bye(): SipRequest {
    return request("BYE", "sip:10.0.0.2:5061;transport=tls", [
      ["Via", "SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bKbye1"],
      ["From", "<sip:bob@lab.test>;tag=bob1"],
      ["To", "<sip:4711@lab.test>;tag=phone1"],
      ["Call-ID", "in-1"],
      ["CSeq", "102 BYE"],
    ]);
  }

  function nist(timerJMs?: number) {
    const clock = new ManualClock();
    const events: string[] = [];
    const user: NistUser = {
      send: (r) => events.push(`send ${r.status}`),
      onFailure: (why) => events.push(`failure ${why}`),
      onTerminated: () => events.push("terminated"),
    };
    const tx = new NonInviteServerTransaction(bye(), clock, user, timerJMs);
    return { clock, events, tx };
  }

  it("Trying → final → Terminated at once (Timer J = 0, TLS); a second final is refused", () => {
    const { tx, events, clock } = nist();
    expect(tx.state).toBe("trying");
    tx.receiveRequest(bye()); // absorbed in Trying
    expect(tx.respond(buildResponse(bye(), 200))).toBe(true);
    expect(tx.state).toBe("terminated");
    expect(tx.respond(buildResponse(bye(), 500))).toBe(false);
    expect(events).toEqual(["send 200", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("Trying → 1xx → Proceeding (retransmission gets the 1xx) → final", () => {
    const { tx, events } = nist();
    tx.respond(buildResponse(bye(), 100));
    expect(tx.state).toBe("proceeding");
    tx.receiveRequest(bye());
    tx.respond(buildResponse(bye(), 200));
    expect(events).toEqual(["send 100", "send 100", "send 200", "terminated"]);
    expect(tx.lastResponse?.status).toBe(200);
  });

  it("with Timer J configured, Completed answers retransmissions with the final until J fires", () => {
    const { tx, clock, events } = nist(TIMER_J_UNRELIABLE_MS);
    tx.respond(buildResponse(bye(), 200));
    expect(tx.state).toBe("completed");
    tx.receiveRequest(bye());
    clock.advance(TIMER_J_UNRELIABLE_MS - 1);
    expect(tx.state).toBe("completed");
    clock.advance(1);
    expect(events).toEqual(["send 200", "send 200", "terminated"]);
  });

  it("a transport failure terminates it and tells the TU once", () => {
    const { tx, events } = nist();
    tx.transportFailed();
    tx.transportFailed();
    expect(events).toEqual(["failure transport", "terminated"]);
  });
});

describe("server transaction matching (§17.2.3)", () => {
  it("matches a retransmitted INVITE and the ACK of a non-2xx to the INVITE transaction", () => {
    const key = serverKeyOfRequest(invite());
    expect(key).toBeDefined();
    expect(serverKeyOfRequest(invite())).toBe(key);
    const res = buildResponse(invite(), 486, { toTag: TAG });
    expect(serverKeyOfRequest(buildAck(invite(), res))).toBe(key);
  });

  it("does not match the ACK of a 2xx (new branch, §13.2.2.4) to the INVITE transaction", () => {
    const ack = buildAck(invite(), buildResponse(invite(), 200, { toTag: TAG }));
    ack.headers[0] = { name: "Via", value: "SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bKack2" };
    expect(serverKeyOfRequest(ack)).not.toBe(serverKeyOfRequest(invite()));
  });

  it("gives a CANCEL its own transaction, and names the INVITE it targets", () => {
    const c = buildCancel(invite());
    expect(serverKeyOfRequest(c)).not.toBe(serverKeyOfRequest(invite()));
    expect(cancelTargetKey(c)).toBe(serverKeyOfRequest(invite()));
  });

  it("compares sent-by: the same branch from another host is another transaction", () => {
    const other = invite();
    other.headers[0] = { name: "Via", value: `SIP/2.0/TLS sba.lab.test:5061;branch=${BRANCH}` };
    expect(serverKeyOfRequest(other)).not.toBe(serverKeyOfRequest(invite()));
    const upper = invite();
    upper.headers[0] = { name: "Via", value: `SIP/2.0/TLS POOL.lab.test:5061;branch=${BRANCH}` };
    expect(serverKeyOfRequest(upper)).toBe(serverKeyOfRequest(invite()));
    const noPort = invite();
    noPort.headers[0] = { name: "Via", value: `SIP/2.0/TLS pool.lab.test;branch=${BRANCH}` };
    expect(serverKeyOfRequest(noPort)).not.toBe(serverKeyOfRequest(invite()));
  });

  it("falls back to RFC 2543 matching without the magic cookie; the ACK matches despite its To tag", () => {
    const old = invite();
    old.headers[0] = { name: "Via", value: "SIP/2.0/TLS pool.lab.test:5061;branch=1234" };
    const key = serverKeyOfRequest(old);
    expect(key).toBeDefined();
    const ack = buildAck(old, buildResponse(old, 486, { toTag: TAG }));
    expect(serverKeyOfRequest(ack)).toBe(key);
    expect(cancelTargetKey(buildCancel(old))).toBe(key);
    const other = buildAck(old, buildResponse(old, 486, { toTag: TAG }));
    other.headers = other.headers.map((h) => (h.name === "CSeq" ? { ...h, value: "102 ACK" } : h));
    expect(serverKeyOfRequest(other)).not.toBe(key);
    const noBranch = invite();
    noBranch.headers[0] = { name: "Via", value: "SIP/2.0/TLS pool.lab.test:5061" };
    expect(serverKeyOfRequest(noBranch)).toBeDefined();
    noBranch.headers = noBranch.headers.filter((h) => h.name !== "Call-ID");
    expect(serverKeyOfRequest(noBranch)).toBeUndefined();
  });

  it("has no key for a request without a Via", () => {
    expect(serverKeyOfRequest(request("BYE", "sip:a.test", []))).toBeUndefined();
  });
});

describe("wiring example: the ACK of our 2xx reaches the dialog, not the transaction", () => {
  it("INVITE → IST + UAS dialog → 200 → ACK with a new branch → no transaction matches → the dialog takes it", () => {
    const clock = new ManualClock();
    const transactions = new Map<string, InviteServerTransaction>();
    const table = new DialogTable();
    const inv = invite();
    const key = serverKeyOfRequest(inv)!;
    const ist = new InviteServerTransaction(inv, clock, { send: () => {} }, { toTag: TAG });
    transactions.set(key, ist);
    const dialog = Dialog.asUas(inv, { localTag: TAG, state: "early" });
    table.add(dialog);
    const ok = ist.response(200);
    ist.respond(ok);
    dialog.confirm();
    const ack = request("ACK", "sip:10.0.0.2:5061;transport=tls", [
      ["Via", "SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bKack2xx"],
      ["From", header(ok, "From")!],
      ["To", header(ok, "To")!],
      ["Call-ID", "in-1"],
      ["CSeq", "101 ACK"],
    ]);
    expect(transactions.get(serverKeyOfRequest(ack)!)).toBeUndefined();
    expect(table.route(ack)).toEqual({ kind: "dialog", dialog });
    // And a CANCEL arriving now finds the INVITE transaction, which no longer changes anything.
    const c = buildCancel(inv);
    expect(transactions.get(cancelTargetKey(c)!)).toBe(ist);
    expect(ist.cancel(c, () => {})).toBe(false);
  });
});
