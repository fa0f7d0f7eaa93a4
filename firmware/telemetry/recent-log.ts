/**
 * The last N log records, kept in memory for the fleet's `diagnostics` (what an admin asks for
 * first when a phone misbehaves: its own recent log, without a console on the wall). Records
 * already hold no secret by the Logger contract; this keeps a second fence anyway: a field whose
 * name smells of a secret is replaced, and PEM blocks or long base64 runs in any text are cut.
 */
import type { LogLevel, LogRecord } from "../core/logger.ts";

export interface RecentLogLine {
  /** Epoch ms on the phone's clock. */
  at: number;
  level: LogLevel;
  category: string;
  message: string;
  fields?: Record<string, unknown>;
}

const LEVELS: Record<LogLevel, number> = { debug: 0, info: 1, warn: 2, error: 3 };
const SECRET_NAME = /pin|password|passwd|secret|ticket|token|private|key(?!s?$)|credential|pem/i;
const PEM = /-----BEGIN [^-]+-----[\s\S]*?(-----END [^-]+-----|$)/g;
const LONG_BASE64 = /[A-Za-z0-9+/=_-]{64,}/g;

export function redactText(s: string): string {
  return s.replace(PEM, "[pem removed]").replace(LONG_BASE64, "[removed]");
}

function redactValue(v: unknown, depth: number): unknown {
  if (typeof v === "string") return redactText(v);
  if (typeof v === "number" || typeof v === "boolean" || v === null || v === undefined) return v;
  if (depth > 3) return "[nested]";
  if (Array.isArray(v)) return v.slice(0, 20).map((e) => redactValue(e, depth + 1));
  if (typeof v === "object") {
    const out: Record<string, unknown> = {};
    for (const [k, e] of Object.entries(v as Record<string, unknown>))
      out[k] = SECRET_NAME.test(k) ? "[redacted]" : redactValue(e, depth + 1);
    return out;
  }
  return String(v);
}

export class RecentLog {
  private readonly lines: RecentLogLine[] = [];

  constructor(private readonly o: { capacity: number; now: () => number; minLevel?: LogLevel }) {}

  /** A LogSink: keep the record (redacted) if it is at least minLevel (default info). */
  readonly sink = (r: LogRecord): void => {
    if (LEVELS[r.level] < LEVELS[this.o.minLevel ?? "info"]) return;
    const line: RecentLogLine = {
      at: this.o.now(),
      level: r.level,
      category: r.category,
      message: redactText(r.message),
    };
    if (r.fields) line.fields = redactValue(r.fields, 0) as Record<string, unknown>;
    this.lines.push(line);
    if (this.lines.length > this.o.capacity) this.lines.splice(0, this.lines.length - this.o.capacity);
  };

  /** The newest `n` lines, oldest first. */
  recent(n = this.o.capacity): RecentLogLine[] {
    return this.lines.slice(-n);
  }
}

/** Whether a record at `level` passes a threshold. */
export function atLeast(level: LogLevel, threshold: LogLevel): boolean {
  return LEVELS[level] >= LEVELS[threshold];
}
