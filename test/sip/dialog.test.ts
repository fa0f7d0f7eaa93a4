/**
 * Dialogs (RFC 3261 §12, §13.2.2.4, §15): creation as UAC and UAS, route set order, remote target
 * updates, loose and strict routing, in-dialog requests and the ACK of a 2xx, and the checks on
 * requests received in a dialog (481, 500).
 */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import {
  Dialog,
  DialogTable,
  dialogIdOfRequest,
  dialogIdOfResponse,
  dialogKey,
} from "../../firmware/sip/dialog/dialog.ts";
import { MAX_CSEQ } from "../../firmware/sip/grammar/cseq.ts";
import {
  header,
  headers,
  request,
  type SipRequest,
  type SipResponse,
} from "../../firmware/sip/message/message.ts";
import { buildResponse } from "../../firmware/sip/transaction/server-non-invite.ts";

/** The phone calls Bob through the pool and the edge. */
function outgoing(): SipRequest {
  return request("INVITE", "sip:bob@lab.test", [
    ["Via", "SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKout1"],
    ["Max-Forwards", "70"],
    ["From", '"Desk 4711" <sip:4711@lab.test>;tag=me1;epid=01234567ab'],
    ["To", "<sip:bob@lab.test>"],
    ["Call-ID", "out-1"],
    ["CSeq", "7 INVITE"],
    ["Contact", "<sip:10.0.0.2:5061;transport=tls>"],
    ["Authorization", 'TLS-DSK qop="auth", cnum="3", response="abcd"'],
  ]);
}

/** Bob's answer as the phone receives it: Record-Route lists the proxies callee-first. */
function reply(
  status: number,
  opts: { tag?: string; contact?: string; recordRoute?: string[] } = {},
  req = outgoing(),
): SipResponse {
  const extra: Array<[string, string]> = [];
  for (const rr of opts.recordRoute ?? [
    "<sip:edge.lab.test;lr>",
    "<sip:pool.lab.test:5061;transport=tls;lr>",
  ])
    extra.push(["Record-Route", rr]);
  extra.push(["Contact", opts.contact ?? "<sip:bob@10.0.0.9:5061;transport=tls>"]);
  return buildResponse(req, status, { toTag: opts.tag ?? "bob1", headers: extra });
}

/** Bob calls the phone; Record-Route lists the proxies caller-last (phone-side first). */
function incoming(extra: Array<[string, string]> = []): SipRequest {
  return request("INVITE", "sip:10.0.0.2:5061;transport=tls", [
    ["Via", "SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bKin1"],
    ["Max-Forwards", "68"],
    ["Record-Route", "<sip:pool.lab.test:5061;transport=tls;lr>, <sip:edge.lab.test;lr>"],
    ["From", '"Bob" <sip:bob@lab.test>;tag=bob9'],
    ["To", "<sip:4711@lab.test>"],
    ["Call-ID", "in-1"],
    ["CSeq", "101 INVITE"],
    ["Contact", "<sip:bob@10.0.0.9:5061;transport=tls>"],
    ...extra,
  ]);
}

/** A request Bob sends inside the dialog of `incoming()` (the phone's tag is "me2"). */
function fromBob(method: string, seq: number, extra: Array<[string, string]> = []): SipRequest {
  return request(method, "sip:10.0.0.2:5061;transport=tls", [
    ["Via", `SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bK${method}${seq}`],
    ["Max-Forwards", "70"],
    ["From", '"Bob" <sip:bob@lab.test>;tag=bob9'],
    ["To", "<sip:4711@lab.test>;tag=me2"],
    ["Call-ID", "in-1"],
    ["CSeq", `${seq} ${method}`],
    ...extra,
  ]);
}

function uas(): Dialog {
  return Dialog.asUas(incoming(), {
    localTag: "me2",
    localContact: "<sip:10.0.0.2:5061;transport=tls>",
    state: "confirmed",
  });
}

describe("dialog ids", () => {
  it("reads a received request as local = To tag, remote = From tag", () => {
    expect(dialogIdOfRequest(fromBob("BYE", 102))).toEqual({
      callId: "in-1",
      localTag: "me2",
      remoteTag: "bob9",
    });
    expect(dialogIdOfRequest(incoming())).toBeUndefined();
    const noFromTag = fromBob("BYE", 1);
    noFromTag.headers = noFromTag.headers.map((h) => (h.name === "From" ? { ...h, value: "<sip:b@x>" } : h));
    expect(dialogIdOfRequest(noFromTag)?.remoteTag).toBe("");
  });

  it("reads a received response as local = From tag, remote = To tag", () => {
    expect(dialogIdOfResponse(reply(180))).toEqual({ callId: "out-1", localTag: "me1", remoteTag: "bob1" });
    expect(dialogIdOfResponse(buildResponse(outgoing(), 100))).toBeUndefined();
  });

  it("keys differ when any part differs", () => {
    const a = dialogKey({ callId: "c", localTag: "a", remoteTag: "b" });
    expect(dialogKey({ callId: "c", localTag: "b", remoteTag: "a" })).not.toBe(a);
    expect(dialogKey({ callId: "ca", localTag: "", remoteTag: "b" })).not.toBe(a);
  });
});

describe("UAC dialog (§12.1.2)", () => {
  it("a 180 with a To tag makes an early dialog: reversed Record-Route, Contact as target", () => {
    const d = Dialog.asUac(outgoing(), reply(180))!;
    expect(d.role).toBe("uac");
    expect(d.state).toBe("early");
    expect(d.id).toEqual({ callId: "out-1", localTag: "me1", remoteTag: "bob1" });
    expect(d.routeSet).toEqual(["sip:pool.lab.test:5061;transport=tls;lr", "sip:edge.lab.test;lr"]);
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.9:5061;transport=tls");
    expect(d.localSeq).toBe(7);
    expect(d.remoteSeq).toBeUndefined();
    expect(d.localUri).toBe('"Desk 4711" <sip:4711@lab.test>;epid=01234567ab');
    expect(d.remoteUri).toBe("<sip:bob@lab.test>");
    expect(d.secure).toBe(false);
  });

  it("a 2xx makes a confirmed dialog; 100, a tagless 1xx or a failure make none", () => {
    expect(Dialog.asUac(outgoing(), reply(200))?.state).toBe("confirmed");
    expect(Dialog.asUac(outgoing(), buildResponse(outgoing(), 100, { toTag: "x" }))).toBeUndefined();
    expect(Dialog.asUac(outgoing(), buildResponse(outgoing(), 180))).toBeUndefined();
    expect(Dialog.asUac(outgoing(), reply(486))).toBeUndefined();
  });

  it("the confirming 2xx recomputes route set and target (§13.2.2.4)", () => {
    const d = Dialog.asUac(outgoing(), reply(183, { recordRoute: ["<sip:early.lab.test;lr>"] }))!;
    expect(d.routeSet).toEqual(["sip:early.lab.test;lr"]);
    d.receiveResponse(outgoing(), reply(200, { contact: "<sip:bob@10.0.0.10;transport=tls>" }));
    expect(d.state).toBe("confirmed");
    expect(d.routeSet).toEqual(["sip:pool.lab.test:5061;transport=tls;lr", "sip:edge.lab.test;lr"]);
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.10;transport=tls");
    d.confirm(reply(200, { recordRoute: [] })); // already confirmed: no effect
    expect(d.routeSet).toHaveLength(2);
  });

  it("a later 1xx with a Contact moves the early target; a non-2xx final ends the early dialog", () => {
    const d = Dialog.asUac(outgoing(), reply(180))!;
    d.receiveResponse(outgoing(), reply(183, { contact: "<sip:bob@10.0.0.11>" }));
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.11");
    d.receiveResponse(outgoing(), reply(486));
    expect(d.state).toBe("terminated");
    d.receiveResponse(outgoing(), reply(200));
    expect(d.state).toBe("terminated");
  });

  it("a 2xx without Contact falls back to the Request-URI", () => {
    const res = reply(200);
    res.headers = res.headers.filter((h) => h.name !== "Contact");
    expect(Dialog.asUac(outgoing(), res)?.remoteTarget).toBe("sip:bob@lab.test");
  });

  it("sips Request-URI marks the dialog secure", () => {
    const req = outgoing();
    req.uri = "sips:bob@lab.test";
    expect(Dialog.asUac(req, reply(200, {}, req))?.secure).toBe(true);
  });
});

describe("UAS dialog (§12.1.1)", () => {
  it("takes Record-Route in order, Contact as target, the INVITE's CSeq as remote seq", () => {
    const d = uas();
    expect(d.role).toBe("uas");
    expect(d.id).toEqual({ callId: "in-1", localTag: "me2", remoteTag: "bob9" });
    expect(d.routeSet).toEqual(["sip:pool.lab.test:5061;transport=tls;lr", "sip:edge.lab.test;lr"]);
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.9:5061;transport=tls");
    expect(d.remoteSeq).toBe(101);
    expect(d.localSeq).toBeUndefined();
    expect(d.localUri).toBe("<sip:4711@lab.test>");
    expect(d.remoteUri).toBe('"Bob" <sip:bob@lab.test>');
  });

  it("early until confirm(), which the UAS calls as its 2xx goes out", () => {
    const d = Dialog.asUas(incoming(), { localTag: "me2", state: "early" });
    expect(d.state).toBe("early");
    d.confirm();
    expect(d.state).toBe("confirmed");
    expect(d.routeSet).toHaveLength(2);
  });

  it("picks the first local CSeq below 2³¹ from Random, then counts up; without Random it starts at 1", () => {
    const seeded = Dialog.asUas(incoming(), {
      localTag: "me2",
      state: "confirmed",
      random: new SeededRandom(7),
    });
    const first = Number(header(seeded.createRequest("INFO"), "CSeq")!.split(" ")[0]);
    expect(first).toBeGreaterThan(0);
    expect(first).toBeLessThan(2 ** 31);
    expect(header(seeded.createRequest("BYE"), "CSeq")).toBe(`${first + 1} BYE`);
    expect(header(uas().createRequest("BYE"), "CSeq")).toBe("1 BYE");
  });

  it("an INVITE without Contact targets the From URI", () => {
    const req = incoming();
    req.headers = req.headers.filter((h) => h.name !== "Contact");
    expect(Dialog.asUas(req, { localTag: "t", state: "early" }).remoteTarget).toBe("sip:bob@lab.test");
  });
});

describe("requests inside a dialog (§12.2.1.1)", () => {
  it("BYE: CSeq +1, remote target as Request-URI, the route set as Route in order, tags, no Contact", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    const bye = d.createRequest("BYE", { via: "SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKbye" });
    expect(bye.method).toBe("BYE");
    expect(bye.uri).toBe("sip:bob@10.0.0.9:5061;transport=tls");
    expect(bye.headers[0]).toEqual({ name: "Via", value: "SIP/2.0/TLS 10.0.0.2:5061;branch=z9hG4bKbye" });
    expect(headers(bye, "Route")).toEqual([
      "<sip:pool.lab.test:5061;transport=tls;lr>",
      "<sip:edge.lab.test;lr>",
    ]);
    expect(header(bye, "From")).toBe('"Desk 4711" <sip:4711@lab.test>;epid=01234567ab;tag=me1');
    expect(header(bye, "To")).toBe("<sip:bob@lab.test>;tag=bob1");
    expect(header(bye, "Call-ID")).toBe("out-1");
    expect(header(bye, "CSeq")).toBe("8 BYE");
    expect(header(bye, "Max-Forwards")).toBe("70");
    expect(header(bye, "Contact")).toBeUndefined();
    expect(d.localSeq).toBe(8);
  });

  it("re-INVITE, UPDATE and REFER carry our Contact; INFO does not; bodies and headers pass through", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    const re = d.createRequest("INVITE", { body: "v=0\r\n", headers: [["Content-Type", "application/sdp"]] });
    expect(header(re, "Contact")).toBe("<sip:10.0.0.2:5061;transport=tls>");
    expect(header(re, "CSeq")).toBe("8 INVITE");
    expect(re.body.toString()).toBe("v=0\r\n");
    expect(header(re, "Content-Type")).toBe("application/sdp");
    expect(header(d.createRequest("UPDATE"), "Contact")).toBeDefined();
    const refer = d.createRequest("REFER", { headers: [["Refer-To", "<sip:carol@lab.test>"]] });
    expect(header(refer, "Contact")).toBeDefined();
    expect(header(refer, "Refer-To")).toBe("<sip:carol@lab.test>");
    const info = d.createRequest("INFO");
    expect(header(info, "Contact")).toBeUndefined();
    expect(header(info, "CSeq")).toBe("11 INFO");
    expect(header(info, "Via")).toBeUndefined(); // the core adds it
  });

  it("the UAS's requests use its own route set order (not reversed)", () => {
    const bye = uas().createRequest("BYE");
    expect(headers(bye, "Route")).toEqual([
      "<sip:pool.lab.test:5061;transport=tls;lr>",
      "<sip:edge.lab.test;lr>",
    ]);
    expect(bye.uri).toBe("sip:bob@10.0.0.9:5061;transport=tls");
    expect(header(bye, "From")).toBe("<sip:4711@lab.test>;tag=me2");
    expect(header(bye, "To")).toBe('"Bob" <sip:bob@lab.test>;tag=bob9');
  });

  it("no route set: no Route header", () => {
    const d = Dialog.asUac(outgoing(), reply(200, { recordRoute: [] }))!;
    const bye = d.createRequest("BYE");
    expect(headers(bye, "Route")).toEqual([]);
    expect(bye.uri).toBe("sip:bob@10.0.0.9:5061;transport=tls");
  });

  it("strict routing: first route as Request-URI (stripped), the rest then the remote target as Route", () => {
    const d = Dialog.asUac(
      outgoing(),
      reply(200, { recordRoute: ["<sip:loose.lab.test;lr>", "<sip:strict.lab.test;method=INVITE?x=1>"] }),
    )!;
    expect(d.routeSet[0]).toBe("sip:strict.lab.test;method=INVITE?x=1");
    const bye = d.createRequest("BYE");
    expect(bye.uri).toBe("sip:strict.lab.test");
    expect(headers(bye, "Route")).toEqual([
      "<sip:loose.lab.test;lr>",
      "<sip:bob@10.0.0.9:5061;transport=tls>",
    ]);
  });

  it("the ACK of a 2xx reuses the INVITE's CSeq number and credentials and does not count", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    const ack = d.createAck(outgoing(), { body: "v=0\r\n" });
    expect(ack.method).toBe("ACK");
    expect(header(ack, "CSeq")).toBe("7 ACK");
    expect(ack.uri).toBe("sip:bob@10.0.0.9:5061;transport=tls");
    expect(headers(ack, "Route")).toHaveLength(2);
    expect(header(ack, "Authorization")).toBe('TLS-DSK qop="auth", cnum="3", response="abcd"');
    expect(header(ack, "Contact")).toBeUndefined();
    expect(ack.body.toString()).toBe("v=0\r\n");
    expect(d.localSeq).toBe(7);
    expect(header(d.createRequest("BYE"), "CSeq")).toBe("8 BYE");
  });

  it("refuses ACK and CANCEL (built elsewhere) and anything once terminated", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    expect(() => d.createRequest("ACK")).toThrow();
    expect(() => d.createRequest("cancel")).toThrow();
    d.terminate();
    expect(() => d.createRequest("BYE")).toThrow(HandsetError);
  });

  it("refuses to wrap the 32-bit CSeq", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    d.localSeq = MAX_CSEQ;
    expect(() => d.createRequest("BYE")).toThrow(/CSeq/);
  });

  it("an RFC 2543 peer without a From tag gets a To without tag", () => {
    const req = incoming();
    req.headers = req.headers.map((h) => (h.name === "From" ? { ...h, value: "<sip:bob@lab.test>" } : h));
    const d = Dialog.asUas(req, { localTag: "me2", state: "confirmed" });
    expect(header(d.createRequest("BYE"), "To")).toBe("<sip:bob@lab.test>");
  });
});

describe("requests received inside a dialog (§12.2.2)", () => {
  it("accepts increasing CSeq, rejects a lower one with 500, and accepts an equal one", () => {
    const d = uas();
    expect(d.receiveRequest(fromBob("INFO", 102))).toEqual({ ok: true });
    expect(d.remoteSeq).toBe(102);
    const late = d.receiveRequest(fromBob("INFO", 101));
    expect(late).toMatchObject({ ok: false, status: 500 });
    expect(d.remoteSeq).toBe(102);
    expect(d.receiveRequest(fromBob("UPDATE", 102))).toEqual({ ok: true });
  });

  it("never checks an ACK's CSeq (it carries the INVITE's) nor lets it move the remote seq", () => {
    const d = uas();
    d.receiveRequest(fromBob("INFO", 105));
    expect(d.receiveRequest(fromBob("ACK", 101))).toEqual({ ok: true });
    expect(d.remoteSeq).toBe(105);
  });

  it("481 for another dialog's tags or a terminated dialog; 400 for a broken CSeq", () => {
    const d = uas();
    const wrong = fromBob("INFO", 200);
    wrong.headers = wrong.headers.map((h) =>
      h.name === "To" ? { ...h, value: "<sip:4711@lab.test>;tag=zz" } : h,
    );
    expect(d.receiveRequest(wrong)).toMatchObject({ ok: false, status: 481 });
    const bad = fromBob("INFO", 200);
    bad.headers = bad.headers.map((h) => (h.name === "CSeq" ? { ...h, value: "x INFO" } : h));
    expect(d.receiveRequest(bad)).toMatchObject({ ok: false, status: 400 });
    d.terminate();
    expect(d.receiveRequest(fromBob("INFO", 300))).toMatchObject({ ok: false, status: 481 });
  });

  it("a target refresh moves the remote target; a BYE ends the dialog", () => {
    const d = uas();
    d.receiveRequest(fromBob("INVITE", 102, [["Contact", "<sip:bob@10.0.0.50;transport=tls>"]]));
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.50;transport=tls");
    d.receiveRequest(fromBob("INFO", 103, [["Contact", "<sip:elsewhere.test>"]]));
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.50;transport=tls");
    d.receiveRequest(fromBob("UPDATE", 104));
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.50;transport=tls");
    expect(d.receiveRequest(fromBob("BYE", 105))).toEqual({ ok: true });
    expect(d.state).toBe("terminated");
  });
});

describe("responses to requests inside a dialog (§12.2.1.2)", () => {
  it("a 2xx to a re-INVITE moves the target but never the route set", () => {
    const d = Dialog.asUac(outgoing(), reply(200))!;
    const re = d.createRequest("INVITE");
    d.receiveResponse(
      re,
      reply(200, { contact: "<sip:bob@10.0.0.77>", recordRoute: ["<sip:other.lab.test;lr>"] }, re),
    );
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.77");
    expect(d.routeSet).toEqual(["sip:pool.lab.test:5061;transport=tls;lr", "sip:edge.lab.test;lr"]);
    const info = d.createRequest("INFO");
    d.receiveResponse(info, reply(200, { contact: "<sip:bob@10.0.0.78>" }, info));
    expect(d.remoteTarget).toBe("sip:bob@10.0.0.77");
  });

  it("481 or 408 ends the dialog; other failures do not", () => {
    for (const status of [481, 408]) {
      const d = Dialog.asUac(outgoing(), reply(200))!;
      const info = d.createRequest("INFO");
      d.receiveResponse(info, reply(488, {}, info));
      expect(d.state).toBe("confirmed");
      d.receiveResponse(info, reply(status, {}, info));
      expect(d.state).toBe("terminated");
    }
  });

  it("any final response to our BYE, or a timeout, ends the dialog", () => {
    const a = Dialog.asUac(outgoing(), reply(200))!;
    const bye = a.createRequest("BYE");
    a.receiveResponse(bye, reply(100, {}, bye));
    expect(a.state).toBe("confirmed");
    a.receiveResponse(bye, reply(500, {}, bye));
    expect(a.state).toBe("terminated");
    const b = uas();
    b.requestTimedOut();
    expect(b.state).toBe("terminated");
  });
});

describe("DialogTable", () => {
  it("routes by tags: out-of-dialog, dialog, 481 unknown, dropped ACK, 500 out of order", () => {
    const table = new DialogTable();
    const d = uas();
    table.add(d);
    expect(table.size).toBe(1);
    expect(table.route(incoming())).toEqual({ kind: "out-of-dialog" });
    expect(table.route(fromBob("INFO", 102))).toEqual({ kind: "dialog", dialog: d });
    expect(table.route(fromBob("INFO", 101))).toMatchObject({ kind: "reject", status: 500, dialog: d });
    const stranger = fromBob("BYE", 500);
    stranger.headers = stranger.headers.map((h) => (h.name === "Call-ID" ? { ...h, value: "gone" } : h));
    expect(table.route(stranger)).toEqual({
      kind: "reject",
      status: 481,
      reason: "Call/Transaction Does Not Exist",
    });
    const strayAck = fromBob("ACK", 1);
    strayAck.headers = strayAck.headers.map((h) => (h.name === "Call-ID" ? { ...h, value: "gone" } : h));
    expect(table.route(strayAck)).toEqual({ kind: "drop" });
  });

  it("an ACK that fails a dialog's checks is dropped, never answered", () => {
    const table = new DialogTable();
    const d = uas();
    table.add(d);
    d.terminate();
    // The table forgets terminated dialogs on lookup.
    expect(table.route(fromBob("ACK", 101))).toEqual({ kind: "drop" });
    expect(table.size).toBe(0);
  });

  it("after a BYE the dialog is gone: the next request gets 481", () => {
    const table = new DialogTable();
    table.add(uas());
    expect(table.route(fromBob("BYE", 102)).kind).toBe("dialog");
    expect(table.route(fromBob("INFO", 103))).toMatchObject({ kind: "reject", status: 481 });
  });

  it("finds the dialog of a response and deletes only the dialog it holds", () => {
    const table = new DialogTable();
    const d = Dialog.asUac(outgoing(), reply(180))!;
    table.add(d);
    expect(table.forResponse(reply(200))).toBe(d);
    expect(table.forResponse(reply(200, { tag: "fork2" }))).toBeUndefined();
    expect(table.forResponse(buildResponse(outgoing(), 100))).toBeUndefined();
    expect(table.get(d.id)).toBe(d);
    table.delete(Dialog.asUac(outgoing(), reply(180))!); // same key, another object
    expect(table.size).toBe(1);
    table.delete(d);
    expect(table.size).toBe(0);
  });
});
