/**
 * The missed-calls list in flash, so a restart (power cut, update, fleet reboot) does not lose
 * who called while nobody was at the desk: one small JSON document beside the identity record
 * (store/json-file.ts: atomic, 0600), bounded in entries and in the length of every text, and
 * read back tolerantly — a damaged or foreign file is no list, never a stopped phone.
 *
 * It holds numbers, names as the network announced them and times: no secrets, but the user's,
 * so sign-out and factory reset empty it (phone.ts).
 */
import type { FileSystem } from "../store/file-system.ts";
import { jsonFile } from "../store/json-file.ts";
import type { MissedCall } from "./calls.ts";

export const MISSED_FILE = "missed-calls.json";
/** Entries kept at most, whatever the file says (the desk keeps 20 by default). */
export const MISSED_KEPT_MAX = 50;
/** A name, number or URI longer than this is not one the phone wrote. */
const TEXT_MAX = 256;

export interface MissedRecord {
  v: 1;
  /** Newest first. */
  missed: MissedCall[];
  /** How many of them the user has not looked at yet (the idle screen's "N missed"). */
  unseen: number;
}

/** Where the phone keeps the list; PhoneServices.missedCalls. */
export interface MissedCallStore {
  load(): Promise<MissedRecord | undefined>;
  save(r: MissedRecord): Promise<void>;
}

const text = (v: unknown): v is string => typeof v === "string" && v.length <= TEXT_MAX;

function isMissedCall(v: unknown): v is MissedCall {
  if (typeof v !== "object" || v === null) return false;
  const m = v as Record<string, unknown>;
  return (
    text(m.name) &&
    text(m.number) &&
    text(m.uri) &&
    typeof m.at === "number" &&
    Number.isFinite(m.at) &&
    typeof m.busy === "boolean"
  );
}

export function isMissedRecord(v: unknown): v is MissedRecord {
  if (typeof v !== "object" || v === null) return false;
  const r = v as Record<string, unknown>;
  return (
    r.v === 1 &&
    Array.isArray(r.missed) &&
    r.missed.length <= MISSED_KEPT_MAX &&
    r.missed.every(isMissedCall) &&
    typeof r.unseen === "number" &&
    Number.isInteger(r.unseen) &&
    r.unseen >= 0
  );
}

/** Only the five fields of each entry go to flash (a caller's object may carry more). */
function bounded(r: MissedRecord, max: number): MissedRecord {
  const missed = r.missed
    .slice(0, Math.min(max, MISSED_KEPT_MAX))
    .map(({ name, number, uri, at, busy }) => ({ name, number, uri, at, busy }));
  return { v: 1, missed, unseen: Math.min(Math.max(0, Math.floor(r.unseen)), missed.length) };
}

/** The list as a file in the store directory (the composition root passes the board's flash). */
export function missedCallFile(
  fs: FileSystem,
  dir: string,
  o: { max?: number; onDamaged?: (reason: string) => void } = {},
): MissedCallStore {
  const max = o.max ?? MISSED_KEPT_MAX;
  const file = jsonFile<MissedRecord>(fs, dir, MISSED_FILE, {
    check: isMissedRecord,
    ...(o.onDamaged ? { onDamaged: o.onDamaged } : {}),
  });
  return {
    async load() {
      const r = await file.load();
      return r ? bounded(r, max) : undefined;
    },
    save: (r) => file.save(bounded(r, max)),
  };
}
