import { endpointForCert } from "../firmware/commands/register.ts";
import { silentLogger } from "../firmware/core/logger.ts";
import { type CallMediaPorts, callMediaPorts } from "../firmware/platform/call-media.ts";
import { CryptoRandom } from "../firmware/platform/crypto-random.ts";
import { SystemClock } from "../firmware/platform/system-clock.ts";
import { tlsFlowConnector } from "../firmware/platform/tls-flow.ts";
import type { Flow } from "../firmware/sip/flow.ts";
import { header, type SipMessage } from "../firmware/sip/message/message.ts";
import type { Registration } from "../firmware/sip/registration/registration.ts";
import type { Call } from "../firmware/sip/session/call.ts";
import { CallAgent } from "../firmware/sip/session/call-agent.ts";
import { UserAgentCore } from "../firmware/sip/user-agent-core.ts";
import { type Lab, startLab } from "../test/lab/lab.ts";
import {
  addUser,
  type LabUserCreds,
  labRegistration,
  registered,
  testClient,
} from "../test/lab-calls/phones.ts";
import { summarize } from "./bench-stats.ts";

type Side = "caller" | "callee";

/** Timestamps (performance.now()) of one call; the Call-ID is learnt from the caller's INVITE. */
interface Marks {
  callId?: string;
  dial?: number;
  inviteSent?: number;
  inviteReceived?: number;
  okSent?: number;
  okReceived?: number;
  ackSent?: number;
  ackReceived?: number;
  confirmed?: number;
  rtpAtCaller?: number;
  rtpAtCallee?: number;
  hangUp?: number;
  terminated?: number;
}

let marks: Marks | undefined;

const cseqMethod = (m: SipMessage) => (header(m, "CSeq") ?? "").trim().split(/\s+/)[1]?.toUpperCase();

function note(side: Side, dir: "sent" | "received", m: SipMessage): void {
  const at = performance.now();
  const k = marks;
  if (!k) return;
  const callId = header(m, "Call-ID");
  if (side === "caller" && dir === "sent" && m.kind === "request" && m.method === "INVITE" && !k.callId)
    k.callId = callId;
  if (!k.callId || callId !== k.callId) return;
  const invite2xx = m.kind === "response" && m.status >= 200 && m.status < 300 && cseqMethod(m) === "INVITE";
  const is = (method: string) => m.kind === "request" && m.method === method;
  if (side === "caller" && dir === "sent") {
    if (is("INVITE")) k.inviteSent ??= at;
    else if (is("ACK")) k.ackSent ??= at;
  } else if (side === "caller" && dir === "received") {
    if (invite2xx) k.okReceived ??= at;
  } else if (side === "callee" && dir === "received") {
    if (is("INVITE")) k.inviteReceived ??= at;
    else if (is("ACK")) k.ackReceived ??= at;
  } else if (invite2xx) k.okSent ??= at;
}

/** The flow as it is, with every message written or received timestamped on the way. */
function tapped(inner: Flow, side: Side): Flow {
  inner.onMessage((m) => note(side, "received", m)); // first listener: before the core sees it
  return {
    remote: inner.remote,
    local: inner.local,
    peerCertificatePem: inner.peerCertificatePem,
    send: (m) => {
      inner.send(m);
      note(side, "sent", m);
    },
    sendPing: () => inner.sendPing(),
    close: () => inner.close(),
    onMessage: (l) => inner.onMessage(l),
    onPong: (l) => inner.onPong(l),
    onClose: (l) => inner.onClose(l),
  };
}

interface Leg {
  core: UserAgentCore;
  reg: Registration;
  agent: CallAgent;
  ports: CallMediaPorts;
}

/** Registers `user` on the SBA with the firmware's stack and builds its CallAgent on the real media port. */
async function leg(lab: Lab, user: LabUserCreds, side: Side): Promise<Leg> {
  const clock = new SystemClock();
  const random = new CryptoRandom();
  const logger = silentLogger;
  const i = lab.ready.sba.lastIndexOf(":");
  const flow = await tlsFlowConnector({ ca: [lab.ca.cert], clock })({
    host: lab.ready.sba.slice(0, i),
    port: Number(lab.ready.sba.slice(i + 1)),
    serverName: lab.ready.names.sba,
  });
  const core = new UserAgentCore(tapped(flow, side), { clock, random, logger });
  const endpoint = endpointForCert(user.aor, user.cert);
  // As Account.mechanismOn builds it (firmware defaults for everything it leaves out).
  const reg = labRegistration(lab, user, { core, clock, random, logger });
  const gruu = (await registered(reg)).gruu;
  const ports = await callMediaPorts({
    clock,
    random,
    logger,
    address: "127.0.0.1",
    capabilities: { codecs: ["PCMU", "PCMA"], srtp: "required" },
  });
  ports.onPort((p) =>
    p.events.on((e) => {
      if (e.type !== "remote-ssrc" || e.previous !== undefined || !marks) return;
      const at = performance.now();
      if (side === "caller") marks.rtpAtCaller ??= at;
      else marks.rtpAtCallee ??= at;
    }),
  );
  const { address, port } = flow.local;
  const agent = new CallAgent({
    core,
    clock,
    random,
    logger,
    identity: { aor: user.aor, epid: endpoint.epid },
    // The GRUU when the registrar gives one, else the Contact registered (Account's FlowLine).
    contact: gruu ?? `sip:${address}:${port};transport=tls;ms-opaque=${endpoint.epid}`,
    media: ports.factory,
  });
  return { core, reg, agent, ports };
}

async function until(done: () => boolean, what: string, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!done()) {
    if (performance.now() > deadline) throw new Error(`bench-call: timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 1));
  }
}

/** One call: dial, wait for confirmed and media both ways, hang up, wait for both ends to finish. */
async function oneCall(caller: Leg, callee: Leg, target: string): Promise<Marks> {
  const k: Marks = {};
  marks = k;
  let incoming: Call | undefined;
  const offIncoming = callee.agent.onIncoming((c) => {
    incoming = c;
  });
  k.dial = performance.now();
  const call = caller.agent.dial(target, (e) => {
    if (e.type !== "state") return;
    if (e.state === "confirmed") k.confirmed ??= performance.now();
    if (e.state === "terminated" && k.confirmed === undefined)
      failed = `${e.reason} ${e.status ?? ""}`.trim();
  });
  let failed: string | undefined;
  try {
    await until(() => {
      if (failed) throw new Error(`bench-call: the call ended before it was set up (${failed})`);
      return call.state === "confirmed" && k.ackReceived !== undefined;
    }, "the call to be confirmed");
    await until(
      () => k.rtpAtCaller !== undefined && k.rtpAtCallee !== undefined,
      "SRTP both ways",
      3_000,
    ).catch(() => {}); // reported as missing, not fatal
    k.hangUp = performance.now();
    call.hangUp();
    await until(
      () => call.state === "terminated" && incoming?.state === "terminated",
      "both ends to terminate",
    );
    k.terminated = performance.now();
  } finally {
    offIncoming();
    marks = undefined;
  }
  await Promise.all(caller.ports.live.map((p) => p.closed).concat(callee.ports.live.map((p) => p.closed)));
  await Promise.all([caller.ports.settled(), callee.ports.settled()]);
  return k;
}

const stats = (values: number[]) => summarize(values);

/** Stats of `to − from` over the calls where both marks were taken. */
function span(all: Marks[], from: keyof Marks, to: keyof Marks) {
  const v: number[] = [];
  for (const k of all) {
    const a = k[from];
    const b = k[to];
    if (typeof a === "number" && typeof b === "number") v.push(b - a);
  }
  return stats(v);
}

export async function benchCallSetup(calls = 30, warmup = 3): Promise<unknown> {
  const lab = await startLab();
  const legs: Leg[] = [];
  try {
    const userB = await addUser(lab, "4712");
    const [a, b] = await Promise.all([leg(lab, testClient(lab), "caller"), leg(lab, userB, "callee")]);
    legs.push(a, b);
    b.agent.onIncoming((c) => {
      c.answer();
    });
    const measured: Marks[] = [];
    for (let n = 0; n < warmup + calls; n++) {
      const k = await oneCall(a, b, userB.aor);
      if (n >= warmup) measured.push(k);
    }
    return {
      calls: measured.length,
      warmup_calls: warmup,
      invite_to_ack_ms: span(measured, "inviteSent", "ackSent"),
      dial_to_confirmed_ms: span(measured, "dial", "confirmed"),
      parts_ms: {
        dial_to_invite_sent: span(measured, "dial", "inviteSent"),
        invite_sent_to_200_received: span(measured, "inviteSent", "okReceived"),
        callee_invite_received_to_200_sent: span(measured, "inviteReceived", "okSent"),
        caller_200_received_to_ack_sent: span(measured, "okReceived", "ackSent"),
        dial_to_ack_received_at_callee: span(measured, "dial", "ackReceived"),
      },
      dial_to_first_srtp_received_ms: {
        caller: span(measured, "dial", "rtpAtCaller"),
        callee: span(measured, "dial", "rtpAtCallee"),
      },
      hang_up_to_both_terminated_ms: span(measured, "hangUp", "terminated"),
      notes: [
        "In-process lab (test/lab), two users on the SBA (one proxy, no WAN link), real SIP/TLS on 127.0.0.1; the lab runs in this process, so its CPU is in the figures.",
        "Both legs TLS-DSK: caller signs INVITE/ACK with its SA, the SBA verifies, re-signs for the callee and Record-Routes; the callee verifies, signs its 200, the SBA verifies and re-signs for the caller, who verifies it before the ACK.",
        "INVITE and ACK times are taken at the flow's send, after signing; dial → INVITE includes the SDP offer with fresh SDES keys (one per offered suite, AES_CM_128_HMAC_SHA1_80 and _32; the answer picks _80); the callee's 200 includes its own key and the SRTP contexts, the caller's ACK its SRTP set-up.",
        "Auto-answer: the callee answers at once, so no 180 Ringing; no user think time is in the figure.",
        "RTP sockets come from CallMediaPorts' pre-bound pool (refilled between calls), so no socket bind is in the set-up time.",
        "First SRTP received: the stream's first authenticated packet of the peer's SSRC. Each side sends at once when its media is agreed (callee: its answer; caller: the 200), then every 20 ms. The callee's first packet reaches the caller before the 200 has (RTP goes direct, the 200 through the SBA) and is not yet taken, so the caller's figure is typically the callee's second packet, ~20 ms later.",
        "Registration (TLS handshake, TLS-DSK negotiation) happens once before the calls and is not in the figures.",
      ],
    };
  } finally {
    for (const l of legs) {
      l.agent.stop();
      l.reg.stop();
      l.core.close();
    }
    await Promise.all(legs.map((l) => l.ports.close()));
    await lab.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) {
  process.stdout.write(`${JSON.stringify(await benchCallSetup(), null, 2)}\n`);
}
