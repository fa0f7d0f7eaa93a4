/**
 * The command-line contract (DESIGN.md): with --json one JSON object per line, each with the
 * ISO time it was written (`ts`); without it, readable lines. Errors are one line either way,
 * and JSON mode also gets an "error" event.
 */
import { asHandsetError } from "../core/errors.ts";
import { createLogger, type Logger, type LogSink, silentLogger } from "../core/logger.ts";
import { SystemClock } from "../platform/system-clock.ts";

export interface Output {
  json: boolean;
  event(e: { event: string; [k: string]: unknown }): void;
  error(err: unknown): void;
}

function human(e: { event: string; [k: string]: unknown }): string {
  const { event, ...rest } = e;
  const parts = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return `${event}${parts.length ? ` ${parts.join(" ")}` : ""}`;
}

/** One line of text: an error's message never runs over several lines (nor carries a stack). */
const oneLine = (text: string) => text.split("\n")[0]!.trim() || "(no message)";

const systemClock = new SystemClock();

export function createOutput(
  json: boolean,
  write: (line: string) => void,
  writeErr: (line: string) => void,
  /** The time stamped on each JSON event, epoch ms (the OS clock: a log line's time, not the phone's). */
  now: () => number = () => systemClock.now(),
): Output {
  const stamp = ({ event, ...rest }: { event: string; [k: string]: unknown }) => ({
    event,
    ts: new Date(now()).toISOString(),
    ...rest,
  });
  return {
    json,
    event: (e) => write(json ? JSON.stringify(stamp(e)) : human(e)),
    error: (err) => {
      const e = asHandsetError(err);
      const message = oneLine(e.message);
      // A configuration error also names its key as a field ("network.dhcp.interface"), an
      // input error its flag and file.
      const named: Record<string, unknown> = {};
      for (const k of ["key", "flag", "file"] as const) {
        const v = (e as unknown as Record<string, unknown>)[k];
        if (typeof v === "string" && v) named[k] = v;
      }
      if (json) write(JSON.stringify(stamp({ event: "error", code: e.code, message, ...named })));
      writeErr(`handset: ${message} (${e.code})`);
    },
  };
}

/** A log record as a `log` event, its fields included (they hold no secret). */
export function logEventSink(out: Output): LogSink {
  return (r) => {
    let fields: unknown;
    try {
      fields = r.fields ? JSON.parse(JSON.stringify(r.fields)) : undefined;
    } catch {
      fields = undefined; // a field JSON cannot carry (a cycle, a bigint): the message still goes out
    }
    out.event({
      event: "log",
      level: r.level,
      category: r.category,
      message: r.message,
      ...(fields !== undefined ? { fields } : {}),
    });
  };
}

/** With --verbose every log record is a `log` event; without it the command logs nothing. */
export function logSink(out: Output, verbose: boolean): Logger {
  return verbose ? createLogger(logEventSink(out)) : silentLogger;
}
