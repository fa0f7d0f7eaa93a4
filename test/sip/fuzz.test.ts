/**
 * Deterministic fuzzing: 100 000 seeded mutations of the torture corpus (and a message of our
 * own) through parseMessage. The only thing it may throw is a SipParseError, and never with
 * the "sip-parse-internal" code that marks a parser bug. (The framer's own 100 000-mutation
 * fuzz is in framer.test.ts, so that the two run on separate workers.)
 */
import { readdirSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { describe, expect, it } from "vitest";
import { SipParseError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { parseMessage } from "../../firmware/sip/message/parse.ts";

const DIR = fileURLToPath(new URL("../fixtures/sip-torture/", import.meta.url));
const CORPUS: Buffer[] = readdirSync(DIR)
  .filter((f) => f.endsWith(".dat"))
  .sort()
  .map((f) => readFileSync(`${DIR}${f}`));
CORPUS.push(
  Buffer.from(
    'REGISTER sip:lab.test SIP/2.0\r\nVia: SIP/2.0/TLS [2001:db8::2]:5061;branch=z9hG4bK1;rport\r\nMax-Forwards: 70\r\nFrom: "Desk" <sip:4711@lab.test>;tag=1\r\nTo: <sip:4711@lab.test>\r\nCall-ID: c@h\r\nCSeq: 1 REGISTER\r\nContact: <sip:4711@[2001:db8::2]:5061;transport=tls>;+sip.instance="<urn:uuid:1>";expires=3600\r\nRoute: <sip:p1;lr>, <sip:p2;lr>\r\nExpires: 3600\r\nDate: Sat, 13 Nov 2010 23:29:00 GMT\r\nRetry-After: 18000;duration=3600\r\nContent-Length: 4\r\n\r\nbody',
  ),
);

const TOKENS = [
  "\r\n",
  "\r\n\r\n",
  "\r\n ",
  "\n",
  "\r",
  ":",
  ";",
  ",",
  "<",
  ">",
  '"',
  "\\",
  "%",
  "%0",
  "[",
  "]",
  "@",
  "=",
  "?",
  " ",
  "\t",
  "\x00",
  "\xff",
  "SIP/2.0",
  "SIP/2.0 ",
  "99999999999999999999",
  "4294967296",
  "-1",
  "Content-Length: 0\r\n",
  "l: 99\r\n",
  "CSeq: 1 X\r\n",
  "Via: SIP/2.0/UDP [::1\r\n",
  "sip:",
  "sips:[",
  "ü",
  "\u{1F600}",
].map((t) => Buffer.from(t, t === "\xff" ? "latin1" : "utf8"));

const DIGIT_RUNS = ["0", "65536", "4294967295", "4294967296", "256", "999999999999", ""].map((t) =>
  Buffer.from(t),
);

/** Random integers from a pre-drawn pool of seeded bytes (BigInt per draw would be slow). */
class Draw {
  private pool: Uint8Array;
  private pos = 0;
  constructor(private readonly rng: SeededRandom) {
    this.pool = rng.bytes(1 << 20);
  }
  int(n: number): number {
    if (this.pos + 3 > this.pool.length) {
      this.pool = this.rng.bytes(1 << 20);
      this.pos = 0;
    }
    const p = this.pool;
    const v = p[this.pos]! | (p[this.pos + 1]! << 8) | (p[this.pos + 2]! << 16);
    this.pos += 3;
    return n <= 0 ? 0 : v % n;
  }
}

function mutate(d: Draw, input: Buffer): Buffer {
  let b = input;
  const rounds = 1 + d.int(4);
  for (let r = 0; r < rounds; r++) {
    const at = d.int(b.length + 1);
    switch (d.int(7)) {
      case 0: {
        if (b.length === 0) break;
        const c = Buffer.from(b);
        c[d.int(c.length)] = d.int(256);
        b = c;
        break;
      }
      case 1:
        b = Buffer.concat([b.subarray(0, at), TOKENS[d.int(TOKENS.length)]!, b.subarray(at)]);
        break;
      case 2:
        b = Buffer.concat([b.subarray(0, at), b.subarray(at + 1 + d.int(40))]);
        break;
      case 3: {
        const len = 1 + d.int(60);
        b = Buffer.concat([b.subarray(0, at + len), b.subarray(at, at + len), b.subarray(at + len)]);
        break;
      }
      case 4:
        b = b.subarray(0, at);
        break;
      case 5: {
        // swap two header lines
        const lines = b.toString("latin1").split("\r\n");
        const i = 1 + d.int(lines.length - 1);
        const j = 1 + d.int(lines.length - 1);
        if (i < lines.length && j < lines.length) [lines[i], lines[j]] = [lines[j]!, lines[i]!];
        b = Buffer.from(lines.join("\r\n"), "latin1");
        break;
      }
      default: {
        // replace the digit run at or after a random position
        let i = at;
        while (i < b.length && (b[i]! < 0x30 || b[i]! > 0x39)) i++;
        let j = i;
        while (j < b.length && b[j]! >= 0x30 && b[j]! <= 0x39) j++;
        if (i < b.length) {
          const repl = DIGIT_RUNS[d.int(DIGIT_RUNS.length)]!;
          b = Buffer.concat([b.subarray(0, i), repl, b.subarray(j)]);
        }
      }
    }
  }
  return b;
}

function expectTyped(err: unknown, where: string): void {
  if (!(err instanceof SipParseError)) throw new Error(`${where}: unexpected ${String(err)}`);
  if (err.code === "sip-parse-internal") throw new Error(`${where}: parser bug: ${err.message}`);
}

describe("fuzz", () => {
  it("100 000 seeded mutations: parseMessage only ever throws SipParseError", () => {
    // Stack traces are not what this test looks at, and capturing 100 000 of them is slow.
    const stackTraceLimit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      run();
    } finally {
      Error.stackTraceLimit = stackTraceLimit;
    }
  });
});

function run(): void {
  const d = new Draw(new SeededRandom(0x5157));
  let parsed = 0;
  let rejected = 0;
  for (let n = 0; n < 100_000; n++) {
    const input = mutate(d, CORPUS[d.int(CORPUS.length)]!);
    try {
      parseMessage(input);
      parsed++;
    } catch (err) {
      expectTyped(err, `parseMessage #${n}`);
      rejected++;
    }
  }
  expect(parsed + rejected).toBe(100_000);
  // the mutations are mild enough that both outcomes are well exercised
  expect(parsed).toBeGreaterThan(10_000);
  expect(rejected).toBeGreaterThan(10_000);
}
