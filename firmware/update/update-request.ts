/**
 * A fleet update's hand-over between the unprivileged phone and the root installer (pure): the
 * phone leaves request.json, `handset update --request` takes it and leaves result.json beside
 * it. Both are plain JSON, validated exactly (unknown keys refused), because the one writes what
 * the other, running as root, acts on.
 *
 *   request.json  {"format":1, "id":string (1…128, no control characters),
 *                  "url":"http://…"|"https://…" (≤ 2048, no user:password@),
 *                  "requestedAt":number (the phone's epoch ms), "clockOffsetMs":number
 *                  (the phone's clock minus the OS's, |x| ≤ 10 years), "version"?:string (the
 *                  bundle must carry exactly it), "ca"?:string (absolute path of a PEM file)}
 *   result.json   {"format":1, "id", "ok":boolean, "version"?, "slot"?:"a"|"b",
 *                  "code"? (on ok:false, always), "message"?, "at":number (the phone's epoch ms)}
 *
 * clockOffsetMs exists because the installer has no clock of its own but the OS's, which on a
 * board without an RTC may be anything until SNTP; the phone's clock is SNTP-corrected, and an
 * https server's certificate is checked at the OS time plus this offset.
 */
import { HandsetError } from "../core/errors.ts";
import { isValidVersion } from "./bundle-format.ts";

export const UPDATE_REQUEST_FORMAT = 1;
/** The installer's answer, in the request's directory. */
export const RESULT_FILE = "result.json";
export const MAX_ID_CHARS = 128;
export const MAX_URL_CHARS = 2048;
export const MAX_CLOCK_OFFSET_MS = 10 * 365.25 * 86_400_000;
export const MAX_CA_PATH_CHARS = 4096;
export const MAX_MESSAGE_CHARS = 1024;
/** A request file is a few hundred bytes; anything far larger is not one. */
export const MAX_REQUEST_BYTES = 16 * 1024;

export interface UpdateRequest {
  format: 1;
  id: string;
  url: string;
  requestedAt: number;
  clockOffsetMs: number;
  version?: string;
  ca?: string;
}

export interface UpdateResult {
  format: 1;
  id: string;
  ok: boolean;
  version?: string;
  slot?: "a" | "b";
  code?: string;
  message?: string;
  at: number;
}

/** A request or result that is not exactly the format; `field` names the first bad one. */
export class UpdateRequestError extends HandsetError {
  constructor(
    message: string,
    readonly field?: string,
  ) {
    super("update-request-invalid", `update request: ${message}`);
  }
}

const isObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

const CONTROL = /[\u0000-\u001f\u007f]/;

function keys(o: Record<string, unknown>, required: string[], optional: string[]): void {
  for (const k of Object.keys(o))
    if (!required.includes(k) && !optional.includes(k))
      throw new UpdateRequestError(`unknown field "${k.slice(0, 32)}"`, k);
  for (const k of required) if (!Object.hasOwn(o, k)) throw new UpdateRequestError(`no "${k}"`, k);
}

const finite = (v: unknown): v is number => typeof v === "number" && Number.isFinite(v);

function checkId(v: unknown): string {
  if (typeof v !== "string" || v.length === 0 || v.length > MAX_ID_CHARS || CONTROL.test(v))
    throw new UpdateRequestError(`id must be 1 … ${MAX_ID_CHARS} printable characters`, "id");
  return v;
}

function checkVersion(v: unknown): string {
  if (!isValidVersion(v))
    throw new UpdateRequestError("version is not MAJOR.MINOR.PATCH[-pre][+build]", "version");
  return v;
}

/** Validates a request object (after JSON.parse); throws UpdateRequestError with the first fault. */
export function validateUpdateRequest(v: unknown): UpdateRequest {
  if (!isObject(v)) throw new UpdateRequestError("not a JSON object");
  if (v["format"] !== UPDATE_REQUEST_FORMAT)
    throw new UpdateRequestError(
      `unknown format ${JSON.stringify(v["format"])} (this installer reads 1)`,
      "format",
    );
  keys(v, ["format", "id", "url", "requestedAt", "clockOffsetMs"], ["version", "ca"]);
  const id = checkId(v["id"]);
  const url = v["url"];
  if (typeof url !== "string" || url.length > MAX_URL_CHARS || CONTROL.test(url))
    throw new UpdateRequestError(`url must be a string of at most ${MAX_URL_CHARS} characters`, "url");
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new UpdateRequestError("url is not a URL", "url");
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
    throw new UpdateRequestError("url must be http:// or https://", "url");
  if (parsed.hostname === "") throw new UpdateRequestError("url has no host", "url");
  // A password in the URL would be logged and left in flash: the fleet signs URLs with a query.
  if (parsed.username !== "" || parsed.password !== "")
    throw new UpdateRequestError("url must not carry a user name or password", "url");
  if (!finite(v["requestedAt"]) || v["requestedAt"] < 0)
    throw new UpdateRequestError("requestedAt must be epoch milliseconds", "requestedAt");
  if (!finite(v["clockOffsetMs"]) || Math.abs(v["clockOffsetMs"]) > MAX_CLOCK_OFFSET_MS)
    throw new UpdateRequestError("clockOffsetMs must be a number of ms within ±10 years", "clockOffsetMs");
  const out: UpdateRequest = {
    format: 1,
    id,
    url,
    requestedAt: v["requestedAt"],
    clockOffsetMs: v["clockOffsetMs"],
  };
  if (v["version"] !== undefined) out.version = checkVersion(v["version"]);
  if (v["ca"] !== undefined) {
    const ca = v["ca"];
    if (
      typeof ca !== "string" ||
      !ca.startsWith("/") ||
      ca.length > MAX_CA_PATH_CHARS ||
      CONTROL.test(ca) ||
      ca.split("/").includes("..")
    )
      throw new UpdateRequestError("ca must be the absolute path of a PEM file", "ca");
    out.ca = ca;
  }
  return out;
}

/** Parses and validates request.json's text. */
export function parseUpdateRequest(text: string): UpdateRequest {
  if (text.length > MAX_REQUEST_BYTES) throw new UpdateRequestError("longer than a request can be");
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    throw new UpdateRequestError("not JSON");
  }
  return validateUpdateRequest(v);
}

/**
 * The id of a request that may not validate, for its result: the phone matches results to
 * requests by id, so one that failed validation is still answered under its id when it has a
 * usable one ("" when not).
 */
export function requestIdOf(text: string | undefined): string {
  try {
    const v = JSON.parse(text ?? "") as unknown;
    return isObject(v) ? checkId(v["id"]) : "";
  } catch {
    return "";
  }
}

const CODE = /^[a-z0-9][a-z0-9-]{0,63}$/;

/** Validates a result object (the phone reads what the installer wrote). */
export function validateUpdateResult(v: unknown): UpdateResult {
  if (!isObject(v)) throw new UpdateRequestError("result is not a JSON object");
  if (v["format"] !== UPDATE_REQUEST_FORMAT) throw new UpdateRequestError("result format is not 1", "format");
  keys(v, ["format", "id", "ok", "at"], ["version", "slot", "code", "message"]);
  const id = v["id"];
  if (typeof id !== "string" || id.length > MAX_ID_CHARS || CONTROL.test(id))
    throw new UpdateRequestError("result id is not an id", "id");
  if (typeof v["ok"] !== "boolean") throw new UpdateRequestError("result ok is not a boolean", "ok");
  if (!finite(v["at"])) throw new UpdateRequestError("result at is not epoch milliseconds", "at");
  const out: UpdateResult = { format: 1, id, ok: v["ok"], at: v["at"] };
  if (v["version"] !== undefined) out.version = checkVersion(v["version"]);
  if (v["slot"] !== undefined) {
    if (v["slot"] !== "a" && v["slot"] !== "b")
      throw new UpdateRequestError("result slot is not a or b", "slot");
    out.slot = v["slot"];
  }
  if (v["code"] !== undefined) {
    if (typeof v["code"] !== "string" || !CODE.test(v["code"]))
      throw new UpdateRequestError("result code is not an error code", "code");
    out.code = v["code"];
  }
  if (v["message"] !== undefined) {
    if (typeof v["message"] !== "string" || v["message"].length > MAX_MESSAGE_CHARS)
      throw new UpdateRequestError("result message is not a short string", "message");
    out.message = v["message"];
  }
  if (out.ok === (out.code !== undefined))
    throw new UpdateRequestError("a result has a code exactly when it is not ok", "code");
  return out;
}

/** The result for a request, validated (what goes into result.json). */
export function updateResult(o: {
  id: string;
  at: number;
  ok: boolean;
  version?: string | undefined;
  slot?: "a" | "b" | undefined;
  code?: string | undefined;
  message?: string | undefined;
}): UpdateResult {
  const r: Record<string, unknown> = { format: 1, id: o.id, ok: o.ok };
  if (o.version !== undefined) r["version"] = o.version;
  if (o.slot !== undefined) r["slot"] = o.slot;
  if (!o.ok) {
    r["code"] = o.code !== undefined && CODE.test(o.code) ? o.code : "internal";
    // One line, cut to the limit without leaving half a surrogate pair behind.
    if (o.message !== undefined)
      r["message"] = o.message
        .split("\n")[0]!
        .slice(0, MAX_MESSAGE_CHARS)
        .replace(/[\ud800-\udbff]$/, "");
  }
  r["at"] = o.at;
  return validateUpdateResult(r);
}

export function encodeUpdateResult(r: UpdateResult): string {
  return `${JSON.stringify(r)}\n`;
}
