/** firmware/telemetry/payloads.ts: every payload's shape, versioned, typed fields only. */
import { describe, expect, it } from "vitest";
import {
  type DeviceState,
  eventPayload,
  isEventType,
  lostPayload,
  offlinePayload,
  plainData,
  replyPayload,
  reportedPayload,
  statePayload,
} from "../../firmware/telemetry/payloads.ts";

const NOW = Date.UTC(2026, 0, 2, 3, 4, 5);
const device: DeviceState = {
  state: "limited",
  registrar: "sba.lab.test:5061",
  primary: false,
  limited: true,
  uri: "sip:4711@lab.test",
  certificate: { notAfter: Date.UTC(2026, 6, 1), subject: "CN=4711" },
  firmware: { version: "0.2.0", slot: "b" },
  uptimeS: 99.7,
  addresses: { ip: "192.0.2.10", mac: "02:00:00:00:00:01" },
};

const parse = (s: string) => JSON.parse(s) as Record<string, unknown>;

describe("payloads", () => {
  it("state: every field, ISO times, the session and the outbox", () => {
    expect(parse(statePayload(device, { birthSeq: 7, outbox: { queued: 3, dropped: 1 }, now: NOW }))).toEqual(
      {
        v: 1,
        state: "limited",
        registrar: "sba.lab.test:5061",
        primary: false,
        limited: true,
        uri: "sip:4711@lab.test",
        certificate: { notAfter: "2026-07-01T00:00:00.000Z", subject: "CN=4711" },
        firmware: { version: "0.2.0", slot: "b" },
        uptimeS: 99,
        addresses: { ip: "192.0.2.10", mac: "02:00:00:00:00:01" },
        call: null,
        birthSeq: 7,
        outbox: { queued: 3, dropped: 1 },
        ts: "2026-01-02T03:04:05.000Z",
      },
    );
  });

  it("state: optional fields stay out; extra properties never ride along", () => {
    const bare = {
      state: "booting",
      limited: false,
      firmware: { version: "0.1.0", key: "x" },
      uptimeS: 0,
      addresses: {},
      pin: "1234",
    } as unknown as DeviceState;
    expect(parse(statePayload(bare, { birthSeq: 1, outbox: { queued: 0, dropped: 0 }, now: NOW }))).toEqual({
      v: 1,
      state: "booting",
      limited: false,
      firmware: { version: "0.1.0" },
      uptimeS: 0,
      addresses: {},
      call: null,
      birthSeq: 1,
      outbox: { queued: 0, dropped: 0 },
      ts: "2026-01-02T03:04:05.000Z",
    });
  });

  it("state: the call up now, its start as ISO time; nothing but its four fields", () => {
    const withCall = {
      ...device,
      call: {
        state: "connected",
        direction: "incoming",
        remote: "4712",
        since: NOW,
        uri: "sip:x",
        name: "Bob",
      },
    } as unknown as DeviceState;
    const p = parse(statePayload(withCall, { birthSeq: 7, outbox: { queued: 0, dropped: 0 }, now: NOW }));
    expect(p.call).toEqual({
      state: "connected",
      direction: "incoming",
      remote: "4712",
      since: "2026-01-02T03:04:05.000Z",
    });
  });

  it("lost (the will) and offline", () => {
    expect(lostPayload(4)).toBe('{"v":1,"state":"lost","birthSeq":4}');
    expect(parse(offlinePayload(4, NOW))).toEqual({
      v: 1,
      state: "offline",
      birthSeq: 4,
      ts: "2026-01-02T03:04:05.000Z",
    });
  });

  it("event: {v, seq, ts, type, ...fields}; codes kept, prose, secrets and reserved names left out", () => {
    const e = parse(
      eventPayload({
        seq: 12,
        now: NOW,
        type: "registrar.failover",
        fields: {
          from: "pool.lab.test:5061",
          to: "sba.lab.test:5061",
          primary: false,
          attempt: 3,
          code: "flow-dead",
          message: "the user typed this",
          pin: "1234",
          webTicket: "abc",
          seq: 99,
          type: "x",
          nan: Number.NaN,
          gone: undefined,
        },
      }),
    );
    expect(e).toEqual({
      v: 1,
      seq: 12,
      ts: "2026-01-02T03:04:05.000Z",
      type: "registrar.failover",
      from: "pool.lab.test:5061",
      to: "sba.lab.test:5061",
      primary: false,
      attempt: 3,
      code: "flow-dead",
    });
    expect(Object.keys(e).slice(0, 4)).toEqual(["v", "seq", "ts", "type"]);
  });

  it("event types are codes", () => {
    for (const ok of ["state", "sign-in.failed", "cert.renewed", "registrar.failover"])
      expect(isEventType(ok)).toBe(true);
    for (const bad of ["", "State", "a b", "x.", "1x", "sign in"]) expect(isEventType(bad), bad).toBe(false);
  });

  it("config/reported", () => {
    expect(
      parse(
        reportedPayload(
          {
            version: 3,
            layers: { org: 1, device: 3 },
            applied: { "log.level": "debug" },
            pending: ["utcOffsetMinutes"],
            refused: { nope: "unknown option" },
          },
          NOW,
        ),
      ),
    ).toEqual({
      v: 1,
      version: 3,
      layers: { org: 1, device: 3 },
      applied: { "log.level": "debug" },
      pending: ["utcOffsetMinutes"],
      refused: { nope: "unknown option" },
      ts: "2026-01-02T03:04:05.000Z",
    });
  });

  it("command replies for each status", () => {
    expect(parse(replyPayload({ command: "ping", status: "ok", result: { pong: true } }))).toEqual({
      v: 1,
      command: "ping",
      status: "ok",
      result: { pong: true },
    });
    expect(parse(replyPayload({ command: "reboot", status: "deferred" }))).toEqual({
      v: 1,
      command: "reboot",
      status: "deferred",
    });
    expect(
      parse(
        replyPayload({ command: "x", status: "refused", error: { code: "unknown-command", message: "no" } }),
      ),
    ).toEqual({ v: 1, command: "x", status: "refused", error: { code: "unknown-command", message: "no" } });
    expect(
      parse(replyPayload({ command: "update", status: "error", error: { code: "update-bad", message: "m" } }))
        .status,
    ).toBe("error");
  });

  it("a result is copied as plain data without secrets", () => {
    class Secretive {
      key = "hidden";
    }
    expect(
      plainData({
        lines: ["a", "b"],
        certificate: { subject: "CN=4711", privateKey: "k" },
        pin: "1234",
        password: "p",
        key: "k",
        pem: "-----BEGIN PRIVATE KEY-----\nMII\n-----END PRIVATE KEY-----",
        instance: new Secretive(),
        buffer: Buffer.from("x"),
        fn: () => 1,
        n: Number.POSITIVE_INFINITY,
        mapping: "kept",
        ping: "kept",
      }),
    ).toEqual({
      lines: ["a", "b"],
      certificate: { subject: "CN=4711" },
      pem: "(withheld)",
      mapping: "kept",
      ping: "kept",
    });
  });
});
