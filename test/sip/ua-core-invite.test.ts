/**
 * The user-agent core carrying calls: INVITE client and server transactions, CANCEL, the ACK of
 * 2xx, dialogs and their routing, and TLS-DSK on all of it — two cores on the fake pool of
 * call-rig.ts, which checks every message a core sends against that core's real
 * SecurityAssociation and signs what it delivers as the server would.
 */
import { describe, expect, it } from "vitest";
import { header, request, type SipRequest, setHeader } from "../../firmware/sip/message/message.ts";
import { branchOf } from "../../firmware/sip/transaction/matching.ts";
import type {
  Dialog,
  DialogUser,
  IncomingInvite,
  InviteClientUser,
  ServerRequest,
  UserAgentCore,
} from "../../firmware/sip/user-agent-core.ts";
import { bareCore, FakePool, settle } from "./call-rig.ts";

let calls = 0;

function invite(from: string, to: string): SipRequest {
  calls++;
  return request(
    "INVITE",
    `sip:${to}@lab.test`,
    [
      ["Max-Forwards", "70"],
      ["From", `<sip:${from}@lab.test>;tag=${from}${calls}`],
      ["To", `<sip:${to}@lab.test>`],
      ["Call-ID", `call-${calls}`],
      ["CSeq", "1 INVITE"],
      ["Contact", `<sip:${from}@lab.test;gruu>`],
      ["Content-Type", "application/sdp"],
    ],
    "v=0\r\n",
  );
}

const BOB_CONTACT: [string, string] = ["Contact", "<sip:bob@lab.test;gruu>"];

/** A dialog owner that records and (by default) answers 200. */
function owner(autoAnswer = true) {
  const log: string[] = [];
  const requests: Array<ServerRequest | IncomingInvite> = [];
  const user: DialogUser = {
    onRequest: (tx) => {
      log.push(`request ${tx.request.method}`);
      requests.push(tx);
      if (autoAnswer)
        tx.respond(200, tx.kind === "invite" ? { headers: [BOB_CONTACT], body: "v=0\r\n" } : {});
    },
    onAck: (ack) => log.push(`ack ${header(ack, "CSeq")}`),
    onTransportLost: (e) => log.push(`lost ${e.code}`),
  };
  return { log, requests, user };
}

/** An INVITE client user that records. */
function client() {
  const events: string[] = [];
  const dialogs: Dialog[] = [];
  const user: InviteClientUser = {
    onProvisional: (r, d) => {
      events.push(`${r.status}${d ? ` ${d.state}` : ""}`);
      if (d) dialogs.push(d);
    },
    onSuccess: (r, d, info) => {
      events.push(
        `${r.status} ${d.state}${info.retransmission ? " again" : ""}${info.afterCancel ? " after-cancel" : ""}`,
      );
      dialogs.push(d);
    },
    onRejected: (r) => events.push(`rejected ${r.status}`),
    onFailure: (why) => events.push(`failure ${why}`),
  };
  return { events, dialogs, user };
}

/** alice INVITEs bob, bob's handler keeps the IncomingInvite and binds `bobOwner`. */
function rig() {
  const pool = new FakePool();
  const alice = bareCore(pool, "alice");
  const bob = bareCore(pool, "bob");
  const bobOwner = owner();
  const incoming: IncomingInvite[] = [];
  bob.core.onInvite((i) => {
    i.owner = bobOwner.user;
    incoming.push(i);
  });
  const al = client();
  const aliceOwner = owner();
  const start = () => alice.core.sendInvite(invite("alice", "bob"), al.user, aliceOwner.user);
  return { pool, alice, bob, bobOwner, incoming, al, aliceOwner, start };
}

function established() {
  const r = rig();
  r.start();
  settle(r.pool);
  r.incoming[0]!.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
  settle(r.pool);
  const aliceDialog = r.al.dialogs[0]!;
  return { ...r, aliceDialog };
}

describe("INVITE, provisional, 2xx, ACK", () => {
  it("makes the early and then the confirmed dialog on both sides; the ACK has a fresh branch and reaches the UAS's dialog", () => {
    const { pool, alice, bob, bobOwner, incoming, al, start } = rig();
    const out = start();
    settle(pool);
    const inc = incoming[0]!;
    expect(inc.dialog).toBeUndefined();
    expect(inc.respond(180, { headers: [BOB_CONTACT] })).toBe(true);
    settle(pool);
    expect(inc.dialog?.state).toBe("early");
    expect(al.events).toEqual(["180 early"]);
    inc.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
    settle(pool);
    expect(al.events).toEqual(["180 early", "200 confirmed"]);
    expect(al.dialogs[0]).toBe(al.dialogs[1]); // the early dialog became the confirmed one
    expect(inc.dialog?.state).toBe("confirmed");
    const ack = pool.delivered("bob", "ACK")[0]!.message as SipRequest;
    expect(branchOf(ack)).not.toBe(branchOf(out.request));
    expect(header(ack, "CSeq")).toBe("1 ACK");
    expect(ack.uri).toBe("sip:bob@lab.test;gruu"); // the 2xx's Contact, the dialog's remote target
    expect(bobOwner.log).toEqual(["ack 1 ACK"]);
    // Every message both cores sent carried a signature the pool verified.
    expect(pool.refused).toEqual([]);
    expect(pool.trace()).toEqual([
      "alice→bob INVITE",
      "bob→alice 180 INVITE",
      "bob→alice 200 INVITE",
      "alice→bob ACK",
    ]);
    // The ACK stopped the 2xx retransmissions; Timers M and L end both transactions.
    settle(pool, 40_000);
    expect(pool.delivered("alice", "200 INVITE")).toHaveLength(1);
    expect(alice.core.pending).toBe(0);
    expect(bob.core.callState).toEqual({ serverTransactions: 0, dialogs: 1, awaitingAck: 0 });
    expect(alice.core.callState).toEqual({ serverTransactions: 0, dialogs: 1, awaitingAck: 0 });
  });

  it("sends a signed 100 Trying (no To tag) when the UAS says nothing for 200 ms", () => {
    const { pool, incoming, start } = rig();
    const out = start();
    settle(pool, 199);
    expect(pool.delivered("alice", "100 INVITE")).toHaveLength(0);
    settle(pool, 1);
    const trying = pool.delivered("alice", "100 INVITE");
    expect(trying).toHaveLength(1);
    expect(header(trying[0]!.message, "To")).toBe("<sip:bob@lab.test>");
    expect(pool.refused).toEqual([]); // signed by bob: the pool verified it
    expect(out.state).toBe("proceeding");
    expect(incoming[0]!.state).toBe("proceeding");
  });

  it("retransmits the 2xx at T1, 2·T1 … T2 while no ACK comes, ACKs each, and gives up after 64·T1", () => {
    const { pool, incoming, start } = rig();
    pool.tamper = (m) => (m.kind === "request" && m.method === "ACK" ? "drop" : "pass");
    start();
    settle(pool);
    const inc = incoming[0]!;
    let timedOut = -1;
    inc.onAckTimeout = () => {
      timedOut = pool.clock.monotonic();
    };
    const t0 = pool.clock.monotonic();
    inc.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
    settle(pool, 40_000);
    const sent = pool.wire.filter((e) => e.from === "bob" && e.what === "200 INVITE").map((e) => e.at - t0);
    expect(sent).toEqual([0, 500, 1500, 3500, 7500, 11500, 15500, 19500, 23500, 27500, 31500]);
    expect(timedOut - t0).toBe(32_000);
    // alice answered every one with the same ACK (same branch), signed anew each time.
    const acks = pool.wire.filter((e) => e.from === "alice" && e.what === "ACK");
    expect(acks).toHaveLength(11);
    expect(new Set(acks.map((e) => branchOf(e.message)))).toHaveProperty("size", 1);
    expect(pool.refused).toEqual([]);
  });

  it("hands a 2xx from a second fork up as a dialog of its own, and ACKs it", () => {
    const { pool, al, incoming, start } = rig();
    start();
    settle(pool);
    incoming[0]!.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
    settle(pool);
    const first = pool.delivered("alice", "200 INVITE")[0]!.message;
    const fork = structuredClone(first);
    setHeader(fork, "To", `${header(first, "To")!.replace(/tag=[^;]+/, "tag=fork2")}`);
    setHeader(fork, "Contact", "<sip:bob@lab.test;gruu;fork=2>");
    pool.inject("alice", fork);
    settle(pool);
    expect(al.events).toEqual(["200 confirmed", "200 confirmed"]);
    expect(al.dialogs[0]).not.toBe(al.dialogs[1]);
    expect(al.dialogs[1]!.id.remoteTag).toBe("fork2");
    expect(pool.delivered("bob", "ACK").map((e) => (e.message as SipRequest).uri)).toEqual([
      "sip:bob@lab.test;gruu",
      "sip:bob@lab.test;gruu;fork=2",
    ]);
  });
});

describe("CANCEL", () => {
  it("waits for the first provisional, is its own transaction, and ends the INVITE with 487 (ACKed)", () => {
    const { pool, bob, alice, incoming, al, start } = rig();
    const out = start();
    expect(out.cancel()).toBe("pending"); // no provisional yet (§9.1)
    settle(pool);
    expect(pool.trace()).toEqual(["alice→bob INVITE"]);
    const inc = incoming[0]!;
    const cancelled: string[] = [];
    inc.onCancelled = (c) => cancelled.push(c.method);
    inc.respond(180, { headers: [BOB_CONTACT] });
    settle(pool);
    expect(pool.trace()).toEqual([
      "alice→bob INVITE",
      "bob→alice 180 INVITE",
      "alice→bob CANCEL",
      "bob→alice 200 CANCEL",
      "bob→alice 487 INVITE",
      "alice→bob ACK",
    ]);
    const cancel = pool.delivered("bob", "CANCEL")[0]!.message;
    expect(branchOf(cancel)).toBe(branchOf(out.request)); // same branch, another transaction
    expect(al.events).toEqual(["180 early", "rejected 487"]); // the CANCEL's 200 did not end the INVITE
    expect(cancelled).toEqual(["CANCEL"]);
    expect(pool.refused).toEqual([]);
    expect(alice.core.pending).toBe(0);
    expect(bob.core.callState).toEqual({ serverTransactions: 0, dialogs: 0, awaitingAck: 0 });
    expect(alice.core.callState.dialogs).toBe(0); // the early dialog ended with the INVITE
  });

  it("a 2xx that crosses the CANCEL is ACKed and then hung up with BYE", () => {
    const { pool, bobOwner, incoming, al, start } = rig();
    const out = start();
    settle(pool);
    const inc = incoming[0]!;
    let cancelled = false;
    inc.onCancelled = () => {
      cancelled = true;
    };
    inc.respond(180, { headers: [BOB_CONTACT] });
    settle(pool);
    // Both at the same instant: the 200 and the CANCEL are on the wire together.
    expect(out.cancel()).toBe("sent");
    inc.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
    settle(pool);
    expect(pool.trace().slice(2)).toEqual([
      "alice→bob CANCEL",
      "bob→alice 200 INVITE",
      "bob→alice 200 CANCEL", // the INVITE had its final answer: no 487
      "alice→bob ACK",
      "alice→bob BYE",
      "bob→alice 200 BYE",
    ]);
    expect(al.events).toEqual(["180 early", "200 terminated after-cancel"]); // ACKed, BYE sent, released
    expect(cancelled).toBe(false);
    expect(bobOwner.log).toEqual(["ack 1 ACK", "request BYE"]);
    expect(pool.refused).toEqual([]);
  });

  it("answers 481 to a CANCEL that matches no INVITE", () => {
    const { pool, alice, start } = rig();
    const out = start();
    settle(pool);
    const stray = structuredClone(out.request);
    stray.method = "CANCEL";
    setHeader(stray, "CSeq", "1 CANCEL");
    setHeader(stray, "Via", `SIP/2.0/TLS 10.0.1.1:5061;branch=${alice.core.newBranch()}`);
    alice.core.sendRequest(stray, { onFinal: () => {}, onFailure: () => {} });
    settle(pool);
    expect(pool.trace().at(-1)).toBe("bob→alice 481 CANCEL");
  });
});

describe("requests by dialog", () => {
  function inDialog(core: UserAgentCore, method: string, to: string, extra: Array<[string, string]> = []) {
    const req = request(method, "sip:bob@lab.test", [
      ["Via", `SIP/2.0/TLS 10.0.1.1:5061;branch=${core.newBranch()}`],
      ["Max-Forwards", "70"],
      ["From", "<sip:alice@lab.test>;tag=a1"],
      ["To", to],
      ["Call-ID", "not-a-call"],
      ["CSeq", `7 ${method}`],
      ...extra,
    ]);
    core.sendRequest(req, { onFinal: () => {}, onFailure: () => {} });
  }

  it("answers 481 to a request for a dialog it does not have, and drops such an ACK", () => {
    const { pool, alice } = rig();
    inDialog(alice.core, "BYE", "<sip:bob@lab.test>;tag=gone");
    inDialog(alice.core, "INFO", "<sip:bob@lab.test>;tag=gone");
    const ack = request("ACK", "sip:bob@lab.test", [
      ["Via", `SIP/2.0/TLS 10.0.1.1:5061;branch=${alice.core.newBranch()}`],
      ["From", "<sip:alice@lab.test>;tag=a1"],
      ["To", "<sip:bob@lab.test>;tag=gone"],
      ["Call-ID", "not-a-call"],
      ["CSeq", "7 ACK"],
      ["Max-Forwards", "70"],
    ]);
    alice.core.sendRequest(ack, { onFinal: () => {}, onFailure: () => {} });
    settle(pool);
    expect(pool.trace()).toEqual([
      "alice→bob BYE",
      "alice→bob INFO",
      "alice→bob ACK",
      "bob→alice 481 BYE",
      "bob→alice 481 INFO",
    ]);
  });

  it("leaves Lync's registration NOTIFY and BENOTIFY (To tag, no dialog) to today's handlers: never 481", () => {
    const { pool, alice, bob } = rig();
    const seen: string[] = [];
    bob.core.addRequestHandler((r) => {
      if (/^(BE)?NOTIFY$/.test(r.method) && header(r, "Event") === "registration-notify") {
        seen.push(r.method);
        return { status: 200 };
      }
      return undefined;
    });
    const tagged = "<sip:bob@lab.test>;tag=registertag";
    inDialog(alice.core, "NOTIFY", tagged, [["Event", "registration-notify"]]);
    inDialog(alice.core, "BENOTIFY", tagged, [["Event", "registration-notify"]]);
    inDialog(alice.core, "OPTIONS", tagged);
    settle(pool);
    expect(seen).toEqual(["NOTIFY", "BENOTIFY"]);
    expect(pool.trace()).toEqual([
      "alice→bob NOTIFY",
      "alice→bob BENOTIFY",
      "alice→bob OPTIONS",
      "bob→alice 200 NOTIFY",
      "bob→alice 200 OPTIONS",
    ]);
  });

  it("a registration-notify nobody claims still gets today's 501, not 481", () => {
    const { pool, alice } = rig();
    inDialog(alice.core, "NOTIFY", "<sip:bob@lab.test>;tag=registertag", [["Event", "registration-notify"]]);
    settle(pool);
    expect(pool.trace().at(-1)).toBe("bob→alice 501 NOTIFY");
  });

  it("routes a re-INVITE to the dialog's owner as an IncomingInvite; its 2xx is ACKed into the dialog", () => {
    const { pool, alice, bobOwner, aliceDialog } = established();
    const re = client();
    alice.core.sendReinvite(
      aliceDialog,
      { body: "v=0\r\n", headers: [["Content-Type", "application/sdp"]] },
      re.user,
    );
    settle(pool);
    const tx = bobOwner.requests[0]!;
    expect(tx.kind).toBe("invite");
    expect(tx.dialog?.state).toBe("confirmed");
    expect(re.events).toEqual(["200 confirmed"]);
    expect(bobOwner.log).toEqual([
      "ack 1 ACK",
      "request INVITE",
      `ack ${header(tx.request, "CSeq")!.replace("INVITE", "ACK")}`,
    ]);
  });

  it("answers 481 once the owner released the dialog", () => {
    const { pool, alice, bob, incoming, aliceDialog } = established();
    bob.core.releaseDialog(incoming[0]!.dialog!);
    alice.core.sendInDialog(aliceDialog, "INFO", {});
    settle(pool);
    expect(pool.trace().at(-1)).toBe("bob→alice 481 INFO");
  });

  it("answers 480 to an INVITE when nobody takes calls on this flow", () => {
    const pool = new FakePool();
    const alice = bareCore(pool, "alice");
    bareCore(pool, "bob");
    const al = client();
    alice.core.sendInvite(invite("alice", "bob"), al.user, owner().user);
    settle(pool);
    expect(al.events).toEqual(["rejected 480"]);
    expect(pool.trace()).toEqual(["alice→bob INVITE", "bob→alice 480 INVITE", "alice→bob ACK"]);
  });
});

describe("signatures (tls-dsk.md §4)", () => {
  it("drops an unsigned INVITE after the SA: it never reaches the call layer and is not answered", () => {
    const { pool, bob, incoming, al, start } = rig();
    pool.tamper = (m) => (m.kind === "request" && m.method === "INVITE" ? "unsigned" : "pass");
    start();
    settle(pool, 1_000);
    expect(incoming).toEqual([]);
    expect(pool.trace()).toEqual(["alice→bob INVITE (unsigned)"]);
    expect(bob.flow.closed).toBe(false); // a hint at most: dropped, not fatal
    settle(pool, 32_000);
    expect(al.events).toEqual(["failure timeout"]); // Timer B
  });

  it("drops a badly signed INVITE: no call rings, nothing answers it, the flow is closed as for a bad rspauth", () => {
    const { pool, bob, incoming, start } = rig();
    pool.tamper = (m) => (m.kind === "request" && m.method === "INVITE" ? "bad-signature" : "pass");
    start();
    settle(pool, 1_000);
    expect(incoming).toEqual([]);
    expect(bob.securityFailures).toEqual(["rspauth-invalid"]);
    expect(bob.flow.closed).toBe(true);
    expect(pool.trace()).toEqual(["alice→bob INVITE (bad-signature)"]);
  });

  it("drops a badly signed BYE: the flow is closed as for a bad rspauth, and the owner never sees the BYE", () => {
    const { pool, alice, bob, bobOwner, aliceDialog } = established();
    pool.tamper = (m) => (m.kind === "request" && m.method === "BYE" ? "bad-signature" : "pass");
    alice.core.sendInDialog(aliceDialog, "BYE", {});
    settle(pool);
    expect(bobOwner.log).toEqual(["ack 1 ACK", "lost connection-closed"]);
    expect(bob.securityFailures).toEqual(["rspauth-invalid"]);
    expect(bob.flow.closed).toBe(true);
    expect(pool.trace().at(-1)).toBe("alice→bob BYE (bad-signature)"); // nothing answered it
  });

  it("discards a BYE signed for another SA and keeps the dialog; the next good BYE is answered", () => {
    const { pool, alice, bob, bobOwner, aliceDialog } = established();
    pool.tamper = (m) => (m.kind === "request" && m.method === "BYE" ? "other-sa" : "pass");
    alice.core.sendInDialog(aliceDialog, "BYE", {});
    settle(pool);
    expect(bobOwner.log).toEqual(["ack 1 ACK"]);
    expect(bob.flow.closed).toBe(false);
    pool.tamper = () => "pass";
    alice.core.sendInDialog(aliceDialog, "BYE", {});
    settle(pool);
    expect(bobOwner.log).toEqual(["ack 1 ACK", "request BYE"]);
    expect(pool.trace().at(-1)).toBe("bob→alice 200 BYE");
  });

  it("drops an unsigned final response to INVITE (left to time out) but never a 1xx; an unsigned 2xx is fatal", () => {
    const { pool, alice, incoming, al, start } = rig();
    pool.tamper = (m) => (m.kind === "response" ? "unsigned" : "pass");
    start();
    settle(pool);
    incoming[0]!.respond(180, { headers: [BOB_CONTACT] });
    incoming[0]!.respond(486);
    settle(pool);
    expect(al.events).toEqual(["180 early"]); // the 486 was dropped
    expect(alice.flow.closed).toBe(false);
    const second = rig();
    second.pool.tamper = (m) => (m.kind === "response" ? "unsigned" : "pass");
    second.start();
    settle(second.pool);
    second.incoming[0]!.respond(200, { headers: [BOB_CONTACT], body: "v=0\r\n" });
    settle(second.pool);
    expect(second.alice.securityFailures).toEqual(["rspauth-missing"]);
    expect(second.al.events).toEqual(["failure transport"]);
  });
});

describe("the flow", () => {
  it("fails an INVITE in progress and tells dialog owners when the flow goes", () => {
    const { pool, bobOwner, incoming, al, start } = rig();
    start();
    settle(pool);
    incoming[0]!.respond(180, { headers: [BOB_CONTACT] });
    settle(pool);
    pool.reset("alice");
    pool.reset("bob");
    expect(al.events).toEqual(["180 early", "failure transport"]);
    expect(bobOwner.log).toEqual(["lost connection-reset"]);
  });
});
