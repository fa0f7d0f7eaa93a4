/**
 * Calls against a scripted peer: "carol" is a bare UserAgentCore on the fake pool whose
 * answers and requests the test writes by hand (early media, a 2xx without answer, a second
 * fork, odd in-dialog requests), so the call layer meets what our own Call never sends.
 */
import { describe, expect, it } from "vitest";
import { header, request, type SipResponse, setHeader } from "../../firmware/sip/message/message.ts";
import type {
  Dialog,
  DialogUser,
  IncomingInvite,
  InviteClientUser,
} from "../../firmware/sip/user-agent-core.ts";
import { bareCore, dial, FakePool, phone, settle, states } from "./call-rig.ts";

const CAROL_CONTACT: [string, string] = ["Contact", "<sip:carol@lab.test;gruu>"];
const SDP: [string, string] = ["Content-Type", "application/sdp"];
const ANSWER = "v=0\r\no=- 9 1 IN IP4 10.9.9.9\r\na=sendrecv\r\n";

/** alice (a phone) calls carol (scripted). */
function toCarol(o: Parameters<typeof phone>[2] = {}) {
  const pool = new FakePool();
  const alice = phone(pool, "alice", o);
  const carol = bareCore(pool, "carol");
  const invites: IncomingInvite[] = [];
  const got: string[] = [];
  const owner: DialogUser = {
    onRequest: (tx) => {
      got.push(tx.request.method);
      tx.respond(200);
    },
    onAck: () => got.push("ACK"),
  };
  carol.core.onInvite((i) => {
    i.owner = owner;
    invites.push(i);
  });
  const call = dial(alice, "sip:carol@lab.test");
  settle(pool);
  return { pool, alice, carol, invites, got, call };
}

/** carol (scripted) calls bob (a phone) and bob answers. */
function fromCarol(o: Parameters<typeof phone>[2] = {}) {
  const pool = new FakePool();
  const bob = phone(pool, "bob", o);
  const carol = bareCore(pool, "carol");
  const dialogs: Dialog[] = [];
  const early: Dialog[] = [];
  const responses: SipResponse[] = [];
  const user: InviteClientUser = {
    onProvisional: (_r, d) => {
      if (d) early.push(d);
    },
    onSuccess: (r, d) => {
      dialogs.push(d);
      responses.push(r);
    },
    onRejected: (r) => responses.push(r),
    onFailure: () => {},
  };
  const owner: DialogUser = { onRequest: (tx) => tx.respond(200), onAck: () => {} };
  const invite = request(
    "INVITE",
    "sip:bob@lab.test",
    [
      ["Max-Forwards", "70"],
      ["From", '"Carol" <sip:carol@lab.test>;tag=c1'],
      ["To", "<sip:bob@lab.test>"],
      ["Call-ID", "from-carol"],
      ["CSeq", "10 INVITE"],
      CAROL_CONTACT,
      SDP,
    ],
    ANSWER,
  );
  carol.core.sendInvite(invite, user, owner);
  settle(pool);
  return { pool, bob, carol, dialogs, early, responses, user, owner };
}

describe("answers the caller meets", () => {
  it("early media: a 183 with the answer makes the call 'early'; the 2xx repeats it and is taken once", () => {
    const { pool, alice, invites, call } = toCarol();
    invites[0]!.respond(183, { headers: [CAROL_CONTACT, SDP], body: ANSWER });
    settle(pool);
    expect(call.state).toBe("early");
    invites[0]!.respond(200, { headers: [CAROL_CONTACT, SDP], body: ANSWER });
    settle(pool);
    expect(states(alice, call)).toEqual(["calling", "early", "confirmed"]);
    expect(alice.media[0]!.log).toEqual(["offer initial sendrecv", "accepted answer", "connected"]);
    expect(alice.media[0]!.agreed).toBe(ANSWER);
  });

  it("an early answer the media port refuses cancels the call", () => {
    const { pool, invites, call } = toCarol({ media: (m) => (m.refuseAnswers = true) });
    invites[0]!.respond(183, { headers: [CAROL_CONTACT, SDP], body: ANSWER });
    settle(pool);
    expect(call.endReason).toEqual({ reason: "media" });
    expect(pool.trace()).toContain("alice→carol CANCEL");
  });

  it("a 2xx without an answer is ACKed and hung up", () => {
    const { pool, invites, got, call } = toCarol();
    invites[0]!.respond(200, { headers: [CAROL_CONTACT] });
    settle(pool);
    expect(call.endReason).toEqual({ reason: "media" });
    expect(got).toEqual(["ACK", "BYE"]);
  });

  it("a second fork's 2xx after the first is ACKed and sent BYE; the call stays with the first", () => {
    const { pool, invites, call } = toCarol();
    invites[0]!.respond(200, { headers: [CAROL_CONTACT, SDP], body: ANSWER });
    settle(pool);
    const first = pool.delivered("alice", "200 INVITE")[0]!.message;
    const fork = structuredClone(first);
    setHeader(fork, "To", header(first, "To")!.replace(/tag=[^;]+/, "tag=fork2"));
    pool.inject("alice", fork);
    settle(pool);
    expect(call.state).toBe("confirmed");
    const byes = pool.delivered("carol", "BYE").map((e) => header(e.message, "To"));
    expect(byes).toHaveLength(1);
    expect(byes[0]).toContain("tag=fork2");
  });

  it("a redirect or any other failure ends the call with its status", () => {
    const { pool, invites, call } = toCarol();
    invites[0]!.respond(404, { reason: "Not Found" });
    settle(pool);
    expect(call.endReason).toEqual({ reason: "failed", status: 404 });
  });
});

describe("requests the callee meets", () => {
  function inDialog(
    r: ReturnType<typeof fromCarol>,
    method: string,
    extra: Array<[string, string]> = [],
    body?: string,
  ) {
    r.carol.core.sendInDialog(r.dialogs[0]!, method, { headers: extra, ...(body ? { body } : {}) });
    settle(r.pool);
    return r.pool.wire.filter((e) => e.to === "carol").at(-1)!.message as SipResponse;
  }

  function answered(o: Parameters<typeof phone>[2] = {}) {
    const r = fromCarol(o);
    const inc = r.bob.incoming[0]!;
    expect(inc.remoteParty).toEqual({ uri: "sip:carol@lab.test", displayName: "Carol", asserted: [] });
    inc.answer();
    settle(r.pool);
    expect(inc.state).toBe("confirmed");
    return { ...r, inc };
  }

  it("OPTIONS and INFO get 200, UPDATE 501 with Allow, an unknown NOTIFY 489 or 481", () => {
    const r = answered();
    const options = inDialog(r, "OPTIONS");
    expect(options.status).toBe(200);
    expect(header(options, "Allow")).toBe("INVITE, ACK, CANCEL, BYE, REFER, NOTIFY, OPTIONS, INFO");
    expect(inDialog(r, "INFO").status).toBe(200);
    const update = inDialog(r, "UPDATE");
    expect(update.status).toBe(501);
    expect(header(update, "Allow")).toContain("REFER");
    expect(inDialog(r, "NOTIFY", [["Event", "dialog"]]).status).toBe(489);
    expect(inDialog(r, "NOTIFY", [["Event", "refer"]]).status).toBe(481); // no REFER of ours
    expect(r.inc.state).toBe("confirmed");
  });

  it("a re-INVITE requiring 100rel gets 420, one with a too short session interval 422; the call carries on", () => {
    const r = answered();
    const re: SipResponse[] = [];
    const user: InviteClientUser = {
      onSuccess: () => {},
      onRejected: (x) => re.push(x),
      onFailure: () => {},
    };
    r.carol.core.sendReinvite(r.dialogs[0]!, { headers: [["Require", "100rel"], SDP], body: ANSWER }, user);
    settle(r.pool);
    r.carol.core.sendReinvite(
      r.dialogs[0]!,
      { headers: [["Supported", "timer"], ["Session-Expires", "60"], SDP], body: ANSWER },
      user,
    );
    settle(r.pool);
    expect(re.map((x) => x.status)).toEqual([420, 422]);
    expect(header(re[0]!, "Unsupported")).toBe("100rel");
    expect(header(re[1]!, "Min-SE")).toBe("90");
    expect(r.inc.state).toBe("confirmed");
  });

  it("the peer holds us: a sendonly re-INVITE is answered recvonly and shown as remote hold", () => {
    const r = answered();
    r.carol.core.sendReinvite(
      r.dialogs[0]!,
      { headers: [SDP], body: ANSWER.replace("sendrecv", "sendonly") },
      { onSuccess: () => {}, onRejected: () => {}, onFailure: () => {} },
    );
    settle(r.pool);
    expect(r.inc.holdState).toEqual({ local: false, remote: true });
    expect(r.bob.media[0]!.agreed).toContain("a=recvonly");
  });

  it("a REFER without a usable Refer-To gets 400 when transfers are taken", () => {
    const r = answered({ call: { acceptTransfers: true } });
    expect(inDialog(r, "REFER").status).toBe(400);
    expect(inDialog(r, "REFER", [["Refer-To", "<sip:a@lab.test>, <sip:b@lab.test>"]]).status).toBe(400);
    expect(r.inc.state).toBe("confirmed");
  });

  it("the caller's BYE on the early dialog while it rings: 200, the INVITE 487, a missed call", () => {
    const r = fromCarol();
    const inc = r.bob.incoming[0]!;
    expect(inc.state).toBe("ringing");
    // carol has the early dialog from the 180; a BYE in it ends the attempt (§15).
    r.carol.core.sendInDialog(r.early[0]!, "BYE", {});
    settle(r.pool);
    expect(inc.endReason).toEqual({ reason: "remote-cancelled" });
    expect(r.responses.map((x) => x.status)).toEqual([487]);
  });

  it("an incoming re-INVITE for an ended call is answered 481", () => {
    const r = answered();
    r.pool.tamper = (m) => (m.kind === "request" && m.method === "BYE" ? "drop" : "pass");
    r.inc.hangUp(); // carol never hears of it
    settle(r.pool);
    r.pool.tamper = () => "pass";
    const re: SipResponse[] = [];
    r.carol.core.sendReinvite(
      r.dialogs[0]!,
      { headers: [SDP], body: ANSWER },
      { onSuccess: () => {}, onRejected: (x) => re.push(x), onFailure: () => {} },
    );
    settle(r.pool);
    expect(re.map((x) => x.status)).toEqual([481]);
  });
});

describe("the call's own guards", () => {
  it("actions out of place are refused rather than sent", () => {
    const { pool, invites, call } = toCarol();
    expect(call.hold()).toBe(false); // not confirmed yet
    expect(call.blindTransfer("sip:x@lab.test")).toBe(false);
    expect(call.answer()).toBe(false); // not an incoming call
    expect(() => call.dial("sip:again@lab.test")).toThrow(/cannot dial/);
    invites[0]!.respond(200, { headers: [CAROL_CONTACT, SDP], body: ANSWER });
    settle(pool);
    expect(call.cancel()).toBe(false); // answered: hang up instead
    expect(call.resume()).toBe(true); // not held: nothing to do
    call.hangUp();
    call.hangUp(); // twice is harmless
    expect(call.endReason).toEqual({ reason: "local-hangup" });
  });

  it("reject needs a failure status", () => {
    const r = fromCarol();
    expect(() => r.bob.incoming[0]!.reject(200)).toThrow(/3xx–6xx/);
  });
});
