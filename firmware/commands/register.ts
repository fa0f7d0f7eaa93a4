/**
 * `handset register`: one TLS-DSK registration against one registrar, following a 301 to the
 * home pool, optionally refreshing N times; exits 0 only when every 2xx's rspauth verified
 * (the user-agent core turns any other 2xx into a failure before it gets here).
 */
import { createHash, X509Certificate } from "node:crypto";
import type { Clock } from "../core/clock.ts";
import { asHandsetError, HandsetError } from "../core/errors.ts";
import { createLogger, type Logger, silentLogger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { createTlsDskEngine } from "../platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../platform/tls-flow.ts";
import { signIn } from "../provisioning/resumable-sign-in.ts";
import type { EndpointIdentity } from "../sip/registration/register-request.ts";
import {
  CertificateRequiredError,
  Registration,
  type RegistrationEvent,
} from "../sip/registration/registration.ts";
import type { InnerTls } from "../sip/tls-dsk/engine.ts";
import { UserAgentCore } from "../sip/user-agent-core.ts";
import { hostPort, PIN_FLAGS, parseFlags, readPin, required } from "./args.ts";
import { openStore, signInDeps } from "./identity.ts";
import type { Output } from "./output.ts";
import { readPem } from "./provision.ts";

export interface RegisterOnceOptions {
  registrar: { host: string; port: number; serverName?: string };
  endpoint: EndpointIdentity;
  /** Undefined: no certificate yet; the registrar's challenge will say where to sign in. */
  cert: string | undefined;
  key: string | undefined;
  ca: string[];
  innerTls: InnerTls;
  refreshes: number;
  timeoutMs: number;
  clock?: Clock;
  random?: Random;
  logger?: Logger;
  onEvent?: (e: { event: string; [k: string]: unknown }) => void;
}

export interface RegisterOnceResult {
  registrar: string;
  refreshesVerified: number;
  tlsVersion?: string;
  cipher?: string;
}

/** Stable endpoint identity for a certificate when there is no store: the same cert, the same epid. */
export function endpointForCert(aor: string, certPem: string): EndpointIdentity {
  const h = createHash("sha256").update(certPem).digest("hex");
  const uuid = `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
  return { aor, epid: h.slice(32, 42), instanceId: uuid };
}

export async function registerOnce(o: RegisterOnceOptions): Promise<RegisterOnceResult> {
  const clock = o.clock ?? new SystemClock();
  const random = o.random ?? new CryptoRandom();
  const logger = o.logger ?? silentLogger;
  const emit = o.onEvent ?? (() => {});
  const credentials =
    o.cert && o.key
      ? { cert: o.cert, key: o.key, notAfter: new Date(new X509Certificate(o.cert).validTo).getTime() }
      : undefined;
  const connect = tlsFlowConnector({ ca: o.ca, clock });
  let target = o.registrar;
  const deadline = clock.monotonic() + o.timeoutMs;
  for (let hop = 0; hop < 4; hop++) {
    const where = `${target.host}:${target.port}`;
    emit({ event: "state", state: "registering", registrar: where });
    const remaining = deadline - clock.monotonic();
    if (remaining <= 0) throw new HandsetError("timeout", `Timed out registering at ${where}`);
    const flow = await connect({
      ...target,
      ...(target.serverName ? { serverName: target.serverName } : {}),
    });
    const core = new UserAgentCore(flow, { clock, random, logger: logger.child("sip") });
    const reg = new Registration({
      clock,
      random,
      logger: logger.child("registration"),
      core,
      engineFactory: (e) => createTlsDskEngine({ ...e, clock }),
      endpoint: o.endpoint,
      credentials,
      trustedRoots: o.ca,
      innerTls: o.innerTls,
    });
    const outcome = await new Promise<
      | { kind: "done"; result: RegisterOnceResult }
      | { kind: "redirect"; to: { host: string; port: number } }
      | { kind: "error"; error: HandsetError }
    >((resolve) => {
      const timer = clock.setTimer(remaining, () =>
        resolve({ kind: "error", error: new HandsetError("timeout", `Timed out registering at ${where}`) }),
      );
      let auth: { tlsVersion: string; cipher: string } | undefined;
      const finish = (v: Parameters<typeof resolve>[0]) => {
        timer.cancel();
        resolve(v);
      };
      reg.on((e: RegistrationEvent) => {
        switch (e.type) {
          case "challenged":
            emit({ event: "auth", step: "challenged", targetname: e.targetname, version: e.version });
            break;
          case "authenticated":
            auth = { tlsVersion: e.tlsVersion, cipher: e.cipher };
            emit({
              event: "auth",
              step: "established",
              tls: e.tlsVersion,
              cipher: e.cipher,
              ms: e.handshakeMs,
            });
            break;
          case "registered":
            emit({
              event: e.refresh === 0 ? "state" : "refreshed",
              ...(e.refresh === 0
                ? { state: "registered", primary: e.connectedToPrimary }
                : { refresh: e.refresh }),
              registrar: where,
              expires: e.expires,
              rspauth: "verified",
            });
            if (e.refresh < o.refreshes) reg.refresh();
            else
              void reg
                .unregister()
                // The refreshes are verified already: a failed un-REGISTER is logged, not fatal.
                .catch((err: unknown) => logger.warn("unregister failed", { code: asHandsetError(err).code }))
                .then(() => {
                  core.close();
                  finish({
                    kind: "done",
                    result: { registrar: where, refreshesVerified: e.refresh, ...auth },
                  });
                })
                .catch((err: unknown) => finish({ kind: "error", error: asHandsetError(err) }));
            break;
          case "redirected": {
            const first = e.targets[0]!;
            emit({ event: "redirected", to: e.targets.map((t) => ({ uri: t.uri, q: t.q })) });
            core.close();
            finish({ kind: "redirect", to: { host: first.host, port: first.port } });
            break;
          }
          case "failed":
            core.close();
            finish({ kind: "error", error: e.error });
            break;
          case "unregistered":
            break;
        }
      });
      reg.start();
    });
    reg.stop();
    core.close();
    if (outcome.kind === "done") return outcome.result;
    if (outcome.kind === "error") throw outcome.error;
    target = outcome.to;
  }
  throw new HandsetError("redirect-loop", "Too many redirects");
}

export async function registerCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    registrar: { type: "string" },
    uri: { type: "string" },
    cert: { type: "string" },
    key: { type: "string" },
    ca: { type: "string" },
    store: { type: "string" },
    extension: { type: "string" },
    ...PIN_FLAGS,
    "server-name": { type: "string" },
    "inner-tls": { type: "string" },
    refreshes: { type: "string" },
    timeout: { type: "string" },
    verbose: { type: "boolean" },
  });
  const registrar = hostPort(required(f, "registrar"), "registrar");
  // Read before registering: standard input is read once, whether or not sign-in turns out needed.
  const pin = await readPin(f);
  const innerTls = (f["inner-tls"] ?? "auto") as string;
  if (!["1.2", "1.0", "auto"].includes(innerTls))
    throw new HandsetError("usage", "--inner-tls must be 1.2, 1.0 or auto");
  const refreshes = Number(f["refreshes"] ?? "0");
  if (!Number.isInteger(refreshes) || refreshes < 0)
    throw new HandsetError("usage", "--refreshes must be a whole number");
  const timeoutS = Number(f["timeout"] ?? "30");
  const ca = await readPem(required(f, "ca"), "ca");
  const logger = f["verbose"]
    ? createLogger((r) =>
        out.event({ event: "log", level: r.level, category: r.category, message: r.message }),
      )
    : silentLogger;
  const base = {
    registrar: {
      ...registrar,
      ...(typeof f["server-name"] === "string" ? { serverName: f["server-name"] } : {}),
    },
    ca: [ca],
    innerTls: innerTls as InnerTls,
    refreshes,
    timeoutMs: timeoutS * 1000,
    logger,
    onEvent: (e: { event: string; [k: string]: unknown }) => out.event(e),
  };

  if (typeof f["store"] !== "string") {
    const cert = await readPem(required(f, "cert"), "cert");
    const key = await readPem(required(f, "key"), "key");
    const uri = required(f, "uri");
    const result = await registerOnce({ ...base, endpoint: endpointForCert(uri, cert), cert, key });
    out.event({ event: "done", ...result });
    return 0;
  }

  // The stored identity: the same epid and +sip.instance on every boot, the provisioned certificate.
  const random = new CryptoRandom();
  const store = openStore(f["store"], random);
  const fromStore = async () => {
    const record = await store.loadOrCreate();
    const cred = record.credential;
    const uri = cred?.uri ?? (typeof f["uri"] === "string" ? f["uri"] : undefined);
    if (!uri)
      throw new HandsetError("sign-in-required", "The store holds no identity yet: run handset provision");
    return {
      ...base,
      endpoint: { aor: uri, epid: record.epid, instanceId: record.instanceId },
      cert: cred?.certPem,
      key: cred?.keyPem,
    };
  };
  try {
    const result = await registerOnce(await fromStore());
    out.event({ event: "done", ...result });
    return 0;
  } catch (err) {
    // The registrar's challenge named the certificate provisioning service: sign in there, once.
    if (!(err instanceof CertificateRequiredError) || !err.stsUri) throw err;
    if (typeof f["extension"] !== "string" || pin === undefined) {
      throw new HandsetError(
        "sign-in-required",
        `Sign-in required at ${err.stsUri} (give --extension and a PIN: --pin-stdin or HANDSET_PIN)`,
      );
    }
    out.event({ event: "state", state: "sign-in-required", certProv: err.stsUri });
    out.event({ event: "state", state: "signing-in" });
    const deps = signInDeps({ store, ca: [ca], random, clock: new SystemClock(), logger });
    await signIn(deps, {
      certProvUrl: err.stsUri,
      extension: f["extension"],
      pin,
      trustedRoots: [ca],
    });
    out.event({ event: "state", state: "provisioned" });
    const result = await registerOnce(await fromStore());
    out.event({ event: "done", ...result });
    return 0;
  }
}
