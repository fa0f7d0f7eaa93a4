/**
 * `handset store show --store DIR [--json]`: what a phone's flash holds, as the diagnostics an
 * admin reads (firmware/telemetry/diagnostics.ts) plus the state of each generation file. It
 * only reads (no clean-up, no quarantine) and never prints a secret: no private key, PIN or
 * ticket, no PEM body.
 *
 * `handset store reset --store DIR --yes`: factory reset — no certificate, key, sign-in progress,
 * cached servers or trusted roots are left, and the phone gets new device ids. Refuses without
 * --yes.
 *
 * `handset store init --store DIR [--json]`: first boot (handset-firstboot.service) — the factory
 * state, a record with new device ids, in a 0700 directory with 0600 files, unless the store
 * already holds an identity, which it leaves as it is (idempotent). A damaged store stays damaged
 * (store-damaged): init never papers over it with a fresh identity.
 */
import { HandsetError } from "../core/errors.ts";
import { CryptoRandom } from "../platform/crypto-random.ts";
import { nodeFileSystem } from "../platform/file-system.ts";
import type { GenerationState, IdentityRecord, IdentityStore } from "../store/identity-store.ts";
import { diagnostics, diagnosticsRows } from "../telemetry/diagnostics.ts";
import { type CommandSpec, parseFlags, required } from "./args.ts";
import { openStore } from "./identity.ts";
import { checkStoreDir } from "./input-files.ts";
import type { Output } from "./output.ts";

export const STORE_SPEC = {
  summary:
    "what a phone's flash holds (show, no secrets), a factory reset (reset --yes), or the first-boot identity (init)",
  synopsis: ["show --store DIR", "reset --store DIR --yes", "init --store DIR"],
  flags: {
    store: { type: "string", arg: "DIR", help: "the phone's store directory" },
    yes: { type: "boolean", help: "reset: yes, erase the sign-in, certificate and key" },
  },
} as const satisfies CommandSpec;

/**
 * Factory reset: every identity file goes (the previous generation, damaged copies and debris
 * too), then a factory-state record with new device ids is written, as on a first boot.
 */
export async function factoryResetStore(store: IdentityStore): Promise<void> {
  await store.reset();
  await store.loadOrCreate();
}

/** The newest generation that verifies, read only (inspect() neither cleans nor moves files). */
function newest(states: GenerationState[]): IdentityRecord | undefined {
  let best: Extract<GenerationState, { status: "ok" }> | undefined;
  for (const s of states) if (s.status === "ok" && (!best || s.generation > best.generation)) best = s;
  return best?.record;
}

function generationSummary(s: GenerationState): Record<string, unknown> {
  switch (s.status) {
    case "ok":
      return {
        file: s.file,
        status: s.status,
        generation: s.generation,
        signedIn: s.record.credential !== undefined,
      };
    case "corrupt":
      return { file: s.file, status: s.status, reason: s.reason };
    case "too-new":
      return { file: s.file, status: s.status, generation: s.generation, schema: s.schema };
    case "missing":
      return { file: s.file, status: s.status };
  }
}

export async function storeCommand(argv: string[], out: Output): Promise<number> {
  const [sub, ...rest] = argv;
  if (sub !== "show" && sub !== "reset" && sub !== "init")
    throw new HandsetError("usage", 'store needs "show", "reset" or "init" (handset store --help)');
  const f = parseFlags(rest, STORE_SPEC.flags);
  const dir = required(f, "store");
  const random = new CryptoRandom();
  const store = openStore(dir, random);
  if (sub === "init") {
    await checkStoreDir(dir, "store");
    const found = await store.load();
    const record = found ?? (await store.loadOrCreate());
    out.event({
      event: "store-init",
      created: found === undefined,
      store: dir,
      deviceId: record.deviceId,
      epid: record.epid,
      instanceId: record.instanceId,
      signedIn: record.credential !== undefined,
    });
    return 0;
  }
  if (sub === "reset") {
    if (f["yes"] !== true)
      throw new HandsetError(
        "usage",
        "store reset erases the sign-in, certificate and key: add --yes to confirm",
      );
    if ((await nodeFileSystem.list(dir)).length === 0)
      throw new HandsetError("store-not-found", `no store in ${dir}`);
    await factoryResetStore(store);
    out.event({ event: "store.reset", store: dir });
    return 0;
  }
  if ((await nodeFileSystem.list(dir)).length === 0)
    throw new HandsetError("store-not-found", `no store in ${dir}`);
  const states = await store.inspect();
  const record = newest(states);
  const d = diagnostics(record ? { record } : {});
  if (out.json) {
    out.event({ event: "store", store: dir, generations: states.map(generationSummary), diagnostics: d });
  } else {
    out.event({ event: "store", store: dir });
    for (const s of states) out.event({ event: "generation", ...generationSummary(s) });
    for (const [label, value] of diagnosticsRows(d))
      out.event({ event: "info", [label.toLowerCase().replace(/\W+/g, "-")]: value });
  }
  if (!record) throw new HandsetError("store-corrupt", `no identity generation in ${dir} verifies`);
  return 0;
}
