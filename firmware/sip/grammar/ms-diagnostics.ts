/**
 * The `ms-diagnostics` grammar ([MS-OCER] §2.2.1.1), shared by the registrar's SIP header
 * (ms-diagnostics, ms-diagnostics-public) and the web services' HTTP `X-Ms-diagnostics`:
 *
 *   <ErrorId>[.<sub>];reason="<text>";source="<fqdn>"[;name=value]*
 *
 * Pure: text in, fields out. What an ErrorId means is decided by the reader's own table.
 */

export interface MsDiagnostic {
  id: number;
  /** `.N` after the id, when present. */
  subId?: number;
  /** key="value" pairs, keys lower-cased (reason, source, …). Display only. */
  fields: Record<string, string>;
}

/**
 * Reads `id[.sub];key="value";key=value…`. Undefined when there is no leading decimal id (or it
 * is absurdly long). Quoted values may contain `;` and backslash escapes.
 */
export function parseMsDiagnostics(value: string): MsDiagnostic | undefined {
  const s = value.trim();
  let i = 0;
  while (i < s.length && s[i]! >= "0" && s[i]! <= "9") i++;
  if (i === 0 || i > 9) return undefined;
  const id = Number(s.slice(0, i));
  let subId: number | undefined;
  if (s[i] === ".") {
    const start = ++i;
    while (i < s.length && s[i]! >= "0" && s[i]! <= "9") i++;
    if (i > start && i - start <= 9) subId = Number(s.slice(start, i));
  }
  const fields: Record<string, string> = {};
  while (i < s.length) {
    while (i < s.length && (s[i] === ";" || s[i] === " " || s[i] === "\t")) i++;
    const keyStart = i;
    while (i < s.length && s[i] !== "=" && s[i] !== ";") i++;
    const key = s.slice(keyStart, i).trim().toLowerCase();
    if (s[i] !== "=") {
      if (key) fields[key] = "";
      continue;
    }
    i++;
    while (s[i] === " " || s[i] === "\t") i++;
    let val = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length) i++;
        val += s[i];
        i++;
      }
      i++;
    } else {
      const start = i;
      while (i < s.length && s[i] !== ";") i++;
      val = s.slice(start, i).trim();
    }
    if (key && !(key in fields)) fields[key] = val;
  }
  return subId === undefined ? { id, fields } : { id, subId, fields };
}
