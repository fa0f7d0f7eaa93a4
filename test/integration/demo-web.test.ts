/**
 * The real phone on the simulated board, as a person uses the demo's web page: the lab pool, the
 * firmware (discovery, clock, sign-in, registration) and `--web`'s page in headless Chromium.
 * Click 4711#1234# on the page's keypad; "Registered" appears on the page's display.
 * Screenshot: test-output/demo/phone-registered.png.
 */
import { mkdirSync } from "node:fs";
import { mkdtemp } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Browser } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSimBoard, type SimBoard, startWebView, type WebView } from "../../board/sim/index.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { type RunningPhone, startPhone } from "../../firmware/main.ts";
import type { PhoneEvent } from "../../firmware/phone/phone.ts";
import { SystemClock } from "../../firmware/platform/system-clock.ts";
import { type Lab, phoneNetwork, startLab } from "../lab/lab.ts";
import { launchChromium, needChromium } from "../support/chromium.ts";

const OUT_DIR = resolve(import.meta.dirname, "../../test-output/demo");

let lab: Lab;
let board: SimBoard;
let view: WebView;
let phone: RunningPhone;
let browser: Browser | undefined;
const events: PhoneEvent[] = [];

beforeAll(async () => {
  lab = await startLab({ site: "branch" });
  board = createSimBoard({ clock: new SystemClock() });
  view = await startWebView(board, { port: 0 });
  phone = await startPhone({
    config: {
      storeDir: await mkdtemp(join(tmpdir(), "handset-demo-web-")),
      trustedRoots: [lab.ca.cert],
      network: phoneNetwork(lab.ready),
    },
    board,
    logger: silentLogger,
    onEvent: (e) => events.push(e),
  });
});

afterAll(async () => {
  await browser?.close();
  await phone?.stop();
  await view?.stop();
  await lab?.stop();
});

describe("the demo's web page drives the real phone", () => {
  it("click 4711#1234# → Registered on the page's display", async (ctx) => {
    needChromium(ctx);
    browser = await launchChromium();
    const page = await browser.newPage({ viewport: { width: 900, height: 720 } });
    await page.goto(view.url);
    await expect
      .poll(() => page.getByTestId("line-1").textContent(), { timeout: 15_000 })
      .toContain("Enter extension");
    for (const key of "4711#1234#") await page.locator(`button[data-key="${key}"]`).click();
    await expect
      .poll(() => page.getByTestId("line-2").textContent(), { timeout: 20_000 })
      .toBe("Registered".padEnd(20));
    expect((await page.getByTestId("line-0").textContent())?.trim()).toBe("4711");
    const states = events.filter((e) => e.event === "state").map((e) => e.state);
    expect(states).toContain("signing-in");
    expect(states.at(-1)).toBe("registered");
    mkdirSync(OUT_DIR, { recursive: true });
    await page.screenshot({ path: join(OUT_DIR, "phone-registered.png"), fullPage: true });
  });
});
