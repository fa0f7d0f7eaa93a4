/**
 * NTLM on the web ticket service's WinNegotiate port, over real TLS sockets, against an NTLM client
 * built here from the [MS-NLMP] §3.3.2 computations. The client first proves itself on the
 * published §4.2.4 example (it must reproduce the §4.2.4.3 AUTHENTICATE_MESSAGE byte for byte),
 * then signs in to the lab: NEGOTIATE → 401 with CHALLENGE → AUTHENTICATE on the same connection →
 * a web ticket. Also: the IIS header lines, wrong password, NTLMv1, the connection rule, PIN auth
 * unchanged, and the `webAuth` modes. The HTTP client is hand-written so the test sees the raw
 * header lines and owns the connection.
 */
import { randomBytes, randomUUID } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { DOMParser } from "@xmldom/xmldom";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { labUsers, labUsersFile } from "../dev/lab-command.ts";
import { LabCa } from "../lab/ca.ts";
import { UserDirectory } from "../lab/directory.ts";
import { DEMO_PASSWORD, startLab } from "../lab/lab.ts";
import { hmacMd5, md4 } from "../lab/ntlm.ts";
import { startWebServices, type WebServices } from "../lab/web-services.ts";
import * as V from "./ntlm-vectors.ts";

// ---- a raw HTTP/1.1 client on one TLS connection ------------------------------------------------

interface RawResponse {
  status: number;
  /** Header lines in the order received, names as sent. */
  lines: Array<[string, string]>;
  body: string;
}

const header = (r: RawResponse, name: string) =>
  r.lines.filter(([n]) => n.toLowerCase() === name.toLowerCase()).map(([, v]) => v);

class Connection {
  private buf = Buffer.alloc(0);
  private waiting: (() => void) | undefined;
  private closed = false;
  private constructor(private readonly socket: tls.TLSSocket) {
    socket.on("data", (d: Buffer) => {
      this.buf = Buffer.concat([this.buf, d]);
      this.waiting?.();
    });
    socket.on("close", () => {
      this.closed = true;
      this.waiting?.();
    });
    socket.on("error", () => {});
  }

  static open(url: string, ca: string): Promise<Connection> {
    const u = new URL(url);
    return new Promise((resolve, reject) => {
      const s = tls.connect({ host: u.hostname, port: Number(u.port), ca, servername: "pool.lab.test" }, () =>
        resolve(new Connection(s)),
      );
      s.once("error", reject);
    });
  }

  get isClosed(): boolean {
    return this.closed;
  }

  async request(path: string, headers: Record<string, string>, body: string): Promise<RawResponse> {
    const b = Buffer.from(body);
    const head =
      `POST ${path} HTTP/1.1\r\nHost: pool.lab.test\r\nConnection: keep-alive\r\n` +
      Object.entries({ ...headers, "Content-Length": String(b.length) })
        .map(([k, v]) => `${k}: ${v}\r\n`)
        .join("") +
      "\r\n";
    this.socket.write(Buffer.concat([Buffer.from(head), b]));
    for (;;) {
      const end = this.buf.indexOf("\r\n\r\n");
      if (end >= 0) {
        const [statusLine = "", ...rest] = this.buf.subarray(0, end).toString("latin1").split("\r\n");
        const lines = rest.map((l) => {
          const i = l.indexOf(":");
          return [l.slice(0, i), l.slice(i + 1).trim()] as [string, string];
        });
        const len = Number(lines.find(([n]) => n.toLowerCase() === "content-length")?.[1] ?? 0);
        if (this.buf.length >= end + 4 + len) {
          const resBody = this.buf.subarray(end + 4, end + 4 + len).toString("utf8");
          this.buf = this.buf.subarray(end + 4 + len);
          return { status: Number(statusLine.split(" ")[1]), lines, body: resBody };
        }
      }
      if (this.closed) throw new Error("connection closed");
      await new Promise<void>((r) => {
        this.waiting = r;
      });
      this.waiting = undefined;
    }
  }

  close(): void {
    this.socket.destroy();
  }
}

// ---- an NTLM client from the MS-NLMP §3.1.5 / §3.3.2 computations -------------------------------

const F = {
  UNICODE: 0x1,
  REQUEST_TARGET: 0x4,
  SIGN: 0x10,
  NTLM: 0x200,
  ALWAYS_SIGN: 0x8000,
  ESS: 0x80000,
  TARGET_INFO: 0x800000,
  VERSION: 0x2000000,
  N128: 0x20000000,
  KEY_EXCH: 0x40000000,
  N56: 0x80000000,
};
const CLIENT_FLAGS =
  (F.UNICODE |
    F.REQUEST_TARGET |
    F.SIGN |
    F.NTLM |
    F.ALWAYS_SIGN |
    F.ESS |
    F.VERSION |
    F.N128 |
    F.KEY_EXCH |
    F.N56) >>>
  0;
const u16 = (s: string) => Buffer.from(s, "utf16le");
const CLIENT_VERSION = Buffer.from("0a00614a0000000f", "hex"); // 10.0.19041

/** RC4, for the key exchange (written again here so the client shares no code with the server). */
function rc4(key: Buffer, data: Buffer): Buffer {
  const s = Array.from({ length: 256 }, (_, i) => i);
  for (let i = 0, j = 0; i < 256; i++) {
    j = (j + s[i]! + key[i % key.length]!) & 255;
    [s[i], s[j]] = [s[j]!, s[i]!];
  }
  const out = Buffer.alloc(data.length);
  for (let n = 0, i = 0, j = 0; n < data.length; n++) {
    i = (i + 1) & 255;
    j = (j + s[i]!) & 255;
    [s[i], s[j]] = [s[j]!, s[i]!];
    out[n] = data[n]! ^ s[(s[i]! + s[j]!) & 255]!;
  }
  return out;
}

function negotiateMessage(flags = CLIENT_FLAGS): Buffer {
  const b = Buffer.alloc(40);
  b.write("NTLMSSP\0", 0, "latin1");
  b.writeUInt32LE(1, 8);
  b.writeUInt32LE(flags >>> 0, 12);
  // Domain and workstation fields empty (offset 40); VERSION.
  b.writeUInt32LE(40, 20);
  b.writeUInt32LE(40, 28);
  CLIENT_VERSION.copy(b, 32);
  return b;
}

interface Challenge {
  flags: number;
  serverChallenge: Buffer;
  targetInfo: Buffer;
  pairs: Map<number, Buffer>;
}

function readChallenge(msg: Buffer): Challenge {
  expect(msg.subarray(0, 8).toString("latin1")).toBe("NTLMSSP\0");
  expect(msg.readUInt32LE(8)).toBe(2);
  const tiLen = msg.readUInt16LE(40);
  const tiOff = msg.readUInt32LE(44);
  const targetInfo = msg.subarray(tiOff, tiOff + tiLen);
  const pairs = new Map<number, Buffer>();
  for (let o = 0; o + 4 <= targetInfo.length; ) {
    const id = targetInfo.readUInt16LE(o);
    const len = targetInfo.readUInt16LE(o + 2);
    if (id === 0) break;
    pairs.set(id, targetInfo.subarray(o + 4, o + 4 + len));
    o += 4 + len;
  }
  return { flags: msg.readUInt32LE(20), serverChallenge: msg.subarray(24, 32), targetInfo, pairs };
}

interface AuthOptions {
  user: string;
  domain: string;
  password: string;
  workstation?: string;
  clientChallenge?: Buffer;
  /** The blob's time when the CHALLENGE has no MsvAvTimestamp. */
  time?: Buffer;
  randomSessionKey?: Buffer;
  flags?: number;
  version?: Buffer;
  /** Claim and send a MIC (needs the NEGOTIATE sent). */
  micOver?: Buffer;
}

/** AUTHENTICATE_MESSAGE ([MS-NLMP] §2.2.1.3, §3.1.5.1.2, NTLMv2 per §3.3.2). */
function authenticateMessage(challengeMsg: Buffer, o: AuthOptions): Buffer {
  const c = readChallenge(challengeMsg);
  const cc = o.clientChallenge ?? randomBytes(8);
  const responseKey = hmacMd5(md4(u16(o.password)), u16(o.user.toUpperCase() + o.domain));
  const serverTs = c.pairs.get(7);
  const time = serverTs ?? o.time ?? Buffer.alloc(8);
  let serverInfo = c.targetInfo;
  if (o.micOver) {
    // MsvAvFlags = 0x2 (MIC present) before the EOL.
    const av = Buffer.from([6, 0, 4, 0, 2, 0, 0, 0]);
    serverInfo = Buffer.concat([c.targetInfo.subarray(0, c.targetInfo.length - 4), av, Buffer.alloc(4)]);
  }
  const temp = Buffer.concat([
    Buffer.from([1, 1, 0, 0, 0, 0, 0, 0]),
    time,
    cc,
    Buffer.alloc(4),
    serverInfo,
    Buffer.alloc(4),
  ]);
  const proof = hmacMd5(responseKey, c.serverChallenge, temp);
  const nt = Buffer.concat([proof, temp]);
  // §3.1.5.1.2: with MsvAvTimestamp from the server the LM response is Z(24).
  const lm = serverTs ? Buffer.alloc(24) : Buffer.concat([hmacMd5(responseKey, c.serverChallenge, cc), cc]);
  const sessionBaseKey = hmacMd5(responseKey, proof);
  const flags = (o.flags ?? (c.flags & CLIENT_FLAGS) | F.UNICODE) >>> 0;
  const rsk = o.randomSessionKey ?? randomBytes(16);
  const keyExch = (flags & F.KEY_EXCH) !== 0;
  const encKey = keyExch ? rc4(sessionBaseKey, rsk) : Buffer.alloc(0);
  const exported = keyExch ? rsk : sessionBaseKey;
  const fields = [lm, nt, u16(o.domain), u16(o.user), u16(o.workstation ?? "PHONE"), encKey];
  const payloadOrder = [2, 3, 4, 0, 1, 5]; // Domain, User, Workstation, LM, NT, key (as §4.2.4.3)
  const headLen = o.micOver ? 88 : 72;
  const head = Buffer.alloc(headLen);
  head.write("NTLMSSP\0", 0, "latin1");
  head.writeUInt32LE(3, 8);
  let off = headLen;
  const offsets: number[] = [];
  for (const i of payloadOrder) {
    offsets[i] = off;
    off += fields[i]!.length;
  }
  fields.forEach((f, i) => {
    head.writeUInt16LE(f.length, 12 + i * 8);
    head.writeUInt16LE(f.length, 14 + i * 8);
    head.writeUInt32LE(offsets[i]!, 16 + i * 8);
  });
  head.writeUInt32LE(flags, 60);
  (o.version ?? CLIENT_VERSION).copy(head, 64);
  const msg = Buffer.concat([head, ...payloadOrder.map((i) => fields[i]!)]);
  if (o.micOver) hmacMd5(exported, o.micOver, challengeMsg, msg).copy(msg, 72);
  return msg;
}

// ---- the lab -----------------------------------------------------------------------------------

const RST_ACTION = '"http://docs.oasis-open.org/ws-sx/ws-trust/200512/RST/Issue"';
const PASSWORD_4711 = "Winter-2026!";

function rst(appliesTo: string): string {
  return (
    `<?xml version="1.0"?><soap:Envelope xmlns:soap="http://schemas.xmlsoap.org/soap/envelope/" ` +
    `xmlns:wst="http://docs.oasis-open.org/ws-sx/ws-trust/200512" xmlns:wsa="http://www.w3.org/2005/08/addressing" ` +
    `xmlns:wsp="http://schemas.xmlsoap.org/ws/2004/09/policy"><soap:Body>` +
    `<wst:RequestSecurityToken Context="${randomUUID()}">` +
    `<wst:TokenType>http://docs.oasis-open.org/wss/oasis-wss-saml-token-profile-1.1#SAMLV1.1</wst:TokenType>` +
    `<wst:RequestType>http://schemas.xmlsoap.org/ws/2005/02/trust/Issue</wst:RequestType>` +
    `<wsp:AppliesTo><wsa:EndpointReference><wsa:Address>${appliesTo}</wsa:Address></wsa:EndpointReference></wsp:AppliesTo>` +
    `<wst:Entropy><wst:BinarySecret>${randomBytes(32).toString("base64")}</wst:BinarySecret></wst:Entropy>` +
    `<wst:KeyType>http://docs.oasis-open.org/ws-sx/ws-trust/200512/SymmetricKey</wst:KeyType>` +
    `</wst:RequestSecurityToken></soap:Body></soap:Envelope>`
  );
}

const WT_PATH = "/WebTicket/WebTicketService.svc";
const soapHeaders = { "Content-Type": "text/xml; charset=utf-8", SOAPAction: RST_ACTION };

function nameIdOf(body: string): string | undefined {
  const doc = new DOMParser().parseFromString(body, "text/xml");
  return (
    doc.getElementsByTagNameNS("urn:oasis:names:tc:SAML:1.0:assertion", "NameIdentifier")[0]?.textContent ??
    undefined
  );
}

/** The `WWW-Authenticate: <scheme> <token>` of a 401 as a CHALLENGE_MESSAGE. */
function challengeIn(r: RawResponse, scheme = "NTLM"): Buffer {
  expect(r.status).toBe(401);
  const v = header(r, "WWW-Authenticate");
  expect(v).toHaveLength(1);
  const m = new RegExp(`^${scheme} ([A-Za-z0-9+/=]+)$`).exec(v[0]!);
  expect(m, v[0]).not.toBeNull();
  return Buffer.from(m![1]!, "base64");
}

/** IIS's plain Windows-auth 401: two header lines, Negotiate first. */
function expectPlain401(r: RawResponse): void {
  expect(r.status).toBe(401);
  expect(header(r, "WWW-Authenticate")).toEqual(["Negotiate", "NTLM"]);
  const names = r.lines.map(([n]) => n);
  const first = names.indexOf("WWW-Authenticate");
  expect(names[first + 1]).toBe("WWW-Authenticate");
}

let ca: LabCa;
let directory: UserDirectory;
let web: WebServices;
let proofUrl: string;
const open: Connection[] = [];

async function connect(w: WebServices = web): Promise<Connection> {
  const c = await Connection.open(w.baseUrl, ca.cert);
  open.push(c);
  return c;
}

/** The whole exchange on one connection; returns the final response. */
async function signIn(
  c: Connection,
  o: Omit<AuthOptions, "micOver"> & { mic?: boolean; scheme?: "NTLM" | "Negotiate" },
  path = WT_PATH,
): Promise<RawResponse> {
  const scheme = o.scheme ?? "NTLM";
  const neg = negotiateMessage();
  const r1 = await c.request(
    path,
    { ...soapHeaders, Authorization: `${scheme} ${neg.toString("base64")}` },
    "",
  );
  const chal = challengeIn(r1, scheme);
  const auth = authenticateMessage(chal, { ...o, ...(o.mic ? { micOver: neg } : {}) });
  return c.request(
    path,
    { ...soapHeaders, Authorization: `${scheme} ${auth.toString("base64")}` },
    rst(proofUrl),
  );
}

beforeAll(async () => {
  ca = await LabCa.create();
  directory = new UserDirectory("lab.test");
  directory.add("4711", "1234", undefined, PASSWORD_4711);
  directory.add("4712", "5555"); // no password: PIN only
  web = await startWebServices({ ca, directory, fqdn: "pool.lab.test" });
  proofUrl = `${web.certProvUrl}/WebTicket_Proof`;
});

afterAll(async () => {
  for (const c of open) c.close();
  await web?.stop();
});

describe("the test's NTLM client", () => {
  it("reproduces the MS-NLMP §4.2.4.3 AUTHENTICATE_MESSAGE from the §4.2.4.3 CHALLENGE_MESSAGE", () => {
    const msg = authenticateMessage(V.V2_CHALLENGE_MESSAGE, {
      user: V.USER,
      domain: V.DOMAIN,
      password: V.PASSWORD,
      workstation: V.WORKSTATION,
      clientChallenge: V.CLIENT_CHALLENGE,
      time: V.TIME,
      randomSessionKey: V.RANDOM_SESSION_KEY,
      flags: V.V2_AUTHENTICATE_FLAGS,
      version: V.V2_AUTHENTICATE_VERSION,
    });
    expect(msg.toString("hex")).toBe(V.V2_AUTHENTICATE_MESSAGE.toString("hex"));
  });
});

describe("WinNegotiate port: NTLM over HTTP, as IIS", () => {
  it("no credentials → 401 with `WWW-Authenticate: Negotiate` then `WWW-Authenticate: NTLM`, connection kept", async () => {
    const c = await connect();
    const r = await c.request(WT_PATH, soapHeaders, rst(proofUrl));
    expectPlain401(r);
    expect(r.body).toMatch(/401 - Unauthorized/);
    expect(c.isClosed).toBe(false);
  });

  it("NEGOTIATE → 401 CHALLENGE → AUTHENTICATE on the same connection → a web ticket for the user", async () => {
    const c = await connect();
    const before = web.stats.ticketsIssued;
    const neg = negotiateMessage();
    const r1 = await c.request(
      WT_PATH,
      { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` },
      "",
    );
    const chal = challengeIn(r1);
    const parsed = readChallenge(chal);
    const name = (id: number) => parsed.pairs.get(id)?.toString("utf16le");
    expect([name(2), name(1), name(4), name(3)]).toEqual(["LAB", "POOL", "lab.test", "pool.lab.test"]);
    expect(parsed.pairs.get(7)).toHaveLength(8); // MsvAvTimestamp
    const auth = authenticateMessage(chal, { user: "4711", domain: "LAB", password: PASSWORD_4711 });
    const r2 = await c.request(
      WT_PATH,
      { ...soapHeaders, Authorization: `NTLM ${auth.toString("base64")}` },
      rst(proofUrl),
    );
    expect(r2.status, header(r2, "X-Lab-Reason").join()).toBe(200);
    expect(nameIdOf(r2.body)).toBe("sip:4711@lab.test");
    expect(r2.body).toContain('AuthenticationMethod="urn:federation:authentication:windows"');
    expect(web.stats.ticketsIssued).toBe(before + 1);
    // The connection is authenticated now: the next request needs no Authorization.
    const r3 = await c.request(WT_PATH, soapHeaders, rst(proofUrl));
    expect(r3.status).toBe(200);
    expect(nameIdOf(r3.body)).toBe("sip:4711@lab.test");
    expect(web.requests.at(-1)).toMatchObject({ path: WT_PATH, user: "LAB\\4711", status: 200 });
  });

  it("UPN, a MIC, and raw NTLMSSP under `Negotiate` (answered under Negotiate) also sign in", async () => {
    const c = await connect();
    const r = await signIn(c, {
      user: "4711@lab.test",
      domain: "",
      password: PASSWORD_4711,
      mic: true,
      scheme: "Negotiate",
    });
    expect(r.status, header(r, "X-Lab-Reason").join()).toBe(200);
    expect(nameIdOf(r.body)).toBe("sip:4711@lab.test");
  });

  it("a wrong password → the plain 401 again; no ticket", async () => {
    const c = await connect();
    const failures = web.stats.ntlmFailures;
    const before = web.stats.ticketsIssued;
    const r = await signIn(c, { user: "4711", domain: "LAB", password: "Winter-2025!" });
    expectPlain401(r);
    expect(header(r, "X-Lab-Reason")[0]).toMatch(/bad-response/);
    expect(header(r, "X-Lab-Reason")[0]).not.toContain("Winter");
    expect(web.stats.ntlmFailures).toBe(failures + 1);
    expect(web.stats.ticketsIssued).toBe(before);
    // And the connection did not become authenticated.
    expectPlain401(await c.request(WT_PATH, soapHeaders, rst(proofUrl)));
  });

  it("NTLMv1 (the §4.2.2.3 AUTHENTICATE, 24-byte NT response) → 401", async () => {
    const c = await connect();
    const neg = negotiateMessage();
    challengeIn(
      await c.request(WT_PATH, { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` }, ""),
    );
    const r = await c.request(
      WT_PATH,
      { ...soapHeaders, Authorization: `NTLM ${V.V1_AUTHENTICATE_MESSAGE.toString("base64")}` },
      rst(proofUrl),
    );
    expectPlain401(r);
    expect(header(r, "X-Lab-Reason")[0]).toMatch(/ntlmv1/);
  });

  it("an unknown user, a user without a password, or a foreign domain → 401", async () => {
    for (const o of [
      { user: "9999", domain: "LAB", password: "x" },
      { user: "4712", domain: "LAB", password: "5555" },
      { user: "4711", domain: "EVIL", password: PASSWORD_4711 },
    ]) {
      const r = await signIn(await connect(), o);
      expectPlain401(r);
    }
  });

  it("AUTHENTICATE on another connection than its CHALLENGE → 401 (NTLM authenticates the connection)", async () => {
    const a = await connect();
    const b = await connect();
    const neg = negotiateMessage();
    const chal = challengeIn(
      await a.request(WT_PATH, { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` }, ""),
    );
    const auth = authenticateMessage(chal, { user: "4711", domain: "LAB", password: PASSWORD_4711 });
    const r = await b.request(
      WT_PATH,
      { ...soapHeaders, Authorization: `NTLM ${auth.toString("base64")}` },
      rst(proofUrl),
    );
    expectPlain401(r);
    expect(header(r, "X-Lab-Reason")[0]).toMatch(/without a CHALLENGE/);
    // The CHALLENGE on `a` is still there for `a`.
    const ok = await a.request(
      WT_PATH,
      { ...soapHeaders, Authorization: `NTLM ${auth.toString("base64")}` },
      rst(proofUrl),
    );
    expect(ok.status).toBe(200);
  });

  it("a CHALLENGE is good once: replaying the AUTHENTICATE on the same connection → 401", async () => {
    const c = await connect();
    const neg = negotiateMessage();
    const chal = challengeIn(
      await c.request(WT_PATH, { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` }, ""),
    );
    const auth = `NTLM ${authenticateMessage(chal, { user: "4711", domain: "LAB", password: PASSWORD_4711 }).toString("base64")}`;
    expect((await c.request(WT_PATH, { ...soapHeaders, Authorization: auth }, rst(proofUrl))).status).toBe(
      200,
    );
    expectPlain401(await c.request(WT_PATH, { ...soapHeaders, Authorization: auth }, rst(proofUrl)));
  });

  it("a Kerberos/SPNEGO token under Negotiate is not supported → the plain 401", async () => {
    const c = await connect();
    const r = await c.request(
      WT_PATH,
      { ...soapHeaders, Authorization: "Negotiate YIIBbgYGKwYBBQUCoIIBYjCCAV6g" },
      "",
    );
    expectPlain401(r);
    expect(header(r, "X-Lab-Reason")[0]).toMatch(/SPNEGO/);
  });

  it("PIN auth is unchanged on its port", async () => {
    const c = await connect();
    const r = await c.request(
      `${WT_PATH}/Pin`,
      { ...soapHeaders, Authorization: `Basic ${Buffer.from("4711:1234").toString("base64")}` },
      rst(proofUrl),
    );
    expect(r.status).toBe(200);
    expect(nameIdOf(r.body)).toBe("sip:4711@lab.test");
    const none = await c.request(`${WT_PATH}/Pin`, soapHeaders, rst(proofUrl));
    expect(header(none, "WWW-Authenticate")).toEqual(['Basic realm ="LYNC"']);
  });
});

describe("webAuth modes and the injected ServerChallenge", () => {
  it('"pin": the WinNegotiate port is the old bare 401, NTLM is never offered a CHALLENGE; PIN works', async () => {
    const w = await startWebServices({ ca, directory, fqdn: "pool.lab.test", webAuth: "pin" });
    try {
      const c = await connect(w);
      const neg = negotiateMessage();
      const r = await c.request(
        WT_PATH,
        { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` },
        "",
      );
      expectPlain401(r);
      expect(w.stats.ntlmChallenges).toBe(0);
      const pin = await c.request(
        `${WT_PATH}/Pin`,
        { ...soapHeaders, Authorization: `Basic ${Buffer.from("4711:1234").toString("base64")}` },
        rst(`${w.certProvUrl}/WebTicket_Proof`),
      );
      expect(pin.status).toBe(200);
    } finally {
      await w.stop();
    }
  });

  it('"ntlm": the PIN port is gone (404, not in the WSDL); NTLM works; the challenge source is injectable', async () => {
    const w = await startWebServices({
      ca,
      directory,
      fqdn: "pool.lab.test",
      webAuth: "ntlm",
      ntlmChallenge: () => Buffer.from(V.SERVER_CHALLENGE),
    });
    try {
      const c = await connect(w);
      const pin = await c.request(
        `${WT_PATH}/Pin`,
        { ...soapHeaders, Authorization: `Basic ${Buffer.from("4711:1234").toString("base64")}` },
        "",
      );
      expect(pin.status).toBe(404);
      const wsdl = await fetchWsdl(w);
      expect(wsdl).not.toContain("WebTicketServicePin");
      expect(wsdl).toContain("WebTicketServiceWinNegotiate");
      const neg = negotiateMessage();
      const r1 = await c.request(
        WT_PATH,
        { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` },
        "",
      );
      const chal = challengeIn(r1);
      expect(readChallenge(chal).serverChallenge.toString("hex")).toBe("0123456789abcdef");
      const auth = authenticateMessage(chal, { user: "4711", domain: "lab.test", password: PASSWORD_4711 });
      const r2 = await c.request(
        WT_PATH,
        { ...soapHeaders, Authorization: `NTLM ${auth.toString("base64")}` },
        rst(`${w.certProvUrl}/WebTicket_Proof`),
      );
      expect(r2.status, header(r2, "X-Lab-Reason").join()).toBe(200);
    } finally {
      await w.stop();
    }
  });
});

async function fetchWsdl(w: WebServices): Promise<string> {
  const u = new URL(w.baseUrl);
  return new Promise((resolve, reject) => {
    const s = tls.connect(
      { host: u.hostname, port: Number(u.port), ca: ca.cert, servername: "pool.lab.test" },
      () => {
        s.write(`GET ${WT_PATH}/mex HTTP/1.1\r\nHost: pool.lab.test\r\nConnection: close\r\n\r\n`);
      },
    );
    const chunks: Buffer[] = [];
    s.on("data", (d: Buffer) => chunks.push(d));
    s.on("end", () => resolve(Buffer.concat(chunks).toString()));
    s.on("error", reject);
  });
}

describe("the lab's users", () => {
  it("the demo user 4711 has a password and signs in with NTLM through the lab (WAN side); lab.ready has no password", async () => {
    const lab = await startLab();
    try {
      expect(JSON.stringify(lab.ready)).not.toContain(DEMO_PASSWORD);
      expect(lab.directory.byExtension("4711")?.password).toBe(DEMO_PASSWORD);
      const base = new URL(lab.ready.certProv).origin;
      const c = await Connection.open(base, lab.ca.cert);
      open.push(c);
      const neg = negotiateMessage();
      const chal = challengeIn(
        await c.request(WT_PATH, { ...soapHeaders, Authorization: `NTLM ${neg.toString("base64")}` }, ""),
      );
      const auth = authenticateMessage(chal, { user: "4711", domain: "LAB", password: DEMO_PASSWORD });
      const r = await c.request(
        WT_PATH,
        { ...soapHeaders, Authorization: `NTLM ${auth.toString("base64")}` },
        rst(`${lab.web.certProvUrl}/WebTicket_Proof`),
      );
      expect(r.status, header(r, "X-Lab-Reason").join()).toBe(200);
      expect(nameIdOf(r.body)).toBe("sip:4711@lab.test");
    } finally {
      await lab.stop();
    }
  });

  it("--user EXT:PIN[:PASSWORD] and --users FILE", async () => {
    expect(labUsers(["4711:1234", "4712:5555:pa:ss word"])).toEqual([
      { extension: "4711", pin: "1234" },
      { extension: "4712", pin: "5555", password: "pa:ss word" },
    ]);
    expect(() => labUsers("4711:12")).toThrow(/EXTENSION:PIN\[:PASSWORD\]/);
    let message = "";
    try {
      labUsers("4711:12:TopSecret");
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).not.toContain("TopSecret");
    const dir = await mkdtemp(join(tmpdir(), "ntlm-users-"));
    try {
      const file = join(dir, "users.json");
      await writeFile(file, JSON.stringify([{ extension: "4713", pin: "7777", password: "Pw-4713" }]));
      expect(labUsersFile(file)).toEqual([{ extension: "4713", pin: "7777", password: "Pw-4713" }]);
      await writeFile(file, JSON.stringify({ users: [{ extension: "4714", pin: "8888" }] }));
      expect(labUsersFile(file)).toEqual([{ extension: "4714", pin: "8888" }]);
      await writeFile(file, JSON.stringify([{ extension: "x", pin: "1" }]));
      expect(() => labUsersFile(file)).toThrow(/user 0 must be/);
      expect(labUsersFile(undefined)).toBeUndefined();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
