/**
 * The Web Ticket Service's failure reports ([MS-OCAUTHWS] 3.2.4.1; digest §8):
 * `X-Ms-diagnostics: 28003;source="fqdn";reason="The pin is invalid.";faultcode="…"` and the
 * HTTP `Warning` header (`120 <fqdn> "InvalidPin"`, RFC 7234 §5.5), plus the SOAP fault body
 * with an `af:OCSDiagnosticsFault`. Parsed generically: unknown ids and keys are kept.
 */
import type { Document } from "@xmldom/xmldom";
import { type MsDiagnostic, parseMsDiagnostics } from "../sip/grammar/ms-diagnostics.ts";
import { type HttpResponse, headerValues } from "./http.ts";
import { descendant, NS, path, text, tryParseXml } from "./xml.ts";

export { type MsDiagnostic, parseMsDiagnostics };

export interface WarningValue {
  code: number;
  agent: string;
  text: string;
}

/** Reads a Warning header: one or more `code agent "text" ["date"]`, comma-separated. */
export function parseWarning(value: string): WarningValue[] {
  const out: WarningValue[] = [];
  const s = value;
  let i = 0;
  while (i < s.length) {
    while (i < s.length && (s[i] === "," || s[i] === " " || s[i] === "\t")) i++;
    const codeStart = i;
    while (i < s.length && s[i]! >= "0" && s[i]! <= "9") i++;
    if (i === codeStart) break;
    const code = Number(s.slice(codeStart, i));
    while (s[i] === " ") i++;
    const agentStart = i;
    while (i < s.length && s[i] !== " " && s[i] !== ",") i++;
    const agent = s.slice(agentStart, i);
    while (s[i] === " ") i++;
    let txt = "";
    if (s[i] === '"') {
      i++;
      while (i < s.length && s[i] !== '"') {
        if (s[i] === "\\" && i + 1 < s.length) i++;
        txt += s[i];
        i++;
      }
      i++;
      while (s[i] === " ") i++;
      if (s[i] === '"') {
        i++; // warn-date
        while (i < s.length && s[i] !== '"') i++;
        i++;
      }
    }
    out.push({ code, agent, text: txt });
  }
  return out;
}

/** What a failed exchange told us, from headers and (if it is a SOAP fault) the body. */
export interface FailureReport {
  status: number;
  diagnostic?: MsDiagnostic;
  warnings: WarningValue[];
  /** Best reason text: diagnostics reason, else fault Reason/faultstring. */
  reason?: string;
  /** Local name of the SOAP faultcode (e.g. "FailedAuthentication"). */
  faultCode?: string;
  /** Basic challenge present (WWW-Authenticate: Basic …). */
  basicChallenge: boolean;
}

function soapFault(doc: Document): {
  faultCode?: string;
  faultString?: string;
  errorId?: number;
  reason?: string;
} {
  const fault = descendant(doc, "Fault", [NS.soap11, NS.soap12]);
  if (!fault) return {};
  const out: { faultCode?: string; faultString?: string; errorId?: number; reason?: string } = {};
  const code = text(descendant(fault, "faultcode")) || text(descendant(fault, "Value"));
  if (code) out.faultCode = code.slice(code.indexOf(":") + 1);
  const str = text(descendant(fault, "faultstring")) || text(descendant(fault, "Text"));
  if (str) out.faultString = str;
  const diag = descendant(fault, "OCSDiagnosticsFault");
  const msFault = diag ? (path(diag, "Ms-Diagnostics-Fault") ?? diag) : undefined;
  if (msFault) {
    const id = Number(text(descendant(msFault, "ErrorId")));
    if (Number.isInteger(id) && id > 0) out.errorId = id;
    const reason = text(descendant(msFault, "Reason"));
    if (reason) out.reason = reason;
  }
  return out;
}

export function readFailure(res: HttpResponse): FailureReport {
  const report: FailureReport = {
    status: res.status,
    warnings: headerValues(res.headers, "warning").flatMap(parseWarning),
    basicChallenge: headerValues(res.headers, "www-authenticate").some((v) => /^\s*basic\b/i.test(v)),
  };
  for (const v of headerValues(res.headers, "x-ms-diagnostics")) {
    const d = parseMsDiagnostics(v);
    if (d) {
      report.diagnostic = d;
      break;
    }
  }
  const doc = res.body.trimStart().startsWith("<") ? tryParseXml(res.body) : undefined;
  const fault = doc ? soapFault(doc) : {};
  if (!report.diagnostic && fault.errorId !== undefined)
    report.diagnostic = { id: fault.errorId, fields: fault.reason ? { reason: fault.reason } : {} };
  const reason = report.diagnostic?.fields["reason"] || fault.reason || fault.faultString;
  if (reason) report.reason = reason;
  const faultCode = fault.faultCode ?? report.diagnostic?.fields["faultcode"];
  if (faultCode) report.faultCode = faultCode.slice(faultCode.indexOf(":") + 1);
  return report;
}

/** One line describing the failure for messages: `reason (28003, HTTP 401)`. */
export function describeFailure(r: FailureReport): string {
  const parts = [r.diagnostic ? String(r.diagnostic.id) : undefined, `HTTP ${r.status}`].filter(Boolean);
  return `${r.reason ?? "no reason given"} (${parts.join(", ")})`;
}
