/**
 * INVITE client transaction (RFC 3261 §17.1.1, RFC 6026 Accepted, §9.1 CANCEL) and client-side
 * transaction matching (§17.1.3), on a ManualClock: every state, every timer, the ACK and CANCEL
 * it builds, late responses and the CANCEL races.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import { TransportError } from "../../firmware/core/errors.ts";
import { Dialog, dialogIdOfResponse } from "../../firmware/sip/dialog/dialog.ts";
import {
  header,
  headers,
  request,
  type SipRequest,
  type SipResponse,
} from "../../firmware/sip/message/message.ts";
import {
  buildAck,
  buildCancel,
  CANCEL_WAIT_MS,
  type IctTimers,
  type IctUser,
  InviteClientTransaction,
  TIMER_B_MS,
  TIMER_M_MS,
} from "../../firmware/sip/transaction/invite-client.ts";
import {
  branchOf,
  clientKey,
  clientKeyOfRequest,
  clientKeyOfResponse,
  isRfc3261Branch,
  topVia,
} from "../../firmware/sip/transaction/matching.ts";
import { buildResponse } from "../../firmware/sip/transaction/server-non-invite.ts";

const BRANCH = "z9hG4bKinv0001";

function invite(): SipRequest {
  return request(
    "INVITE",
    "sip:bob@lab.test",
    [
      ["Via", `SIP/2.0/TLS 10.0.0.2:5061;branch=${BRANCH};rport`],
      ["Max-Forwards", "70"],
      ["Route", "<sip:pool.lab.test:5061;transport=tls;lr>"],
      ["Route", "<sip:edge.lab.test;lr>"],
      ["From", "<sip:4711@lab.test>;tag=caller1;epid=01234567ab"],
      ["To", "<sip:bob@lab.test>"],
      ["Call-ID", "call-1@10.0.0.2"],
      ["CSeq", "7 INVITE"],
      ["Contact", "<sip:10.0.0.2:5061;transport=tls>"],
      ["Content-Type", "application/sdp"],
    ],
    "v=0\r\n",
  );
}

/** A response to our INVITE as the far end would send it. */
function answer(status: number, toTag: string | undefined = "callee1", req = invite()): SipResponse {
  const res = buildResponse(req, status, toTag ? { toTag } : {});
  return res;
}

function cancelOk(req = invite()): SipResponse {
  return buildResponse(buildCancel(req), 200, { toTag: "callee1" });
}

function harness(timers: IctTimers = {}) {
  const clock = new ManualClock();
  const events: string[] = [];
  const sent: SipRequest[] = [];
  const cancels: SipRequest[] = [];
  const user: IctUser = {
    send: (r) => {
      sent.push(r);
      events.push(`send ${r.method}`);
    },
    sendCancel: (c) => {
      cancels.push(c);
      events.push("cancel");
    },
    onProvisional: (r) => events.push(`provisional ${r.status}`),
    onSuccess: (r) => events.push(`success ${r.status} ${header(r, "To")}`),
    onRejected: (r) => events.push(`rejected ${r.status}`),
    onFailure: (why, err) => events.push(`failure ${why}${err ? ` ${err.code}` : ""}`),
    onTerminated: () => events.push("terminated"),
  };
  const tx = new InviteClientTransaction(BRANCH, invite(), clock, user, timers);
  return { clock, events, sent, cancels, tx, user };
}

describe("INVITE client transaction: Calling", () => {
  it("starts in Calling with Timer B = 64·T1 armed and nothing sent by itself", () => {
    const { tx, clock, events } = harness();
    expect(tx.state).toBe("calling");
    expect(TIMER_B_MS).toBe(32_000);
    expect(clock.nextTimerIn()).toBe(32_000);
    expect(events).toEqual([]);
  });

  it("Timer B fires in Calling: timeout to the TU, Terminated", () => {
    const { tx, clock, events } = harness();
    clock.advance(TIMER_B_MS - 1);
    expect(tx.state).toBe("calling");
    expect(events).toEqual([]);
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["failure timeout", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a 1xx moves to Proceeding and stops Timer B (a ringing call has no transaction timeout)", () => {
    const { tx, clock, events } = harness();
    clock.advance(1000);
    tx.receive(answer(100, undefined));
    expect(tx.state).toBe("proceeding");
    expect(clock.pendingTimers()).toBe(0);
    tx.receive(answer(180));
    tx.receive(answer(183));
    expect(tx.state).toBe("proceeding");
    clock.advance(10 * TIMER_B_MS);
    expect(tx.state).toBe("proceeding");
    expect(events).toEqual(["provisional 100", "provisional 180", "provisional 183"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a 2xx in Calling moves to Accepted", () => {
    const { tx, events } = harness();
    tx.receive(answer(200));
    expect(tx.state).toBe("accepted");
    expect(events).toEqual(["success 200 <sip:bob@lab.test>;tag=callee1"]);
  });

  it("a non-2xx in Calling is ACKed and passed up, then Terminated at once (Timer D = 0, TLS)", () => {
    const { tx, clock, events, sent } = harness();
    tx.receive(answer(503));
    expect(events).toEqual(["send ACK", "rejected 503", "terminated"]);
    expect(tx.state).toBe("terminated");
    expect(sent[0]).toBe(tx.ack);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("the flow failing in Calling reports transport", () => {
    const { tx, clock, events } = harness();
    tx.transportFailed(new TransportError("connection-reset", "reset"));
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["failure transport connection-reset", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
    tx.transportFailed();
    expect(events).toHaveLength(2);
  });
});

describe("INVITE client transaction: Proceeding", () => {
  it("2xx → Accepted; non-2xx → Completed with ACK", () => {
    const a = harness();
    a.tx.receive(answer(180));
    a.tx.receive(answer(200));
    expect(a.tx.state).toBe("accepted");
    const b = harness();
    b.tx.receive(answer(180));
    b.tx.receive(answer(486));
    expect(b.events).toEqual(["provisional 180", "send ACK", "rejected 486", "terminated"]);
  });

  it("the flow failing in Proceeding reports transport", () => {
    const { tx, events } = harness();
    tx.receive(answer(180));
    tx.transportFailed();
    expect(events).toEqual(["provisional 180", "failure transport", "terminated"]);
  });
});

describe("INVITE client transaction: Accepted (RFC 6026)", () => {
  it("passes every 2xx up (retransmissions and other forks) and absorbs 1xx and non-2xx", () => {
    const { tx, events } = harness();
    tx.receive(answer(200));
    tx.receive(answer(200)); // retransmission: the TU ACKs it again
    tx.receive(answer(200, "fork2")); // another fork answered: the TU ACKs and BYEs it
    tx.receive(answer(180));
    tx.receive(answer(486, "fork3"));
    expect(events).toEqual([
      "success 200 <sip:bob@lab.test>;tag=callee1",
      "success 200 <sip:bob@lab.test>;tag=callee1",
      "success 200 <sip:bob@lab.test>;tag=fork2",
    ]);
    expect(tx.state).toBe("accepted");
  });

  it("Timer M = 64·T1 ends Accepted; a 2xx after that is absorbed", () => {
    const { tx, clock, events } = harness();
    tx.receive(answer(200));
    expect(TIMER_M_MS).toBe(32_000);
    clock.advance(TIMER_M_MS - 1);
    expect(tx.state).toBe("accepted");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    tx.receive(answer(200));
    expect(events).toEqual(["success 200 <sip:bob@lab.test>;tag=callee1", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a transport failure in Accepted ends it without a failure report (the 2xx was delivered)", () => {
    const { tx, events, clock } = harness();
    tx.receive(answer(200));
    tx.transportFailed();
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["success 200 <sip:bob@lab.test>;tag=callee1", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("INVITE client transaction: Completed", () => {
  it("with a Timer D configured, retransmitted finals are ACKed again and not passed up", () => {
    const { tx, clock, events, sent } = harness({ timerDMs: 32_000 });
    tx.receive(answer(486));
    expect(tx.state).toBe("completed");
    tx.receive(answer(486));
    tx.receive(answer(200)); // no 2xx can follow a non-2xx from the same server: absorbed
    tx.receive(answer(180));
    expect(events).toEqual(["send ACK", "rejected 486", "send ACK"]);
    expect(sent[1]).toBe(sent[0]);
    clock.advance(31_999);
    expect(tx.state).toBe("completed");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events.at(-1)).toBe("terminated");
  });

  it("a transport failure in Completed ends it silently", () => {
    const { tx, events } = harness({ timerDMs: 32_000 });
    tx.receive(answer(486));
    tx.transportFailed();
    expect(events).toEqual(["send ACK", "rejected 486", "terminated"]);
  });

  it("a TU that abandons the transaction from onRejected leaves no Timer D behind", () => {
    const clock = new ManualClock();
    const events: string[] = [];
    const user: IctUser = {
      send: () => events.push("ack"),
      sendCancel: () => {},
      onSuccess: () => {},
      onRejected: () => tx.abandon(),
      onFailure: () => events.push("failure"),
      onTerminated: () => events.push("terminated"),
    };
    const tx: InviteClientTransaction = new InviteClientTransaction(BRANCH, invite(), clock, user, {
      timerDMs: 32_000,
    });
    tx.receive(answer(486));
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["ack", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("INVITE client transaction: late and foreign responses", () => {
  it("absorbs everything after Terminated", () => {
    const { tx, events } = harness();
    tx.receive(answer(486));
    const n = events.length;
    tx.receive(answer(486));
    tx.receive(answer(200));
    tx.receive(answer(180));
    expect(events).toHaveLength(n);
  });

  it("ignores responses on the same branch for another method (the CANCEL's 200)", () => {
    const { tx, events } = harness();
    tx.receive(answer(180));
    tx.receive(cancelOk());
    expect(tx.state).toBe("proceeding");
    expect(events).toEqual(["provisional 180"]);
  });

  it("abandon() terminates without a failure report and stops its timers", () => {
    const { tx, clock, events } = harness();
    tx.abandon();
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });
});

describe("the ACK of a non-2xx final (§17.1.1.3)", () => {
  it("copies Request-URI, Call-ID, From, CSeq number, top Via and Route; To from the response", () => {
    const { tx, sent } = harness();
    tx.receive(answer(486, "busy9"));
    const ack = sent[0]!;
    expect(ack.method).toBe("ACK");
    expect(ack.uri).toBe("sip:bob@lab.test");
    expect(headers(ack, "Via")).toEqual([`SIP/2.0/TLS 10.0.0.2:5061;branch=${BRANCH};rport`]);
    expect(headers(ack, "Route")).toEqual([
      "<sip:pool.lab.test:5061;transport=tls;lr>",
      "<sip:edge.lab.test;lr>",
    ]);
    expect(header(ack, "From")).toBe("<sip:4711@lab.test>;tag=caller1;epid=01234567ab");
    expect(header(ack, "To")).toBe("<sip:bob@lab.test>;tag=busy9");
    expect(header(ack, "Call-ID")).toBe("call-1@10.0.0.2");
    expect(header(ack, "CSeq")).toBe("7 ACK");
    expect(header(ack, "Max-Forwards")).toBe("70");
    expect(header(ack, "Contact")).toBeUndefined();
    expect(ack.body.length).toBe(0);
  });

  it("keeps only the first via-parm when the top Via line lists several", () => {
    const req = invite();
    req.headers[0] = {
      name: "Via",
      value: `SIP/2.0/TLS a.test;branch=${BRANCH}, SIP/2.0/TLS b.test;branch=z9hG4bKx`,
    };
    expect(headers(buildAck(req, answer(486)), "Via")).toEqual([`SIP/2.0/TLS a.test;branch=${BRANCH}`]);
  });
});

describe("CANCEL (§9.1)", () => {
  it("is built with the INVITE's Request-URI, Via branch, From, To (no tag), Call-ID, CSeq number and Route", () => {
    const c = buildCancel(invite(), [["Reason", 'SIP;cause=487;text="cancelled"']]);
    expect(c.method).toBe("CANCEL");
    expect(c.uri).toBe("sip:bob@lab.test");
    expect(branchOf(c)).toBe(BRANCH);
    expect(headers(c, "Via")).toHaveLength(1);
    expect(header(c, "To")).toBe("<sip:bob@lab.test>");
    expect(header(c, "From")).toBe("<sip:4711@lab.test>;tag=caller1;epid=01234567ab");
    expect(header(c, "CSeq")).toBe("7 CANCEL");
    expect(headers(c, "Route")).toHaveLength(2);
    expect(header(c, "Reason")).toBe('SIP;cause=487;text="cancelled"');
    expect(c.body.length).toBe(0);
  });

  it("asked for in Calling waits for the first provisional, then goes out once", () => {
    const { tx, events, cancels } = harness();
    expect(tx.cancel()).toBe("pending");
    expect(tx.cancel()).toBe("pending");
    expect(cancels).toHaveLength(0);
    expect(tx.cancelState).toBe("pending");
    tx.receive(answer(100, undefined));
    expect(cancels).toHaveLength(1);
    expect(tx.cancelState).toBe("sent");
    tx.receive(answer(180));
    expect(tx.cancel()).toBe("sent");
    expect(cancels).toHaveLength(1);
    tx.receive(answer(487));
    expect(events).toEqual([
      "provisional 100",
      "cancel",
      "provisional 180",
      "send ACK",
      "rejected 487",
      "terminated",
    ]);
  });

  it("asked for in Proceeding goes out at once, with extra headers", () => {
    const { tx, cancels } = harness();
    tx.receive(answer(180));
    expect(tx.cancel([["Reason", "SIP;cause=200"]])).toBe("sent");
    expect(header(cancels[0]!, "Reason")).toBe("SIP;cause=200");
  });

  it("may be asked for from the TU's onProvisional without going out twice", () => {
    const clock = new ManualClock();
    let sentCancels = 0;
    const user: IctUser = {
      send: () => {},
      sendCancel: () => sentCancels++,
      onProvisional: () => tx.cancel(),
      onSuccess: () => {},
      onRejected: () => {},
      onFailure: () => {},
    };
    const tx: InviteClientTransaction = new InviteClientTransaction(BRANCH, invite(), clock, user);
    tx.cancel();
    tx.receive(answer(180));
    expect(sentCancels).toBe(1);
  });

  it("is not sent after a final response", () => {
    const a = harness();
    a.tx.receive(answer(200));
    expect(a.tx.cancel()).toBe("too-late");
    const b = harness({ timerDMs: 1000 });
    b.tx.receive(answer(486));
    expect(b.tx.cancel()).toBe("too-late");
    expect(a.cancels.length + b.cancels.length).toBe(0);
  });

  it("race: a 2xx before any provisional drops the pending CANCEL; the 2xx is passed up", () => {
    const { tx, events, cancels } = harness();
    tx.cancel();
    tx.receive(answer(200));
    expect(cancels).toHaveLength(0);
    expect(tx.state).toBe("accepted");
    expect(events).toEqual(["success 200 <sip:bob@lab.test>;tag=callee1"]);
    // The TU still knows it wanted the call gone: it ACKs this 2xx and sends BYE.
    expect(tx.cancelState).toBe("pending");
  });

  it("race: a 200 to the INVITE after the CANCEL went out moves to Accepted as usual", () => {
    const { tx, clock, events } = harness();
    tx.receive(answer(180));
    tx.cancel();
    tx.receive(cancelOk());
    tx.receive(answer(200));
    expect(tx.state).toBe("accepted");
    expect(tx.cancelState).toBe("sent");
    expect(events).toEqual(["provisional 180", "cancel", "success 200 <sip:bob@lab.test>;tag=callee1"]);
    // The §9.1 wait was stopped by the final response; only Timer M remains.
    expect(clock.pendingTimers()).toBe(1);
    clock.advance(CANCEL_WAIT_MS);
    expect(events.at(-1)).toBe("terminated");
    expect(events).not.toContain("failure cancel-timeout");
  });

  it("no final response within 64·T1 of the CANCEL: the INVITE is given up", () => {
    const { tx, clock, events } = harness();
    tx.receive(answer(180));
    clock.advance(60_000);
    tx.cancel();
    clock.advance(CANCEL_WAIT_MS - 1);
    expect(tx.state).toBe("proceeding");
    clock.advance(1);
    expect(tx.state).toBe("terminated");
    expect(events).toEqual(["provisional 180", "cancel", "failure cancel-timeout", "terminated"]);
    expect(clock.pendingTimers()).toBe(0);
  });

  it("Timer B still ends Calling while a CANCEL waits for a provisional", () => {
    const { tx, clock, events, cancels } = harness();
    tx.cancel();
    clock.advance(TIMER_B_MS);
    expect(events).toEqual(["failure timeout", "terminated"]);
    expect(cancels).toHaveLength(0);
    expect(tx.state).toBe("terminated");
  });
});

describe("client transaction matching (§17.1.3)", () => {
  it("keys a request and its responses by branch and method", () => {
    const req = invite();
    expect(clientKeyOfRequest(req)).toBe(clientKey(BRANCH, "INVITE"));
    expect(clientKeyOfResponse(answer(180))).toBe(clientKeyOfRequest(req));
    expect(clientKeyOfResponse(answer(200))).toBe(clientKeyOfRequest(req));
  });

  it("gives the CANCEL (same branch) a transaction of its own", () => {
    const c = buildCancel(invite());
    expect(clientKeyOfRequest(c)).not.toBe(clientKeyOfRequest(invite()));
    expect(clientKeyOfResponse(cancelOk())).toBe(clientKeyOfRequest(c));
  });

  it("method comparison ignores case; no Via or CSeq → no key", () => {
    expect(clientKey(BRANCH, "invite")).toBe(clientKey(BRANCH, "INVITE"));
    const res = answer(200);
    res.headers = res.headers.filter((h) => h.name !== "CSeq");
    expect(clientKeyOfResponse(res)).toBeUndefined();
    const bad = answer(200);
    bad.headers = bad.headers.map((h) => (h.name === "CSeq" ? { ...h, value: "x INVITE" } : h));
    expect(clientKeyOfResponse(bad)).toBeUndefined();
    const noVia = request("OPTIONS", "sip:a.test", []);
    expect(clientKeyOfRequest(noVia)).toBeUndefined();
    expect(topVia(noVia)).toBeUndefined();
    const badVia = request("OPTIONS", "sip:a.test", [["Via", "garbage"]]);
    expect(branchOf(badVia)).toBeUndefined();
  });

  it("recognises RFC 3261 branches by the magic cookie", () => {
    expect(isRfc3261Branch("z9hG4bK776asdhds")).toBe(true);
    expect(isRfc3261Branch("z9hG4bK")).toBe(false);
    expect(isRfc3261Branch("776asdhds")).toBe(false);
    expect(isRfc3261Branch(undefined)).toBe(false);
  });
});

describe("wiring example: the TU ACKs every 2xx through the dialog (§13.2.2.4)", () => {
  it("a 2xx retransmitted after our ACK is ACKed again with the same ACK; a second fork gets its own", () => {
    const clock = new ManualClock();
    const dialogs = new Map<string, { dialog: Dialog; ack: SipRequest }>();
    const wire: string[] = [];
    const inv = invite();
    const user: IctUser = {
      send: (r) => wire.push(`${r.method} (transaction)`),
      sendCancel: () => {},
      onSuccess: (res) => {
        const id = dialogIdOfResponse(res)!;
        let entry = dialogs.get(id.remoteTag);
        if (!entry) {
          const dialog = Dialog.asUac(inv, res)!;
          // The core would add a Via with a fresh branch: the ACK of a 2xx is its own transaction.
          entry = {
            dialog,
            ack: dialog.createAck(inv, { via: `SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKack${id.remoteTag}` }),
          };
          dialogs.set(id.remoteTag, entry);
        }
        wire.push(`ACK ${header(entry.ack, "CSeq")} to ${header(entry.ack, "To")}`);
      },
      onRejected: () => {},
      onFailure: () => {},
    };
    const tx = new InviteClientTransaction(BRANCH, inv, clock, user);
    tx.receive(answer(180));
    tx.receive(answer(200));
    clock.advance(500);
    tx.receive(answer(200)); // our ACK was lost or slow: the retransmission is ACKed again
    tx.receive(answer(200, "fork2"));
    expect(wire).toEqual([
      "ACK 7 ACK to <sip:bob@lab.test>;tag=callee1",
      "ACK 7 ACK to <sip:bob@lab.test>;tag=callee1",
      "ACK 7 ACK to <sip:bob@lab.test>;tag=fork2",
    ]);
    expect(dialogs.size).toBe(2);
    expect(branchOf(dialogs.get("callee1")!.ack)).not.toBe(BRANCH);
  });
});
