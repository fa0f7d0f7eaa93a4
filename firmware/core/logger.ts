/**
 * Logging as a port. Records are structured; the sink (platform/log-sink.ts or a test
 * capture) decides how they are written. Secrets never reach a logger: callers redact first,
 * and `redact()` exists so that they can.
 */
export type LogLevel = "debug" | "info" | "warn" | "error";

export interface LogRecord {
  level: LogLevel;
  category: string;
  message: string;
  fields?: Record<string, unknown>;
}

export interface Logger {
  debug(message: string, fields?: Record<string, unknown>): void;
  info(message: string, fields?: Record<string, unknown>): void;
  warn(message: string, fields?: Record<string, unknown>): void;
  error(message: string, fields?: Record<string, unknown>): void;
  child(category: string): Logger;
}

export type LogSink = (record: LogRecord) => void;

export function createLogger(sink: LogSink, category = "handset"): Logger {
  const at =
    (level: LogLevel) =>
    (message: string, fields?: Record<string, unknown>): void =>
      sink(fields ? { level, category, message, fields } : { level, category, message });
  return {
    debug: at("debug"),
    info: at("info"),
    warn: at("warn"),
    error: at("error"),
    child: (sub) => createLogger(sink, `${category}.${sub}`),
  };
}

export const silentLogger: Logger = createLogger(() => {});

/** Replaces TLS-DSK and other auth parameters that carry secrets-derived or bulky values. */
export function redact(text: string): string {
  return text
    .replace(/(gssapi-data|response|rspauth)="[^"]*"/gi, '$1="…"')
    .replace(/(-----BEGIN [A-Z ]*PRIVATE KEY-----)[\s\S]*?(-----END [A-Z ]*PRIVATE KEY-----)/g, "$1…$2");
}
