/**
 * `handset provision --web CERTPROV-URL --extension N --store DIR --ca PEM` with the PIN on
 * standard input (--pin-stdin), in HANDSET_PIN or in --pin: PIN sign-in and certificate
 * provisioning into a store. The PIN is never echoed, stored or logged.
 */
import { readFile } from "node:fs/promises";
import { HandsetError } from "../core/errors.ts";
import { createLogger, silentLogger } from "../core/logger.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { SystemClock } from "../platform/system-clock.ts";
import { signIn } from "../provisioning/resumable-sign-in.ts";
import { PIN_FLAGS, parseFlags, readPin, required } from "./args.ts";
import { openStore, signInDeps } from "./identity.ts";
import type { Output } from "./output.ts";

export async function readPem(path: string, flag: string): Promise<string> {
  try {
    return await readFile(path, "utf8");
  } catch {
    throw new HandsetError("file-unreadable", `Cannot read --${flag} file ${path}`);
  }
}

export async function provisionCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    web: { type: "string" },
    extension: { type: "string" },
    ...PIN_FLAGS,
    store: { type: "string" },
    ca: { type: "string" },
    verbose: { type: "boolean" },
  });
  const certProvUrl = required(f, "web");
  const extension = required(f, "extension");
  const pin = await readPin(f);
  if (pin === undefined)
    throw new HandsetError("usage", "a PIN is required: --pin-stdin, HANDSET_PIN or --pin (see --help)");
  if (!/^\d{1,32}$/.test(pin)) throw new HandsetError("usage", "the PIN must be digits");
  const ca = await readPem(required(f, "ca"), "ca");
  const random = new CryptoRandom();
  const clock = new SystemClock();
  const logger = f["verbose"]
    ? createLogger((r) =>
        out.event({ event: "log", level: r.level, category: r.category, message: r.message }),
      )
    : silentLogger;
  const store = openStore(required(f, "store"), random);
  out.event({ event: "state", state: "signing-in", extension });
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
