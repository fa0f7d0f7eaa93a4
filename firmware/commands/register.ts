/**
 * `handset register`: one TLS-DSK registration against one registrar, following a 301 to the
 * home pool, optionally refreshing N times; exits 0 only when every 2xx's rspauth verified
 * (the user-agent core turns any other 2xx into a failure before it gets here).
 */
import { createHash, X509Certificate } from "node:crypto";
import type { Clock } from "../core/clock.ts";
import { asHandsetError, HandsetError } from "../core/errors.ts";
import { type Logger, silentLogger } from "../core/logger.ts";
import type { Random } from "../core/random.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { createTlsDskEngine } from "../platform/tls-dsk-engines.ts";
import { tlsFlowConnector } from "../platform/tls-flow.ts";
import { parseUri, type SipUri } from "../sip/grammar/uri.ts";
import type { EndpointIdentity } from "../sip/registration/register-request.ts";
import {
  CertificateRequiredError,
  Registration,
  type RegistrationEvent,
} from "../sip/registration/registration.ts";
import type { InnerTls } from "../sip/tls-dsk/engine.ts";
import { UserAgentCore } from "../sip/user-agent-core.ts";
import {
  type CommandSpec,
  hostPort,
  oneOf,
  PIN_FLAGS,
  PIN_NOTE,
  parseFlags,
  readPin,
  required,
  seconds,
  VERBOSE_FLAG,
  wholeNumber,
} from "./args.ts";
import { openStore, signInDeps } from "./identity.ts";
import {
  checkKeyMatchesCertificate,
  checkStoreDir,
  readCertificateFile,
  readKeyFile,
  readTrustFile,
} from "./input-files.ts";
import { logSink, type Output } from "./output.ts";

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
  // The connect counts against --timeout too.
  const connect = tlsFlowConnector({ ca: o.ca, clock, connectTimeoutMs: Math.min(10_000, o.timeoutMs) });
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

export const REGISTER_SPEC = {
  summary: "one TLS-DSK registration; exits 0 only when every 2xx's rspauth verified",
  synopsis: [
    "--registrar HOST:PORT --uri SIP-URI --cert PEM --key PEM --ca PEM [flags]",
    "--store DIR --registrar HOST:PORT --ca PEM [--extension N and a PIN] [flags]",
  ],
  flags: {
    registrar: {
      type: "string",
      arg: "HOST:PORT",
      help: "the registrar (a 301 to the home pool is followed)",
    },
    uri: { type: "string", arg: "SIP-URI", help: "the address of record, e.g. sip:4711@lab.test" },
    cert: { type: "string", arg: "PEM", help: "the client certificate (PEM file)" },
    key: { type: "string", arg: "PEM", help: "its private key (PEM file); must match --cert" },
    ca: { type: "string", arg: "PEM", help: "the root certificate(s) the registrar's chain to (PEM file)" },
    store: { type: "string", arg: "DIR", help: "the identity store (instead of --cert and --key)" },
    extension: {
      type: "string",
      arg: "N",
      help: "with --store: sign in as N when the store holds no certificate",
    },
    ...PIN_FLAGS,
    "server-name": { type: "string", arg: "NAME", help: "the name the registrar's certificate must carry" },
    "inner-tls": {
      type: "string",
      arg: "1.2|1.0|auto",
      help: "the TLS version inside the tunnel (default auto)",
    },
    refreshes: { type: "string", arg: "N", help: "refresh N times, each verified (default 0)" },
    timeout: { type: "string", arg: "S", help: "give up after S seconds (default 30)" },
    ...VERBOSE_FLAG,
  },
  notes: PIN_NOTE,
} as const satisfies CommandSpec;

/** `--uri`: a sip: or sips: URI with a user part, parsed by the SIP grammar the REGISTER uses. */
export function addressOfRecord(text: string): string {
  const bad = (why: string) =>
    new HandsetError("usage", `--uri must be a SIP URI such as sip:4711@lab.test, got "${text}" (${why})`);
  let uri: SipUri;
  try {
    uri = parseUri(text);
  } catch (err) {
    const why = (err as Error).message.split("\n")[0]!;
    throw bad(/no valid scheme/.test(why) ? "no sip: scheme" : why.replace(/ (of|in) URI "[^"]*"/, ""));
  }
  if (uri.scheme !== "sip" && uri.scheme !== "sips") throw bad(`a ${uri.scheme}: URI`);
  if (!uri.user) throw bad("no user part");
  if (!uri.host) throw bad("no host");
  return text;
}

export async function registerCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, REGISTER_SPEC.flags);
  // Every flag and every file is checked here, before the first packet.
  const registrar = hostPort(required(f, "registrar"), "registrar");
  const innerTls = oneOf(f, "inner-tls", ["1.2", "1.0", "auto"] as const, "auto");
  const refreshes = wholeNumber(f, "refreshes", 0, { max: 1000 });
  const timeoutS = seconds(f, "timeout", 30);
  const storeDir = typeof f["store"] === "string" ? f["store"] : undefined;
  const uriFlag = typeof f["uri"] === "string" ? addressOfRecord(f["uri"]) : undefined;
  let files: { cert: string; key: string; uri: string } | undefined;
  if (storeDir === undefined) {
    const certPath = required(f, "cert");
    const keyPath = required(f, "key");
    const uri = required(f, "uri");
    const cert = await readCertificateFile(certPath, "cert");
    const key = await readKeyFile(keyPath, "key");
    checkKeyMatchesCertificate(cert, key.key, { cert: certPath, key: keyPath });
    files = { cert, key: key.pem, uri };
  } else await checkStoreDir(storeDir, "store");
  const ca = await readTrustFile(required(f, "ca"), "ca");
  // Read before registering: standard input is read once, whether or not sign-in turns out needed.
  const pin = await readPin(f);
  const logger = logSink(out, f["verbose"] === true);
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

  if (files) {
    const { cert, key, uri } = files;
    const result = await registerOnce({ ...base, endpoint: endpointForCert(uri, cert), cert, key });
    out.event({ event: "done", ...result });
    return 0;
  }

  // The stored identity: the same epid and +sip.instance on every boot, the provisioned certificate.
  const random = new CryptoRandom();
  const store = openStore(storeDir!, random);
  const fromStore = async () => {
    const record = await store.loadOrCreate();
    const cred = record.credential;
    const uri = cred?.uri ?? uriFlag;
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
    // Loaded here, not at the top: handset.mjs is every command, and the others (run) must not pay for it.
    const { signIn } = await import("../provisioning/resumable-sign-in.ts");
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
