/**
 * Headless Chromium for the page tests: Debian's /usr/bin/chromium driven by playwright-core,
 * with the flags that keep it off this machine's closed network. Without Chromium a test skips
 * with a plain reason, except under CI=true, where the machine is supposed to have it.
 */
import { existsSync } from "node:fs";
import { type Browser, chromium } from "playwright-core";

export const CHROMIUM = "/usr/bin/chromium";
export const CHROMIUM_MISSING = "chromium not installed (apt-get install chromium)";
export const hasChromium = existsSync(CHROMIUM);

export function needChromium(ctx: { skip: (note?: string) => never }): void {
  if (hasChromium) return;
  if (process.env.CI === "true") throw new Error(CHROMIUM_MISSING);
  ctx.skip(CHROMIUM_MISSING);
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
}
