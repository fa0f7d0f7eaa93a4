/** Stream framer: RFC 3261 §18.3 framing and RFC 5626 §3.5.1 keep-alives. */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { SipParseError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { type FramerEvent, StreamFramer } from "../../firmware/sip/message/framer.ts";
import { header } from "../../firmware/sip/message/message.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";

const DIR = fileURLToPath(new URL("../fixtures/sip-torture/", import.meta.url));

const MSG1 = Buffer.from(
  "REGISTER sip:lab.test SIP/2.0\r\nVia: SIP/2.0/TLS 10.0.0.2;branch=z9hG4bK1\r\nCSeq: 1 REGISTER\r\n" +
    "Call-ID: r1@10.0.0.2\r\nContent-Length: 5\r\n\r\nhello",
);
const MSG2 = Buffer.from(
  "SIP/2.0 200 OK\r\nv: SIP/2.0/TLS 10.0.0.2;branch=z9hG4bK1\r\nCSeq: 1 REGISTER\r\nl: 7\r\n\r\n\r\n\r\nxyz",
);

const kinds = (events: FramerEvent[]): string[] =>
  events.map((e) =>
    e.type === "message"
      ? `message:${e.message.kind}`
      : e.type === "error"
        ? `error:${e.error.code}`
        : e.type,
  );

function feed(framer: StreamFramer, ...chunks: Array<Buffer | string>): FramerEvent[] {
  return chunks.flatMap((c) => framer.push(typeof c === "string" ? Buffer.from(c) : c));
}

describe("StreamFramer", () => {
  it("frames two messages split at every byte position (and three-way splits)", () => {
    const both = Buffer.concat([MSG1, MSG2]);
    const expected = [parseMessage(MSG1), parseMessage(MSG2)];
    for (let i = 0; i <= both.length; i++) {
      const events = feed(new StreamFramer(), both.subarray(0, i), both.subarray(i));
      expect(kinds(events), `split at ${i}`).toEqual(["message:request", "message:response"]);
      expect(events.map((e) => (e.type === "message" ? e.message : null))).toEqual(expected);
    }
    for (let i = 0; i < both.length; i += 7) {
      for (let j = i; j <= both.length; j += 11) {
        const events = feed(new StreamFramer(), both.subarray(0, i), both.subarray(i, j), both.subarray(j));
        expect(kinds(events)).toEqual(["message:request", "message:response"]);
      }
    }
  });

  it("frames byte by byte and many messages in one chunk", () => {
    const f = new StreamFramer();
    const events: FramerEvent[] = [];
    for (const b of Buffer.concat([MSG1, MSG2, MSG1])) events.push(...f.push(Buffer.from([b])));
    expect(kinds(events)).toEqual(["message:request", "message:response", "message:request"]);
    const many = Buffer.concat(Array.from({ length: 50 }, (_, i) => (i % 2 ? MSG2 : MSG1)));
    expect(new StreamFramer().push(many)).toHaveLength(50);
    expect(f.buffered).toBe(0);
  });

  it("reports CRLFCRLF as ping and a lone CRLF as pong", () => {
    expect(kinds(feed(new StreamFramer(), "\r\n\r\n"))).toEqual(["ping"]);
    expect(kinds(feed(new StreamFramer(), "\r\n"))).toEqual(["pong"]);
    expect(kinds(feed(new StreamFramer(), "\r\n\r\n\r\n"))).toEqual(["ping", "pong"]);
    expect(kinds(feed(new StreamFramer(), "\r\n\r\n\r\n\r\n"))).toEqual(["ping", "ping"]);
    expect(
      kinds(
        feed(new StreamFramer(), Buffer.concat([MSG1, Buffer.from("\r\n\r\n"), MSG2, Buffer.from("\r\n")])),
      ),
    ).toEqual(["message:request", "ping", "message:response", "pong"]);
    expect(kinds(feed(new StreamFramer(), "\r\n", MSG1))).toEqual(["pong", "message:request"]);
  });

  it("answers a ping split inside a CRLF, and counts back-to-back lone CRLFs as two pongs", () => {
    expect(kinds(feed(new StreamFramer(), "\r", "\n\r\n"))).toEqual(["ping"]);
    expect(kinds(feed(new StreamFramer(), "\r\n\r", "\n"))).toEqual(["ping"]);
    // Two pongs answering two of our probes, not a ping: a peer writes its ping in one piece.
    expect(kinds(feed(new StreamFramer(), "\r", "\n", "\r", "\n"))).toEqual(["pong", "pong"]);
    // a lone CRLF is reported at once: a keep-alive timer must not wait for more bytes
    const f = new StreamFramer();
    expect(kinds(f.push(Buffer.from("\r\n")))).toEqual(["pong"]);
    expect(kinds(f.push(MSG1))).toEqual(["message:request"]);
  });

  it("reports a parse error in a well-framed message and goes on", () => {
    const bad = Buffer.from(
      "OPTIONS sip:a@b SIP/7.0\r\nVia: SIP/2.0/TCP h\r\nCSeq: 1 OPTIONS\r\nContent-Length: 2\r\n\r\nhi",
    );
    const f = new StreamFramer();
    expect(kinds(feed(f, Buffer.concat([MSG1, bad, MSG2])))).toEqual([
      "message:request",
      "error:sip-version",
      "message:response",
    ]);
    expect(f.failed).toBeUndefined();
  });

  it("fails for good on an oversize header section or body, and on bad Content-Length", () => {
    const f = new StreamFramer({ maxMessageBytes: 100 });
    expect(kinds(f.push(Buffer.from(`OPTIONS sip:a@b SIP/2.0\r\nX: ${"a".repeat(100)}`)))).toEqual([
      "error:sip-too-large",
    ]);
    expect(f.failed?.code).toBe("sip-too-large");
    expect(kinds(f.push(MSG1))).toEqual(["error:sip-too-large"]);

    const g = new StreamFramer({ maxMessageBytes: 200 });
    expect(kinds(g.push(Buffer.from("SIP/2.0 200 OK\r\nContent-Length: 500\r\n\r\n")))).toEqual([
      "error:sip-too-large",
    ]);

    // within the default limit a message is fine; beyond it the whole message is refused
    const big = Buffer.from(
      `SIP/2.0 200 OK\r\nVia: SIP/2.0/TCP h\r\nCSeq: 1 X\r\nContent-Length: 70000\r\n\r\n`,
    );
    expect(kinds(new StreamFramer().push(big))).toEqual(["error:sip-too-large"]);
    expect(kinds(new StreamFramer({ maxMessageBytes: 80000 }).push(big))).toEqual([]);

    expect(kinds(feed(new StreamFramer(), "SIP/2.0 200 OK\r\nCSeq: 1 X\r\n\r\n"))).toEqual([
      "error:sip-content-length",
    ]);
    expect(kinds(feed(new StreamFramer(), "SIP/2.0 200 OK\r\nContent-Length: -1\r\n\r\n"))).toEqual([
      "error:sip-content-length",
    ]);
    expect(kinds(feed(new StreamFramer(), readFileSync(`${DIR}mcl01.dat`)))).toEqual([
      "error:sip-content-length",
    ]);
  });

  it("waits for the body (clerr over a stream) and frames the torture corpus byte by byte", () => {
    const clerr = new StreamFramer();
    expect(clerr.push(readFileSync(`${DIR}clerr.dat`))).toEqual([]);
    expect(clerr.buffered).toBeGreaterThan(0);

    for (const file of ["wsinv.dat", "mpart01.dat", "esc01.dat", "unreason.dat", "ipv6-in-sdp.dat"]) {
      const data = readFileSync(`${DIR}${file}`);
      const f = new StreamFramer();
      const events: FramerEvent[] = [];
      for (let i = 0; i < data.length; i++) events.push(...f.push(data.subarray(i, i + 1)));
      expect(kinds(events), file).toHaveLength(1);
      const first = events[0];
      expect(first?.type).toBe("message");
      if (first?.type === "message") {
        expect(first.message).toEqual(parseMessage(data));
        expect(header(first.message, "Content-Length")).toBeDefined();
      }
    }
  });
});

/** Seeded integers; bytes are drawn from SeededRandom in bulk (a BigInt step per draw is slow). */
class Draw {
  private pool: Uint8Array = new Uint8Array(0);
  private pos = 0;
  constructor(private readonly rng: SeededRandom) {}
  int(n: number): number {
    if (this.pos + 3 > this.pool.length) {
      this.pool = this.rng.bytes(1 << 18);
      this.pos = 0;
    }
    const p = this.pool;
    const v = p[this.pos]! | (p[this.pos + 1]! << 8) | (p[this.pos + 2]! << 16);
    this.pos += 3;
    return n <= 0 ? 0 : v % n;
  }
}

const FRAMING_TOKENS = [
  "\r\n",
  "\r\n\r\n",
  "\r",
  "\n",
  "Content-Length: 3\r\n",
  "l: 99999\r\n",
  ":",
  " ",
  "\x00",
].map((t) => Buffer.from(t));

/** Framing-oriented mutations: byte flips, CRLF and Content-Length injection, cuts, digit changes. */
function mutateFraming(d: Draw, input: Buffer): Buffer {
  let b = input;
  const rounds = 1 + d.int(3);
  for (let r = 0; r < rounds; r++) {
    const at = d.int(b.length + 1);
    switch (d.int(5)) {
      case 0: {
        if (b.length === 0) break;
        const c = Buffer.from(b);
        c[d.int(c.length)] = d.int(256);
        b = c;
        break;
      }
      case 1:
        b = Buffer.concat([b.subarray(0, at), FRAMING_TOKENS[d.int(FRAMING_TOKENS.length)]!, b.subarray(at)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + d.int(30))]);
        break;
      case 3:
        b = b.subarray(0, at);
        break;
      default: {
        const c = Buffer.from(b);
        const i = c.indexOf(":", at);
        if (i >= 0 && i + 2 < c.length) c[i + 2] = 0x30 + d.int(10);
        b = c;
      }
    }
  }
  return b;
}

describe("StreamFramer fuzz", () => {
  it("100 000 seeded mutations pushed as one stream in random chunks: only SipParseError", () => {
    const corpus = readdirSync(DIR)
      .filter((f) => f.endsWith(".dat"))
      .sort()
      .map((f) => readFileSync(`${DIR}${f}`));
    corpus.push(MSG1, MSG2);
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0; // stacks are not looked at; capturing 100 000 of them is slow
    const counts = { message: 0, error: 0, ping: 0, pong: 0, connections: 1 };
    try {
      const d = new Draw(new SeededRandom(0xf4a3));
      let framer = new StreamFramer({ maxMessageBytes: 4096 });
      for (let n = 0; n < 100_000; n++) {
        const input = mutateFraming(d, corpus[d.int(corpus.length)]!);
        // one framer per "connection" until it fails for good, as a transport would do
        if (framer.failed) {
          framer = new StreamFramer({ maxMessageBytes: 4096 });
          counts.connections++;
        }
        for (let pos = 0; pos < input.length; ) {
          const len = 1 + d.int(input.length);
          let events: FramerEvent[];
          try {
            events = framer.push(input.subarray(pos, pos + len));
          } catch (err) {
            throw new Error(`push threw on mutation #${n}: ${String(err)}`);
          }
          for (const e of events) {
            counts[e.type]++;
            // plain checks: vitest's expect() is too slow to call 100 000 times
            if (
              e.type === "error" &&
              (!(e.error instanceof SipParseError) || e.error.code === "sip-parse-internal")
            )
              throw new Error(`mutation #${n}: unexpected error ${String(e.error)}`);
          }
          pos += len;
        }
      }
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
    expect(counts.message).toBeGreaterThan(5_000);
    expect(counts.error).toBeGreaterThan(5_000);
    expect(counts.connections).toBeGreaterThan(100);
  });
});
