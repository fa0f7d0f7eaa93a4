/**
 * The simulated phone's web page in headless Chromium (playwright-core + Debian's chromium): a tiny
 * test "phone" echoes typed digits on line 0 and shows "Registered" on line 1 once 4711#1234# is
 * typed; the test clicks those keys on the page and waits for the SSE update. Screenshot:
 * test-output/board-sim/web-view.png.
 */
import { existsSync, mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import type { Browser, Page } from "playwright-core";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSimBoard, type SimBoard, startWebView, type WebView } from "../../board/sim/index.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { hasChromium, launchChromium, needChromium } from "../support/chromium.ts";

const OUT_DIR = resolve(import.meta.dirname, "../../test-output/board-sim");

/** Stand-in for firmware/phone: just enough screen logic to see keys go round trip. */
function wireFakePhone(board: SimBoard): void {
  let typed = "";
  const render = () =>
    board.display.show({
      lines: [
        typed.slice(-board.cols),
        typed === "4711#1234#" ? "Registered" : "Sign in",
        "",
        "soft1  soft2",
      ],
    });
  board.keys.onKey((e) => {
    if (/^[0-9*#]$/.test(e.key)) typed += e.key;
    if (e.key === "back") typed = typed.slice(0, -1);
    if (typed === "4711#1234#") {
      board.indicators.status.set("on");
      board.indicators.messageWaiting.set("blink");
    }
    render();
  });
  render();
}

describe("web view in headless chromium", () => {
  let browser: Browser | undefined;
  let page: Page;
  let board: SimBoard;
  let view: WebView;

  beforeAll(async () => {
    board = createSimBoard({ clock: new ManualClock() });
    wireFakePhone(board);
    view = await startWebView(board, { port: 0 });
    if (!hasChromium) return;
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 900, height: 720 } });
  });

  afterAll(async () => {
    await browser?.close();
    await view?.stop();
  });

  it("shows the display as rows × cols cells and follows the board", async (ctx) => {
    needChromium(ctx);
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      if (m.type() === "error") errors.push(m.text());
    });
    await page.goto(view.url);
    await expect.poll(() => page.locator("#link").textContent()).toBe("live");
    expect(await page.locator('[data-testid="display"] .line').count()).toBe(4);
    expect(await page.locator('[data-testid="line-0"] .cell').count()).toBe(20);
    expect(await page.getByTestId("line-1").textContent()).toBe("Sign in".padEnd(20));
    expect(await page.getByRole("button", { name: "softkey 1" }).count()).toBe(1);
    expect(await page.getByRole("button", { name: "lift handset" }).count()).toBe(1);
    expect(errors).toEqual([]);
  });

  it("clicks 4711#1234# on the keypad and sees Registered arrive over SSE", async (ctx) => {
    needChromium(ctx);
    for (const key of "4711#1234#") await page.locator(`button[data-key="${key}"]`).click();
    await expect.poll(() => page.getByTestId("line-1").textContent()).toBe("Registered".padEnd(20));
    expect((await page.getByTestId("line-0").textContent())?.trimEnd()).toBe("4711#1234#");
    expect(await page.getByTestId("led-status").getAttribute("data-state")).toBe("on");

    await page.getByRole("button", { name: "lift handset" }).click();
    await expect.poll(() => board.hook.offHook).toBe(true);
    await expect.poll(() => page.getByTestId("hook").getAttribute("aria-pressed")).toBe("true");

    mkdirSync(OUT_DIR, { recursive: true });
    await page.screenshot({ path: join(OUT_DIR, "web-view.png"), fullPage: true });
    expect(existsSync(join(OUT_DIR, "web-view.png"))).toBe(true);
  });
});
