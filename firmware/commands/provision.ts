/**
 * `handset provision --web CERTPROV-URL --extension N --store DIR --ca PEM` with the PIN on
 * standard input (--pin-stdin), in HANDSET_PIN or in --pin: PIN sign-in and certificate
 * provisioning into a store. The PIN is never echoed, stored or logged.
 */
import { HandsetError } from "../core/errors.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { SystemClock } from "../platform/system-clock.ts";
import {
  type CommandSpec,
  PIN_FLAGS,
  PIN_NOTE,
  parseFlags,
  readPin,
  required,
  VERBOSE_FLAG,
} from "./args.ts";
import { openStore, signInDeps } from "./identity.ts";
import { checkStoreDir, httpsUrl, readTrustFile } from "./input-files.ts";
import { logSink, type Output } from "./output.ts";

export const PROVISION_SPEC = {
  summary: "PIN sign-in and certificate provisioning into a store",
  synopsis: ["--web CERTPROV-URL --extension N --store DIR --ca PEM and a PIN"],
  flags: {
    web: { type: "string", arg: "CERTPROV-URL", help: "the certificate provisioning service (https URL)" },
    extension: { type: "string", arg: "N", help: "the extension to sign in as" },
    ...PIN_FLAGS,
    store: { type: "string", arg: "DIR", help: "the identity store to provision into (created if need be)" },
    ca: { type: "string", arg: "PEM", help: "the root certificate(s) the web services' chain to (PEM file)" },
    ...VERBOSE_FLAG,
  },
  notes: PIN_NOTE,
} as const satisfies CommandSpec;

export async function provisionCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, PROVISION_SPEC.flags);
  // Every flag and every file is checked here, before the first packet.
  const certProvUrl = httpsUrl(required(f, "web"), "web");
  const extension = required(f, "extension");
  const storeDir = required(f, "store");
  await checkStoreDir(storeDir, "store");
  const ca = await readTrustFile(required(f, "ca"), "ca");
  const pin = await readPin(f);
  if (pin === undefined)
    throw new HandsetError("usage", "a PIN is required: --pin-stdin, HANDSET_PIN or --pin (see --help)");
  if (!/^\d{1,32}$/.test(pin)) throw new HandsetError("usage", "the PIN must be digits");
  const random = new CryptoRandom();
  const clock = new SystemClock();
  const logger = logSink(out, f["verbose"] === true);
  const store = openStore(storeDir, random);
  out.event({ event: "state", state: "signing-in", extension });
  // Loaded here, not at the top: handset.mjs is every command, and the others (run) must not pay for it.
  const { signIn } = await import("../provisioning/resumable-sign-in.ts");
  const result = await signIn(signInDeps({ store, ca: [ca], random, clock, logger }), {
    certProvUrl,
    extension,
    pin,
    trustedRoots: [ca],
    onStep: (step, ms) => out.event({ event: "sign-in", step, ms }),
  });
  const cred = result.record.credential!;
  out.event({
    event: "state",
    state: "provisioned",
    uri: result.uri,
    notAfter: new Date(cred.notAfter).toISOString(),
    timings: result.timings,
  });
  return 0;
}
