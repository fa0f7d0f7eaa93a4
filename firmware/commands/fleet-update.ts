/**
 * The phone's half of a fleet `update` (issue 11): the phone service runs unprivileged and cannot
 * write a slot, so once it is idle it leaves a request in its own state folder
 * (`<store>/updates/request.json`), which the image's root `handset-update.path` turns into
 * `handset update --request` (firmware/commands/update.ts: streamed, every chunk checked against
 * the signed header before it is written, then the trial boot). That installer leaves
 * `result.json` beside it; the phone reports it as an `update.result` event once it is up again
 * (after the trial boot on success, at once on a failure) and removes it.
 *
 * The request carries the phone's clock as an offset from the OS clock: the installer checks an
 * https server's certificate at the phone's (SNTP-corrected) time, never at the OS's.
 */
import type { Clock } from "../core/clock.ts";
import { HandsetError } from "../core/errors.ts";
import { hexToken, type Random } from "../core/random.ts";
import { type FileSystem, joinPath } from "../store/file-system.ts";
import { jsonFile } from "../store/json-file.ts";
import {
  RESULT_FILE,
  type UpdateRequest,
  type UpdateResult,
  validateUpdateRequest,
  validateUpdateResult,
} from "../update/update-request.ts";

export const UPDATES_DIR = "updates";
export const REQUEST_FILE = "request.json";

export interface FleetUpdates {
  /** Validates the command's arguments and leaves the request for the root installer. */
  request(args: Record<string, unknown>): Promise<{ id: string; url: string; version?: string }>;
  /** The installer's last result, removed once read (undefined when there is none). */
  takeResult(): Promise<UpdateResult | undefined>;
}

export function fleetUpdates(o: {
  storeDir: string;
  fs: FileSystem;
  random: Random;
  /** The phone's clock (SNTP-corrected) and the OS's: their difference goes into the request. */
  phoneClock: Pick<Clock, "now">;
  osClock: Pick<Clock, "now">;
  /** A PEM file of roots for an https bundle server (the phone's first trustedRoots file). */
  ca?: string;
}): FleetUpdates {
  const dir = joinPath(o.storeDir, UPDATES_DIR);
  const isAnything = (v: unknown): v is unknown => v !== undefined;
  const requestFile = jsonFile<UpdateRequest>(o.fs, dir, REQUEST_FILE, {
    check: (v): v is UpdateRequest => isAnything(v),
  });
  let damaged = false;
  const resultFile = jsonFile<unknown>(o.fs, dir, RESULT_FILE, {
    check: isAnything,
    onDamaged: () => {
      damaged = true;
    },
  });
  return {
    async request(args) {
      for (const k of Object.keys(args))
        if (k !== "url" && k !== "version")
          throw new HandsetError("bad-request", `update takes url and version, not "${k.slice(0, 32)}"`);
      const phoneNow = o.phoneClock.now();
      const request = validateUpdateRequest({
        format: 1,
        id: hexToken(o.random, 8),
        url: args["url"],
        requestedAt: phoneNow,
        clockOffsetMs: Math.round(phoneNow - o.osClock.now()),
        ...(args["version"] !== undefined ? { version: args["version"] } : {}),
        ...(o.ca ? { ca: o.ca } : {}),
      });
      // One request at a time: a second one before the installer took the first replaces it.
      await requestFile.save(request);
      return { id: request.id, url: request.url, ...(request.version ? { version: request.version } : {}) };
    },
    async takeResult() {
      damaged = false;
      const raw = await resultFile.load();
      if (raw === undefined && !damaged) return undefined;
      // Read once: a result (or a file that is none) is never reported again.
      await resultFile.remove();
      if (raw === undefined) return undefined;
      try {
        return validateUpdateResult(raw);
      } catch {
        return undefined; // not the installer's: nothing to report
      }
    },
  };
}
