/**
 * The option table as a reference for people: `handset config --defaults` prints it (text, or
 * one JSON event with --json), and README.md carries the Markdown form (a test keeps the two the
 * same). Pure.
 */
import { OPTIONS, type Option } from "./options.ts";

export interface ReferenceRow {
  name: string;
  type: string;
  /** The default as it would be written in the JSON file; absent when there is none. */
  default?: unknown;
  required: boolean;
  secret: boolean;
  /** Settable over MQTT (config/desired): applied "live" or at the next "idle" moment. */
  remote?: "live" | "idle";
  description: string;
}

export function referenceRows(): ReferenceRow[] {
  return Object.entries(OPTIONS as Record<string, Option<unknown>>).map(([name, o]) => ({
    name,
    type: o.kind.type,
    ...(o.default !== undefined ? { default: o.kind.toJson(o.default) } : {}),
    required: o.required,
    secret: o.secret,
    ...(o.remote ? { remote: o.remote } : {}),
    description: o.description,
  }));
}

const defaultText = (r: ReferenceRow): string =>
  r.default !== undefined ? `default ${JSON.stringify(r.default)}` : r.required ? "required" : "optional";

/** Plain text for a terminal: one block per option. */
export function referenceText(): string {
  const rows = referenceRows();
  const width = Math.max(...rows.map((r) => r.name.length));
  return rows
    .map(
      (r) =>
        `${r.name.padEnd(width)}  ${r.type}  ${defaultText(r)}${r.secret ? "  secret" : ""}${r.remote ? `  fleet: ${r.remote}` : ""}\n` +
        `${" ".repeat(width)}  ${r.description}`,
    )
    .join("\n");
}

/** The Markdown table in README.md. */
export function referenceMarkdown(): string {
  const cell = (s: string) => s.replaceAll("|", "\\|");
  const lines = [
    "| option | type | default | secret | over MQTT | description |",
    "| --- | --- | --- | --- | --- | --- |",
    ...referenceRows().map(
      (r) =>
        `| \`${r.name}\` | ${cell(r.type)} | ${cell(r.default !== undefined ? `\`${JSON.stringify(r.default)}\`` : r.required ? "required" : "unset")} | ${r.secret ? "yes" : "no"} | ${r.remote ?? "no"} | ${cell(r.description)} |`,
    ),
  ];
  return lines.join("\n");
}
