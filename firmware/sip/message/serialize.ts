/**
 * serializeMessage: start line, headers in order as `Name: value` CRLF (names as stored,
 * compact forms kept), Content-Length set to the body length (the first Content-Length line
 * is rewritten in place and later ones dropped; appended when absent), empty line, body.
 */
import { HandsetError } from "../../core/errors.ts";
import { isToken } from "../grammar/lexer.ts";
import { headerKey, type SipMessage } from "./message.ts";

function bad(message: string): never {
  throw new HandsetError("sip-serialize", message);
}

export function serializeMessage(msg: SipMessage): Buffer {
  let head: string;
  if (msg.kind === "request") {
    if (!isToken(msg.method)) bad(`invalid method "${msg.method}"`);
    if (/[\s]/.test(msg.uri) || msg.uri === "") bad(`invalid Request-URI "${msg.uri}"`);
    head = `${msg.method} ${msg.uri} ${msg.version}\r\n`;
  } else {
    if (!Number.isInteger(msg.status) || msg.status < 100 || msg.status > 699)
      bad(`invalid status ${msg.status}`);
    if (/[\r\n]/.test(msg.reason)) bad("CR or LF in the reason phrase");
    head = `${msg.version} ${msg.status} ${msg.reason}\r\n`;
  }
  let wroteLength = false;
  for (const h of msg.headers) {
    if (!isToken(h.name)) bad(`invalid header name "${h.name}"`);
    if (/[\r\n]/.test(h.value)) bad(`CR or LF in the value of ${h.name}`);
    if (headerKey(h.name) === "content-length") {
      if (!wroteLength) head += `${h.name}: ${msg.body.length}\r\n`;
      wroteLength = true;
      continue;
    }
    head += `${h.name}: ${h.value}\r\n`;
  }
  if (!wroteLength) head += `Content-Length: ${msg.body.length}\r\n`;
  head += "\r\n";
  return Buffer.concat([Buffer.from(head, "utf8"), msg.body]);
}
