/**
 * Logging as a port. Records are structured; the sink (the command line's event printer or a test
 * capture) decides how they are written. Secrets never reach a logger: callers pass fields
 * that hold no PIN, ticket or key (a test scans every record of a sign-in for them).
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
