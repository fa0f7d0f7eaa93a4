/**
 * The command-line contract (DESIGN.md): with --json one JSON object per line; without it,
 * readable lines. Errors are one line either way, and JSON mode also gets an "error" event.
 */
import { asHandsetError } from "../core/errors.ts";

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

export function createOutput(
  json: boolean,
  write: (line: string) => void,
  writeErr: (line: string) => void,
): Output {
  return {
    json,
    event: (e) => write(json ? JSON.stringify(e) : human(e)),
    error: (err) => {
      const e = asHandsetError(err);
      // A configuration error also names its key as a field ("network.dhcp.interface").
      const key = (e as { key?: unknown }).key;
      if (json)
        write(
          JSON.stringify({
            event: "error",
            code: e.code,
            message: e.message,
            ...(typeof key === "string" && key ? { key } : {}),
          }),
        );
      writeErr(`handset: ${e.message} (${e.code})`);
    },
  };
}
