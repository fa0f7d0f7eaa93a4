/**
 * `handset lab` and (until the phone exists) `handset demo`. The lab lives under test/lab/: it is
 * a fixture and the demo's embedded default, never part of the image, so it is loaded lazily
 * and its absence is reported plainly.
 */
import { HandsetError } from "../core/errors.ts";
import { parseFlags } from "./args.ts";
import type { Output } from "./output.ts";

type LabModule = typeof import("../../test/lab/lab.ts");

export async function loadLab(): Promise<LabModule> {
  try {
    return await import("../../test/lab/lab.ts");
  } catch (err) {
    throw new HandsetError("lab-missing", "The lab pool is not part of this build (it lives in test/lab/)", {
      cause: err,
    });
  }
}

function waitForSignal(): Promise<void> {
  return new Promise((resolve) => {
    process.once("SIGTERM", () => resolve());
    process.once("SIGINT", () => resolve());
  });
}

export async function labCommand(argv: string[], out: Output): Promise<number> {
  const f = parseFlags(argv, {
    site: { type: "string" },
    dir: { type: "string" },
    redirect: { type: "boolean" },
  });
  const site = (f["site"] ?? "branch") as string;
  if (site !== "branch" && site !== "hq") throw new HandsetError("usage", "--site must be branch or hq");
  const { startLab } = await loadLab();
  const lab = await startLab({
    site,
    ...(typeof f["dir"] === "string" ? { dir: f["dir"] } : {}),
    redirect: f["redirect"] === true,
  });
  out.event({ ...lab.ready });
  await waitForSignal();
  await lab.stop();
  return 0;
}
