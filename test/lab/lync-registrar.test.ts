/**
 * The lab registrar as a Lync 2013 / Skype for Business front end (issue 13, parts 2–4): the
 * firmware's real Registration (TLS-DSK over SIP/TLS) registers, the test reads the REGISTER 200
 * it got, then sends self-subscriptions, SERVICE and an unknown method signed with the SA the
 * registration established, and checks every answer and NOTIFY is signed by the registrar.
 * The "minimal" style (the lab before issue 13) is checked too, per feature and via LabOptions.
 */
import { randomBytes } from "node:crypto";
import { DOMParser } from "@xmldom/xmldom";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { silentLogger } from "../../firmware/core/logger.ts";
import { CryptoRandom } from "../../firmware/platform/crypto-random.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { tlsFlowConnector } from "../../firmware/platform/tls-flow.ts";
import type { Flow } from "../../firmware/sip/flow.ts";
import {
  header,
  headers,
  request,
  response,
  type SipMessage,
  type SipRequest,
  type SipResponse,
} from "../../firmware/sip/message/message.ts";
import type { Registration, RegistrationEvent } from "../../firmware/sip/registration/registration.ts";
import { UserAgentCore } from "../../firmware/sip/user-agent-core.ts";
import { labRegistration, registered, registrationView, verdictOf } from "../lab-calls/phones.ts";
import { type Lab, startLab } from "./lab.ts";
import { gruuEpid, LYNC_ALLOW_EVENTS, registrarFeatures } from "./registrar.ts";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const hex = (n: number) => randomBytes(n).toString("hex");

type Verdict = "verified" | "unsigned" | "bad";

const cseqMethod = (m: SipMessage) => (header(m, "CSeq") ?? "").trim().split(/\s+/)[1]?.toUpperCase();

/** Ours, not the registration's: answers to our requests and server requests other than registration-notify. */
function forTest(m: SipMessage): boolean {
  if (m.kind === "response") return cseqMethod(m) !== "REGISTER" && cseqMethod(m) !== "OPTIONS";
  if (m.method !== "NOTIFY" && m.method !== "BENOTIFY") return false;
  return !/^registration-notify/i.test(header(m, "Event") ?? "");
}

/** A client on the firmware's real registration, with the REGISTER answers and everything else in view. */
class Client {
  readonly registerAnswers: SipResponse[] = [];
  readonly inbox: Array<{ m: SipMessage; verdict: Verdict }> = [];
  readonly events: RegistrationEvent[] = [];
  private readonly random = new CryptoRandom();

  private constructor(
    readonly aor: string,
    readonly flow: Flow,
    readonly core: UserAgentCore,
    readonly reg: Registration,
  ) {}

  static async register(lab: Lab, address: string, serverName: string): Promise<Client> {
    const clock = new SystemClock();
    const cert = lab.ready.testClient;
    const { readFileSync } = await import("node:fs");
    const pem = readFileSync(cert.cert, "utf8");
    const key = readFileSync(cert.key, "utf8");
    const i = address.lastIndexOf(":");
    const flow = await tlsFlowConnector({ ca: [lab.ca.cert] })({
      host: address.slice(0, i),
      port: Number(address.slice(i + 1)),
      serverName,
    });
    let client: Client | undefined;
    const early: SipMessage[] = [];
    flow.onMessage((m) => {
      if (m.kind === "response" && cseqMethod(m) === "REGISTER") client?.registerAnswers.push(m);
    });
    const view = registrationView(
      flow,
      (m) => {
        if (client) client.receive(m);
        else early.push(m);
      },
      forTest,
    );
    const random = new CryptoRandom();
    const core = new UserAgentCore(view, { clock, random, logger: silentLogger });
    const reg = labRegistration(
      lab,
      { aor: cert.uri, cert: pem, key },
      { core, clock, random, livenessTimeoutMs: 0 },
    );
    client = new Client(cert.uri, flow, core, reg);
    const c = client;
    reg.on((e) => c.events.push(e));
    await registered(reg);
    for (const m of early) c.receive(m);
    return c;
  }

  get sa() {
    const sa = this.core.securityAssociation;
    if (!sa) throw new Error("no security association");
    return sa;
  }

  get contact(): string {
    return `<sip:127.0.0.1:${this.flow.local.port};transport=tls>`;
  }

  /** A request from the user to itself (self-subscriptions, SERVICE), signed with the SA. */
  send(
    method: string,
    extra: Array<[string, string]> = [],
    body = "",
    o: { callId?: string; cseq?: number; toTag?: string; fromTag?: string } = {},
  ): SipRequest {
    const req = request(
      method,
      this.aor,
      [
        ["Via", `SIP/2.0/TLS 127.0.0.1:${this.flow.local.port};branch=z9hG4bK${hex(8)}`],
        ["Max-Forwards", "70"],
        ["From", `<${this.aor}>;tag=${o.fromTag ?? hex(5)};epid=0123456789`],
        ["To", `<${this.aor}>${o.toTag ? `;tag=${o.toTag}` : ""}`],
        ["Call-ID", o.callId ?? hex(16)],
        ["CSeq", `${o.cseq ?? 1} ${method}`],
        ["Contact", this.contact],
        ["User-Agent", "handset-test"],
        ...extra,
      ],
      body,
    );
    this.sa.sign(req, this.random);
    this.flow.send(req);
    return req;
  }

  subscribe(
    event: string,
    accept: string,
    o: { piggyback?: boolean; body?: string; contentType?: string; expires?: number } = {},
  ): SipRequest {
    const extra: Array<[string, string]> = [
      ["Event", event],
      ["Accept", accept],
      ["Supported", "com.microsoft.autoextend"],
      ["Supported", "ms-benotify"],
      ["Proxy-Require", "ms-benotify"],
    ];
    if (o.piggyback) extra.push(["Supported", "ms-piggyback-first-notify"]);
    if (o.expires !== undefined) extra.push(["Expires", String(o.expires)]);
    if (o.body) extra.push(["Content-Type", o.contentType ?? accept]);
    return this.send("SUBSCRIBE", extra, o.body ?? "");
  }

  /** Answers a request from the registrar with a signed 200 (the dialog's To tag kept). */
  answer(req: SipRequest): void {
    const res = response(200, "OK", [
      ...headers(req, "Via").map((v): [string, string] => ["Via", v]),
      ["From", header(req, "From") ?? ""],
      ["To", header(req, "To") ?? ""],
      ["Call-ID", header(req, "Call-ID") ?? ""],
      ["CSeq", header(req, "CSeq") ?? ""],
    ]);
    this.sa.sign(res, this.random);
    this.flow.send(res);
  }

  async next(pred: (m: SipMessage) => boolean, ms = 5_000): Promise<{ m: SipMessage; verdict: Verdict }> {
    const deadline = Date.now() + ms;
    for (;;) {
      const i = this.inbox.findIndex((e) => pred(e.m));
      if (i >= 0) return this.inbox.splice(i, 1)[0]!;
      if (Date.now() > deadline) throw new Error("timed out waiting for a message");
      await sleep(10);
    }
  }

  answerTo(req: SipRequest): Promise<{ m: SipResponse; verdict: Verdict }> {
    const callId = header(req, "Call-ID");
    const cseq = header(req, "CSeq");
    return this.next(
      (m) => m.kind === "response" && header(m, "Call-ID") === callId && header(m, "CSeq") === cseq,
    ) as Promise<{ m: SipResponse; verdict: Verdict }>;
  }

  notifyFor(req: SipRequest, ms?: number): Promise<{ m: SipRequest; verdict: Verdict }> {
    const callId = header(req, "Call-ID");
    return this.next(
      (m) => m.kind === "request" && m.method === "NOTIFY" && header(m, "Call-ID") === callId,
      ms,
    ) as Promise<{ m: SipRequest; verdict: Verdict }>;
  }

  close(): void {
    this.reg.stop();
    this.core.close();
  }

  private receive(m: SipMessage): void {
    this.inbox.push({ m, verdict: verdictOf(this.sa, m) });
  }
}

function parseXml(body: Buffer): Element {
  const errors: string[] = [];
  const doc = new DOMParser({ onError: (level, msg) => errors.push(`${level}: ${msg}`) }).parseFromString(
    body.toString("utf8"),
    "text/xml",
  );
  expect(errors).toEqual([]);
  return doc.documentElement as unknown as Element;
}

const PROVISIONING_REQUEST =
  '<provisioningGroupList xmlns="http://schemas.microsoft.com/2006/09/sip/provisioninggrouplist">' +
  '<provisioningGroup name="ServerConfiguration"/><provisioningGroup name="ucPolicy"/></provisioningGroupList>';

const EVENTS = [
  {
    event: "vnd-microsoft-provisioning-v2",
    type: "application/vnd-microsoft-roaming-provisioning-v2+xml",
    root: "provisionGroupList",
    ns: "http://schemas.microsoft.com/2006/09/sip/provisiongrouplist-notification",
    expires: "0",
    state: /^terminated;expires=0$/,
  },
  {
    event: "vnd-microsoft-roaming-self",
    type: "application/vnd-microsoft-roaming-self+xml",
    root: "roamingData",
    ns: "http://schemas.microsoft.com/2006/09/sip/roaming-self",
    expires: "3600",
    state: /^active;expires=3600$/,
  },
  {
    event: "vnd-microsoft-roaming-contacts",
    type: "application/vnd-microsoft-roaming-contacts+xml",
    root: "contactList",
    ns: null,
    expires: "3600",
    state: /^active;expires=3600$/,
  },
  {
    event: "presence.wpending",
    type: "text/xml+msrtc.wpending",
    root: "watchers",
    ns: null,
    expires: "3600",
    state: /^active;expires=3600$/,
  },
];

describe("lab registrar, Lync 2013 / Skype for Business style", () => {
  let lab: Lab;
  let client: Client;

  beforeAll(async () => {
    lab = await startLab({ site: "hq" });
    client = await Client.register(lab, lab.pool.address, lab.ready.names.pool);
  }, 30_000);

  afterAll(async () => {
    client?.close();
    await lab?.stop();
  });

  it("answers REGISTER with a signed 200 as a Skype for Business front end sends it", () => {
    const ok = client.registerAnswers.find((r) => r.status === 200)!;
    expect(ok).toBeDefined();
    expect(header(ok, "Server")).toBe("RTC/6.0");
    expect(headers(ok, "Supported")).toEqual([
      "adhoclist",
      "msrtc-event-categories",
      "ms-keepalive-deregister",
      "ms-userservices-state-notification",
    ]);
    expect(header(ok, "Allow-Events")).toBe(LYNC_ALLOW_EVENTS);
    expect(header(ok, "Allow-Events")).toBe(
      "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,vnd-microsoft-roaming-ACL,presence," +
        "presence.wpending,vnd-microsoft-roaming-self,vnd-microsoft-provisioning-v2",
    );
    expect(header(ok, "presence-state")).toBe(
      'register-action="added";primary-cluster-type="central";is-connected-to-primary="yes"',
    );
    expect(header(ok, "ms-keep-alive")).toMatch(/^UAS; tcp=no; hop-hop=yes; end-end=no; timeout=\d+$/);
    expect(header(ok, "Expires")).toBe("7200");
    const contact = header(ok, "Contact")!;
    const instance = /\+sip\.instance="(<urn:uuid:[0-9a-f-]{36}>)"/.exec(contact)?.[1];
    expect(instance).toBeDefined();
    expect(contact).toMatch(/^<sip:127\.0\.0\.1:\d+;transport=tls;ms-opaque=[0-9a-f]+>;expires=7200;/);
    const gruu = /;gruu="([^"]+)"/.exec(contact)?.[1];
    expect(gruu).toBe(`sip:4711@lab.test;opaque=user:epid:${gruuEpid(instance!)};gruu`);
    expect(gruu).toMatch(/^sip:4711@lab\.test;opaque=user:epid:[A-Za-z0-9_-]{22}AA;gruu$/);
    // The phone's registration took it (its signature verified) and reads Lync's gruu= off its
    // own Contact: calls then name the GRUU as their Contact, as a Lync endpoint's do.
    const registered = client.events.find((e) => e.type === "registered");
    expect(registered).toMatchObject({ type: "registered", registerAction: "added", expires: 7200 });
    expect(registered && "gruu" in registered ? registered.gruu : undefined).toBe(gruu);
  });

  it("derives GRUUs as Lync does (the two published GRUUs)", () => {
    expect(gruuEpid("<urn:uuid:c1589240-e660-594f-a8b3-4b55f358cbc1>")).toBe("QJJYwWDmT1mos0tV81jLwQAA");
    expect(gruuEpid("e0de506b-a705-59cc-9bfa-d37593141231")).toBe("a1De4AWnzFmb-tN1kxQSMQAA");
    expect(gruuEpid("not-a-uuid")).toBeUndefined();
  });

  for (const e of EVENTS) {
    it(`SUBSCRIBE ${e.event}: signed 200, then a signed NOTIFY with a ${e.root} body`, async () => {
      const before = lab.pool.stats.signedAnswers;
      const sub = client.subscribe(e.event, e.type);
      const ok = await client.answerTo(sub);
      expect(ok.m.status).toBe(200);
      expect(ok.verdict).toBe("verified");
      expect(header(ok.m, "Expires")).toBe(e.expires);
      expect(header(ok.m, "Event")).toBe(e.event);
      expect(header(ok.m, "Server")).toBe("RTC/6.0");
      expect(ok.m.body.length).toBe(0);
      const toTag = /;tag=([^;]+)/.exec(header(ok.m, "To")!)?.[1];
      expect(toTag).toBeDefined();

      const notify = await client.notifyFor(sub);
      expect(notify.verdict).toBe("verified");
      expect(notify.m.uri).toBe(client.contact.slice(1, -1));
      expect(header(notify.m, "Event")).toBe(e.event);
      expect(header(notify.m, "Subscription-State")).toMatch(e.state);
      expect(header(notify.m, "Content-Type")).toBe(e.type);
      expect(header(notify.m, "From")).toBe(header(ok.m, "To"));
      expect(header(notify.m, "To")).toBe(header(sub, "From"));
      const root = parseXml(notify.m.body);
      expect(root.localName).toBe(e.root);
      expect(root.namespaceURI).toBe(e.ns);
      client.answer(notify.m);
      for (let i = 0; i < 100 && lab.pool.stats.signedAnswers === before; i++) await sleep(10);
      expect(lab.pool.stats.signedAnswers).toBe(before + 1);
    });
  }

  it("bodies carry what a client reads: provisioning groups, an empty contact list, self categories", async () => {
    const prov = client.subscribe("vnd-microsoft-provisioning-v2", EVENTS[0]!.type, {
      body: PROVISIONING_REQUEST,
    });
    const p = parseXml((await client.notifyFor(prov)).m.body);
    const groups = [...Array.from({ length: p.getElementsByTagName("provisionGroup").length })].map((_, i) =>
      p.getElementsByTagName("provisionGroup").item(i)!.getAttribute("name"),
    );
    expect(groups).toEqual(["ServerConfiguration"]); // ucPolicy is not one the lab knows

    const contacts = client.subscribe("vnd-microsoft-roaming-contacts", EVENTS[2]!.type);
    const c = parseXml((await client.notifyFor(contacts)).m.body);
    expect(c.getAttribute("deltaNum")).toBe("1");
    expect(c.getElementsByTagName("group").length).toBe(1);
    expect(c.getElementsByTagName("contact").length).toBe(0);

    const self = client.subscribe("vnd-microsoft-roaming-self", EVENTS[1]!.type);
    const s = parseXml((await client.notifyFor(self)).m.body);
    const cats = s.getElementsByTagName("categories").item(0)!;
    expect(cats.getAttribute("uri")).toBe("sip:4711@lab.test");
    expect(s.getElementsByTagName("category").item(0)!.getAttribute("name")).toBe("state");
    expect(s.getElementsByTagName("availability").item(0)!.textContent).toBe("3500");
    expect(s.getElementsByTagName("subscribers").length).toBe(1);
  });

  it("piggybacks the first notification on the 200 when the SUBSCRIBE supports it, and sends no NOTIFY", async () => {
    const sub = client.subscribe("vnd-microsoft-provisioning-v2", EVENTS[0]!.type, {
      piggyback: true,
      body: PROVISIONING_REQUEST,
    });
    const ok = await client.answerTo(sub);
    expect(ok.verdict).toBe("verified");
    expect(header(ok.m, "Expires")).toBe("0");
    expect(header(ok.m, "Content-Type")).toBe("application/vnd-microsoft-roaming-provisioning-v2+xml");
    expect(header(ok.m, "subscription-state")).toBe("terminated;expires=0");
    expect(header(ok.m, "ms-piggyback-cseq")).toBe("1");
    expect(parseXml(ok.m.body).localName).toBe("provisionGroupList");
    await expect(client.notifyFor(sub, 300)).rejects.toThrow(/timed out/);
  });

  it("refreshes and ends a subscription in its dialog; a stranger's To tag gets 481", async () => {
    const sub = client.subscribe("vnd-microsoft-roaming-contacts", EVENTS[2]!.type, { piggyback: true });
    const ok = await client.answerTo(sub);
    const toTag = /;tag=([^;]+)/.exec(header(ok.m, "To")!)![1]!;
    const fromTag = /;tag=([^;]+)/.exec(header(sub, "From")!)![1]!;
    const callId = header(sub, "Call-ID")!;
    const refresh = client.send(
      "SUBSCRIBE",
      [
        ["Event", "vnd-microsoft-roaming-contacts"],
        ["Supported", "ms-piggyback-first-notify"],
        ["Expires", "600"],
      ],
      "",
      { callId, cseq: 2, toTag, fromTag },
    );
    const again = await client.answerTo(refresh);
    expect(again.m.status).toBe(200);
    expect(header(again.m, "To")).toContain(`tag=${toTag}`);
    expect(header(again.m, "Expires")).toBe("600");
    expect(header(again.m, "ms-piggyback-cseq")).toBe("2");

    const end = client.send(
      "SUBSCRIBE",
      [
        ["Event", "vnd-microsoft-roaming-contacts"],
        ["Expires", "0"],
      ],
      "",
      {
        callId,
        cseq: 3,
        toTag,
        fromTag,
      },
    );
    expect((await client.answerTo(end)).m.status).toBe(200);
    const last = await client.notifyFor(end);
    expect(header(last.m, "Subscription-State")).toBe("terminated;reason=timeout");
    expect(last.m.body.length).toBe(0);
    client.answer(last.m);

    const stray = client.send("SUBSCRIBE", [["Event", "vnd-microsoft-roaming-contacts"]], "", {
      callId,
      cseq: 4,
      toTag,
      fromTag,
    });
    const gone = await client.answerTo(stray);
    expect(gone.m.status).toBe(481);
    expect(gone.verdict).toBe("verified");
  });

  it("refuses another event package with a signed 489 and someone else's data with a signed 403", async () => {
    const presence = await client.answerTo(client.subscribe("vnd-microsoft-roaming-ACL", "application/x"));
    expect(presence.m.status).toBe(489);
    expect(presence.verdict).toBe("verified");
    expect(header(presence.m, "Allow-Events")).toContain("vnd-microsoft-roaming-self");

    const other = request("SUBSCRIBE", "sip:9999@lab.test", [
      ["Via", `SIP/2.0/TLS 127.0.0.1:${client.flow.local.port};branch=z9hG4bK${hex(8)}`],
      ["Max-Forwards", "70"],
      ["From", `<${client.aor}>;tag=${hex(5)}`],
      ["To", "<sip:9999@lab.test>"],
      ["Call-ID", hex(16)],
      ["CSeq", "1 SUBSCRIBE"],
      ["Contact", client.contact],
      ["Event", "vnd-microsoft-roaming-self"],
    ]);
    client.sa.sign(other, new CryptoRandom());
    client.flow.send(other);
    const refused = await client.answerTo(other);
    expect(refused.m.status).toBe(403);
    expect(refused.verdict).toBe("verified");
  });

  it("answers SERVICE with a signed 200 and an unknown method with a signed 501 Not Implemented", async () => {
    const service = client.send(
      "SERVICE",
      [["Content-Type", "application/msrtc-category-publish+xml"]],
      '<publish xmlns="http://schemas.microsoft.com/2006/09/sip/rich-presence"><publications uri="sip:4711@lab.test"/></publish>',
    );
    const ok = await client.answerTo(service);
    expect(ok.m.status).toBe(200);
    expect(ok.verdict).toBe("verified");

    const unknown = await client.answerTo(client.send("FROBNICATE"));
    expect(unknown.m.status).toBe(501);
    expect(unknown.m.reason).toBe("Not Implemented");
    expect(unknown.verdict).toBe("verified");
  });

  it("answers a de-REGISTER with a signed 200 that has no register-action", async () => {
    const second = await Client.register(lab, lab.pool.address, lab.ready.names.pool);
    try {
      const n = second.registerAnswers.length;
      expect(await second.reg.unregister()).toBe(true);
      const bye = second.registerAnswers[n]!;
      expect(bye.status).toBe(200);
      expect(header(bye, "Expires")).toBe("0");
      expect(header(bye, "presence-state")).toBeUndefined();
      expect(JSON.stringify(bye.headers)).not.toContain("register-action");
    } finally {
      second.close();
    }
  });

  it("switches single features back to the old behaviour at run time", async () => {
    lab.pool.features = registrarFeatures("lync", { selfSubscriptions: false, rtcServer: false });
    try {
      const sub = await client.answerTo(client.subscribe("vnd-microsoft-roaming-self", EVENTS[1]!.type));
      expect(sub.m.status).toBe(501);
      expect(sub.m.reason).toBe("Not Implemented");
      expect(header(sub.m, "Server")).toBe("handset-lab/0.1 (RTC/6.0)");
      const service = await client.answerTo(client.send("SERVICE"));
      expect(service.m.status).toBe(501);
    } finally {
      lab.pool.features = registrarFeatures("lync");
    }
  });
});

describe("lab registrar, minimal style (LabOptions.registrarStyle)", () => {
  it("answers as the lab did before: short Allow-Events, no GRUU, no self-subscriptions, register-action on de-REGISTER", async () => {
    const lab = await startLab({ site: "hq", registrarStyle: "minimal" });
    const client = await Client.register(lab, lab.pool.address, lab.ready.names.pool);
    try {
      const ok = client.registerAnswers.find((r) => r.status === 200)!;
      expect(header(ok, "Server")).toBe("handset-lab/0.1 (RTC/6.0)");
      expect(headers(ok, "Supported")).toEqual([]);
      expect(header(ok, "Allow-Events")).toBe(
        "vnd-microsoft-provisioning,vnd-microsoft-roaming-contacts,presence,registration-notify",
      );
      expect(header(ok, "Contact")).not.toContain("gruu=");
      expect(header(ok, "Contact")).toMatch(/;expires=7200$/);
      const sub = await client.answerTo(client.subscribe("vnd-microsoft-roaming-self", EVENTS[1]!.type));
      expect(sub.m.status).toBe(501);
      expect(sub.verdict).toBe("verified");
      const n = client.registerAnswers.length;
      expect(await client.reg.unregister()).toBe(true);
      expect(header(client.registerAnswers[n]!, "presence-state")).toMatch(/register-action="refreshed"/);
    } finally {
      client.close();
      await lab.stop();
    }
  }, 30_000);
});
