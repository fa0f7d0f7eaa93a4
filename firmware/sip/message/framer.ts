/**
 * Stream framer for SIP over TCP/TLS (RFC 3261 §18.3) with RFC 5626 §3.5.1 keep-alives.
 *
 * push() takes bytes as they arrive (split anywhere, several messages per chunk) and returns
 * what became complete:
 * - "message": a framed message, parsed by parseMessage. Content-Length is mandatory on
 *   streams; the header section ends at the first CRLFCRLF.
 * - "ping": CRLFCRLF between messages. The owner of the connection must answer with a single
 *   CRLF ("pong").
 * - "pong": a lone CRLF between messages, reported at once (keep-alive timers must not wait
 *   for more data). Two lone CRLFs in separate chunks are two pongs, not a ping: a peer writes
 *   its CRLFCRLF ping in one write, so it arrives in one TLS record, whereas back-to-back pongs
 *   answering our own probes are common and must each count as an answer.
 * - "error" with a message whose framing was intact (Content-Length known) but which does not
 *   parse: the code comes from parseMessage, and framing continues with the next message.
 *
 * Fatal errors: a header section or message larger than maxMessageBytes (code
 * "sip-too-large"), and a missing, malformed or conflicting Content-Length (code
 * "sip-content-length"). After one, the byte stream cannot be re-synchronised: the framer
 * drops its buffer, stays unusable (every later push() repeats the error) and the owner MUST
 * close the connection (RFC 4475 §3.1.2.3, §3.3.9).
 */
import { SipParseError } from "../../core/errors.ts";
import type { SipMessage } from "./message.ts";
import { contentLengthValues, parseMessage, resolveContentLength, SipParseCodes } from "./parse.ts";

export type FramerEvent =
  | { type: "message"; message: SipMessage }
  | { type: "ping" }
  | { type: "pong" }
  | { type: "error"; error: SipParseError };

const CRLFCRLF = Buffer.from("\r\n\r\n");
const CR = 0x0d;
const LF = 0x0a;

export class StreamFramer {
  private readonly max: number;
  private buf: Buffer = Buffer.alloc(0);
  private start = 0;
  private end = 0;
  /** Offset (relative to start) where the search for CRLFCRLF resumes; 0 at a message boundary. */
  private scanFrom = 0;
  /** Length of the current message's header section including CRLFCRLF, once known. */
  private headLength = -1;
  private bodyLength = 0;
  private failure: SipParseError | undefined;

  constructor(opts?: { maxMessageBytes?: number }) {
    this.max = opts?.maxMessageBytes ?? 65536;
  }

  /** The fatal error, once the framer has become unusable. */
  get failed(): SipParseError | undefined {
    return this.failure;
  }

  /** Bytes buffered towards an incomplete message. */
  get buffered(): number {
    return this.end - this.start;
  }

  push(chunk: Buffer): FramerEvent[] {
    if (this.failure !== undefined) return [{ type: "error", error: this.failure }];
    if (chunk.length === 0) return [];
    this.append(chunk);
    const events: FramerEvent[] = [];
    for (;;) {
      const avail = this.end - this.start;
      if (this.headLength < 0) {
        if (this.scanFrom === 0 && avail > 0 && this.buf[this.start] === CR) {
          if (avail < 2) break;
          if (this.buf[this.start + 1] === LF) {
            if (avail >= 4 && this.buf[this.start + 2] === CR && this.buf[this.start + 3] === LF) {
              this.consume(4);
              events.push({ type: "ping" });
              continue;
            }
            if (avail === 3 && this.buf[this.start + 2] === CR) break; // maybe a ping: wait
            this.consume(2);
            events.push({ type: "pong" });
            continue;
          }
        }
        if (avail === 0) break;
        const from = this.start + this.scanFrom;
        const idx = this.buf.subarray(0, this.end).indexOf(CRLFCRLF, from);
        if (idx < 0) {
          if (avail > this.max) {
            this.die(
              new SipParseError(
                `header section exceeds ${this.max} bytes without an end`,
                SipParseCodes.tooLarge,
              ),
            );
            events.push({ type: "error", error: this.failure! });
            break;
          }
          this.scanFrom = Math.max(1, avail - 3);
          break;
        }
        const headLength = idx + 4 - this.start;
        let cl: number | undefined;
        try {
          cl = resolveContentLength(contentLengthValues(this.buf.subarray(this.start, idx)));
        } catch (err) {
          this.die(err as SipParseError);
          events.push({ type: "error", error: this.failure! });
          break;
        }
        if (cl === undefined) {
          this.die(
            new SipParseError(
              "Content-Length is mandatory on stream transports",
              SipParseCodes.contentLength,
            ),
          );
          events.push({ type: "error", error: this.failure! });
          break;
        }
        if (headLength + cl > this.max) {
          this.die(
            new SipParseError(
              `message of ${headLength + cl} bytes exceeds the limit of ${this.max}`,
              SipParseCodes.tooLarge,
            ),
          );
          events.push({ type: "error", error: this.failure! });
          break;
        }
        this.headLength = headLength;
        this.bodyLength = cl;
      }
      const total = this.headLength + this.bodyLength;
      if (avail < total) break;
      const bytes = Buffer.from(this.buf.subarray(this.start, this.start + total));
      this.consume(total);
      try {
        events.push({ type: "message", message: parseMessage(bytes) });
      } catch (err) {
        events.push({ type: "error", error: err as SipParseError });
      }
    }
    return events;
  }

  private consume(n: number): void {
    this.start += n;
    this.scanFrom = 0;
    this.headLength = -1;
    this.bodyLength = 0;
    if (this.start === this.end) {
      this.start = 0;
      this.end = 0;
    }
  }

  private append(chunk: Buffer): void {
    if (this.end + chunk.length > this.buf.length) {
      const live = this.end - this.start;
      if (live + chunk.length <= this.buf.length && this.start > 0) {
        this.buf.copy(this.buf, 0, this.start, this.end);
      } else {
        const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, live + chunk.length, 4096));
        this.buf.copy(next, 0, this.start, this.end);
        this.buf = next;
      }
      this.start = 0;
      this.end = live;
    }
    chunk.copy(this.buf, this.end);
    this.end += chunk.length;
  }

  private die(error: SipParseError): void {
    this.failure = error;
    this.buf = Buffer.alloc(0);
    this.start = 0;
    this.end = 0;
  }
}
