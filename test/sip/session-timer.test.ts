/**
 * Session timers (RFC 4028): header syntax, the UAC and UAS sides of the negotiation with their
 * range checks, 422 retries, the refresher's role per transaction, and the refresh / BYE timers
 * on a ManualClock.
 */
import { describe, expect, it } from "vitest";
import { ManualClock } from "../../firmware/core/clock.ts";
import {
  checkInterval,
  DEFAULT_OFFER,
  expirySeconds,
  formatSessionExpires,
  offerHeaders,
  parseMinSe,
  parseSessionExpires,
  refreshOffer,
  retryAfter422,
  SessionTimer,
  uacResult,
  uasAnswer,
} from "../../firmware/sip/dialog/session-timer.ts";
import { header, request, type SipRequest, type SipResponse } from "../../firmware/sip/message/message.ts";
import { buildResponse } from "../../firmware/sip/transaction/server-non-invite.ts";

function invite(extra: Array<[string, string]>): SipRequest {
  return request("INVITE", "sip:10.0.0.2:5061;transport=tls", [
    ["Via", "SIP/2.0/TLS pool.lab.test:5061;branch=z9hG4bKst"],
    ["From", "<sip:bob@lab.test>;tag=b"],
    ["To", "<sip:4711@lab.test>"],
    ["Call-ID", "st-1"],
    ["CSeq", "1 INVITE"],
    ...extra,
  ]);
}

function ok(extra: Array<[string, string]>): SipResponse {
  return buildResponse(invite([]), 200, { toTag: "p", headers: extra });
}

describe("Session-Expires and Min-SE syntax (§4, §5)", () => {
  it("parses delta-seconds with an optional refresher, case-insensitively; the compact form x works", () => {
    expect(parseSessionExpires("1800")).toEqual({ seconds: 1800 });
    expect(parseSessionExpires("1800;refresher=uac")).toEqual({ seconds: 1800, refresher: "uac" });
    expect(parseSessionExpires(" 90 ; refresher = UAS ;x=1")).toEqual({ seconds: 90, refresher: "uas" });
    expect(parseSessionExpires("1800;refresher=proxy")).toEqual({ seconds: 1800 });
    expect(parseSessionExpires("abc")).toBeUndefined();
    expect(parseSessionExpires("")).toBeUndefined();
    expect(parseSessionExpires("1800;")).toBeUndefined();
    expect(parseSessionExpires("99999999999")).toBeUndefined();
    const res = ok([["x", "1200;refresher=uas"]]);
    expect(uacResult(res).timer).toEqual({ interval: 1200, refresher: "remote" });
  });

  it("parses Min-SE and formats Session-Expires", () => {
    expect(parseMinSe("90")).toBe(90);
    expect(parseMinSe("120;foo")).toBe(120);
    expect(parseMinSe("-1")).toBeUndefined();
    expect(formatSessionExpires({ seconds: 1800 })).toBe("1800");
    expect(formatSessionExpires({ seconds: 1800, refresher: "uas" })).toBe("1800;refresher=uas");
  });
});

describe("the UAC's offer (§7.1, §7.4)", () => {
  it("offers Supported: timer, Session-Expires 1800 and Min-SE 90 by default, leaving the refresher open", () => {
    expect(offerHeaders(DEFAULT_OFFER)).toEqual([
      ["Supported", "timer"],
      ["Session-Expires", "1800"],
      ["Min-SE", "90"],
    ]);
  });

  it("names the refresher as a role of this transaction, and never offers below 90 s or its Min-SE", () => {
    expect(offerHeaders({ interval: 600, minSe: 90, refresher: "local" })[1]).toEqual([
      "Session-Expires",
      "600;refresher=uac",
    ]);
    expect(offerHeaders({ interval: 600, minSe: 90, refresher: "remote" })[1]).toEqual([
      "Session-Expires",
      "600;refresher=uas",
    ]);
    expect(offerHeaders({ interval: 30, minSe: 10 })).toEqual([
      ["Supported", "timer"],
      ["Session-Expires", "90"],
      ["Min-SE", "90"],
    ]);
    expect(offerHeaders({ interval: 100, minSe: 300 })[1]).toEqual(["Session-Expires", "300"]);
  });

  it("a refresh keeps the interval and refresher; when the peer refreshes, our re-INVITE says uas", () => {
    expect(offerHeaders(refreshOffer({ interval: 1800, refresher: "remote" }))[1]).toEqual([
      "Session-Expires",
      "1800;refresher=uas",
    ]);
    expect(refreshOffer({ interval: 900, refresher: "local" }, 120)).toEqual({
      interval: 900,
      minSe: 120,
      refresher: "local",
    });
  });
});

describe("the UAC reads the 2xx (§7.2)", () => {
  it("no Session-Expires: no session timer", () => {
    expect(uacResult(ok([]))).toEqual({ timer: undefined, notes: [] });
  });

  it("refresher=uac is us (we sent the request), refresher=uas the peer", () => {
    expect(uacResult(ok([["Session-Expires", "1800;refresher=uac"]])).timer).toEqual({
      interval: 1800,
      refresher: "local",
    });
    expect(uacResult(ok([["Session-Expires", "1800;refresher=uas"]])).timer).toEqual({
      interval: 1800,
      refresher: "remote",
    });
  });

  it("a 2xx without refresher leaves us refreshing, with a note", () => {
    const r = uacResult(ok([["Session-Expires", "1800"]]));
    expect(r.timer).toEqual({ interval: 1800, refresher: "local" });
    expect(r.notes).toHaveLength(1);
  });

  it("clamps below 90 s; clamps an absurd value when we refresh, refuses it as the watchdog", () => {
    const low = uacResult(ok([["Session-Expires", "30;refresher=uas"]]));
    expect(low.timer).toEqual({ interval: 90, refresher: "remote" });
    expect(low.notes[0]).toMatch(/below 90/);
    const highLocal = uacResult(ok([["Session-Expires", "100000;refresher=uac"]]));
    expect(highLocal.timer).toEqual({ interval: 86_400, refresher: "local" });
    const highRemote = uacResult(ok([["Session-Expires", "100000;refresher=uas"]]));
    expect(highRemote.timer).toBeUndefined();
    expect(highRemote.notes[0]).toMatch(/refused/);
    expect(checkInterval(86_400, "remote")).toEqual({ interval: 86_400 });
    expect(checkInterval(90, "local")).toEqual({ interval: 90 });
  });

  it("a malformed Session-Expires in a 2xx runs no timer and says why", () => {
    const r = uacResult(ok([["Session-Expires", "soon"]]));
    expect(r.timer).toBeUndefined();
    expect(r.notes[0]).toMatch(/malformed/);
  });
});

describe("the UAC reads a 422 (§7.3)", () => {
  function tooSmall(minSe?: string): SipResponse {
    return buildResponse(invite([]), 422, { toTag: "p", headers: minSe ? [["Min-SE", minSe]] : [] });
  }

  it("retries with Session-Expires and Min-SE raised to the 422's Min-SE, keeping the refresher", () => {
    expect(retryAfter422(tooSmall("300"), { interval: 120, minSe: 90, refresher: "local" })).toEqual({
      ok: true,
      offer: { interval: 300, minSe: 300, refresher: "local" },
    });
    // An interval already above the 422's Min-SE stays; Min-SE is raised (and a 422 below 90 counts as 90).
    expect(retryAfter422(tooSmall("600"), DEFAULT_OFFER)).toEqual({
      ok: true,
      offer: { interval: 1800, minSe: 600 },
    });
  });

  it("refuses a 422 without Min-SE, with an absurd one, or one that changes nothing (no loop)", () => {
    expect(retryAfter422(tooSmall(), DEFAULT_OFFER)).toMatchObject({ ok: false });
    expect(retryAfter422(tooSmall("bogus"), DEFAULT_OFFER)).toMatchObject({ ok: false });
    expect(retryAfter422(tooSmall("100000"), DEFAULT_OFFER)).toMatchObject({ ok: false, reason: /absurd/ });
    expect(retryAfter422(tooSmall("90"), DEFAULT_OFFER)).toMatchObject({ ok: false });
    expect(retryAfter422(tooSmall("60"), { interval: 300, minSe: 90 })).toMatchObject({ ok: false });
  });
});

describe("the UAS answers (§9)", () => {
  it("a request without Session-Expires runs no timer and adds nothing", () => {
    expect(uasAnswer(invite([["Supported", "timer"]]))).toEqual({
      kind: "accept",
      timer: undefined,
      headers: [],
      notes: [],
    });
  });

  it("Lync's INVITE (Session-Expires 1800, Min-SE 90, refresher open): the caller refreshes by default", () => {
    const a = uasAnswer(
      invite([
        ["Supported", "timer"],
        ["Session-Expires", "1800"],
        ["Min-SE", "90"],
      ]),
    );
    expect(a).toEqual({
      kind: "accept",
      timer: { interval: 1800, refresher: "remote" },
      headers: [
        ["Session-Expires", "1800;refresher=uac"],
        ["Require", "timer"],
      ],
      notes: [],
    });
  });

  it("policy may make us the refresher when the UAC leaves it open (no Require then)", () => {
    const a = uasAnswer(
      invite([
        ["Supported", "timer"],
        ["Session-Expires", "1800"],
      ]),
      {
        minSe: 90,
        refresher: "local",
      },
    );
    expect(a).toMatchObject({
      kind: "accept",
      timer: { interval: 1800, refresher: "local" },
      headers: [["Session-Expires", "1800;refresher=uas"]],
    });
  });

  it("keeps the refresher the UAC named: uac is the peer, uas is us (roles swap per transaction)", () => {
    expect(
      uasAnswer(
        invite([
          ["Supported", "timer"],
          ["Session-Expires", "900;refresher=uac"],
        ]),
      ),
    ).toMatchObject({
      timer: { interval: 900, refresher: "remote" },
    });
    expect(uasAnswer(invite([["Session-Expires", "900;refresher=uas"]]))).toMatchObject({
      timer: { interval: 900, refresher: "local" },
      headers: [["Session-Expires", "900;refresher=uas"]],
    });
  });

  it("a UAC without timer support cannot refresh: we do", () => {
    expect(uasAnswer(invite([["Session-Expires", "1800"]]))).toMatchObject({
      timer: { interval: 1800, refresher: "local" },
      headers: [["Session-Expires", "1800;refresher=uas"]],
    });
  });

  it("too small for our Min-SE: 422 with our Min-SE to a UAC that supports timers", () => {
    expect(
      uasAnswer(
        invite([
          ["Supported", "timer"],
          ["Session-Expires", "60"],
        ]),
      ),
    ).toEqual({
      kind: "reject",
      status: 422,
      reason: "Session Interval Too Small",
      headers: [["Min-SE", "90"]],
    });
    expect(
      uasAnswer(
        invite([
          ["Supported", "100rel, timer"],
          ["Session-Expires", "200"],
        ]),
        { minSe: 300 },
      ),
    ).toMatchObject({ kind: "reject", status: 422, headers: [["Min-SE", "300"]] });
  });

  it("too small, UAC without timer support (a proxy asked): raised to our Min-SE instead", () => {
    const a = uasAnswer(invite([["Session-Expires", "60"]]));
    expect(a).toMatchObject({
      kind: "accept",
      timer: { interval: 90, refresher: "local" },
      headers: [["Session-Expires", "90;refresher=uas"]],
    });
    expect(a.kind === "accept" && a.notes[0]).toMatch(/raised/);
  });

  it("absurd intervals are lowered to a day, never below the request's Min-SE", () => {
    const a = uasAnswer(
      invite([
        ["Supported", "timer"],
        ["Session-Expires", "200000"],
      ]),
    );
    expect(a).toMatchObject({ kind: "accept", timer: { interval: 86_400, refresher: "remote" } });
    expect(a.kind === "accept" && a.headers[0]).toEqual(["Session-Expires", "86400;refresher=uac"]);
    // The request insists on more than a day: we may not lower it; as the watchdog we run none.
    const b = uasAnswer(
      invite([
        ["Supported", "timer"],
        ["Session-Expires", "200000;refresher=uac"],
        ["Min-SE", "100000"],
      ]),
    );
    expect(b).toMatchObject({ kind: "accept", timer: undefined });
    expect(b.kind === "accept" && b.headers[0]).toEqual(["Session-Expires", "100000;refresher=uac"]);
  });

  it("a malformed Session-Expires is a 400", () => {
    expect(uasAnswer(invite([["Session-Expires", "half an hour"]]))).toMatchObject({
      kind: "reject",
      status: 400,
    });
  });
});

describe("SessionTimer (§7.4, §10)", () => {
  function harness() {
    const clock = new ManualClock();
    const events: string[] = [];
    const timer = new SessionTimer(clock, {
      onRefresh: () => events.push(`refresh@${clock.monotonic() / 1000}`),
      onExpire: () => events.push(`expire@${clock.monotonic() / 1000}`),
    });
    return { clock, events, timer };
  }

  it("BYE margin: the smaller of 32 s and a third of the interval", () => {
    expect(expirySeconds(1800)).toBe(1768);
    expect(expirySeconds(90)).toBe(60);
    expect(expirySeconds(96)).toBe(64);
    expect(expirySeconds(97)).toBe(65);
  });

  it("as refresher: refresh at half the interval; BYE at expiry if no refresh succeeded", () => {
    const { clock, events, timer } = harness();
    timer.start({ interval: 1800, refresher: "local" });
    expect(timer.refreshAt).toBe(900_000);
    expect(timer.expireAt).toBe(1_768_000);
    clock.advance(899_999);
    expect(events).toEqual([]);
    clock.advance(1);
    expect(events).toEqual(["refresh@900"]);
    expect(timer.refreshAt).toBeUndefined();
    clock.advance(868_000);
    expect(events).toEqual(["refresh@900", "expire@1768"]);
    expect(timer.expireAt).toBeUndefined();
    expect(clock.pendingTimers()).toBe(0);
  });

  it("a successful refresh restarts both timers from now", () => {
    const { clock, events, timer } = harness();
    timer.start({ interval: 1800, refresher: "local" });
    clock.advance(900_000);
    clock.advance(2_000); // the re-INVITE's 2xx came back
    timer.start({ interval: 1800, refresher: "local" });
    clock.advance(1_767_999);
    expect(events).toEqual(["refresh@900", "refresh@1802"]);
    clock.advance(1);
    expect(events).toEqual(["refresh@900", "refresh@1802", "expire@2670"]);
  });

  it("as watchdog: no refresh, BYE at interval − min(32 s, interval/3) unless the peer refreshes", () => {
    const { clock, events, timer } = harness();
    timer.start({ interval: 90, refresher: "remote" });
    expect(timer.refreshAt).toBeUndefined();
    clock.advance(59_999);
    timer.start({ interval: 90, refresher: "remote" }); // the peer's re-INVITE arrived
    clock.advance(59_999);
    expect(events).toEqual([]);
    clock.advance(1);
    expect(events).toEqual(["expire@119.999"]);
  });

  it("a refresh that never succeeds (no new start()) ends in the BYE, and nothing fires after it", () => {
    const { clock, events, timer } = harness();
    timer.start({ interval: 90, refresher: "local" });
    clock.advance(45_000);
    expect(events).toEqual(["refresh@45"]);
    clock.advance(15_000);
    expect(events).toEqual(["refresh@45", "expire@60"]);
    clock.advance(100_000);
    expect(events).toHaveLength(2);
  });

  it("stop() and start(undefined) leave no timer; out-of-range intervals are clamped", () => {
    const { clock, events, timer } = harness();
    timer.start({ interval: 1800, refresher: "local" });
    timer.stop();
    expect(clock.pendingTimers()).toBe(0);
    expect(timer.current).toBeUndefined();
    timer.start(undefined);
    expect(clock.pendingTimers()).toBe(0);
    timer.start({ interval: 1, refresher: "local" });
    expect(timer.current).toEqual({ interval: 90, refresher: "local" });
    timer.start({ interval: 10 ** 9, refresher: "remote" });
    expect(timer.current).toEqual({ interval: 86_400, refresher: "remote" });
    clock.advance(86_400_000);
    expect(events).toEqual(["expire@86368"]);
  });

  it("end to end: a 2xx's Session-Expires drives the timer", () => {
    const { clock, events, timer } = harness();
    timer.start(uacResult(ok([["Session-Expires", "1800;refresher=uas"]])).timer);
    clock.advance(1_768_000);
    expect(events).toEqual(["expire@1768"]);
    expect(header(ok([["Session-Expires", "1"]]), "Session-Expires")).toBe("1");
  });
});
