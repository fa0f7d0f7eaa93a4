import { request } from "node:http";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createSimBoard, type SimBoard, startWebView, type WebView } from "../../board/sim/index.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import type { KeyEvent } from "../../firmware/hal/keys.ts";

interface Reply {
  status: number;
  body: string;
  headers: Record<string, string | string[] | undefined>;
}

function call(
  url: string,
  method: string,
  path: string,
  body?: string,
  headers: Record<string, string> = { "content-type": "application/json" },
): Promise<Reply> {
  return new Promise((resolve, reject) => {
    const req = request(new URL(path, url), { method, headers }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (d: string) => {
        text += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body: text, headers: res.headers }));
    });
    req.on("error", reject);
    req.end(body);
  });
}

describe("web view over HTTP", () => {
  let board: SimBoard;
  let view: WebView;
  const keys: KeyEvent[] = [];

  beforeAll(async () => {
    board = createSimBoard({ clock: new ManualClock() });
    board.keys.onKey((e) => keys.push(e));
    view = await startWebView(board, { port: 0 });
  });
  afterAll(async () => {
    await view.stop();
  });

  it("listens on 127.0.0.1 and serves one self-contained page", async () => {
    expect(view.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/$/);
    const page = await call(view.url, "GET", "/");
    expect(page.status).toBe(200);
    expect(page.headers["content-type"]).toMatch(/text\/html/);
    expect(page.headers["content-security-policy"]).toContain("default-src 'none'");
    expect(page.body).toContain('data-testid="display"');
    expect(page.body).toContain('data-testid="line-3"');
    expect(page.body).toContain('data-key="soft4"');
    expect(page.body).not.toMatch(/(src|href)=["']?(https?:)?\/\//);
  });

  it("accepts POST /key with a hal key and rejects anything else", async () => {
    expect((await call(view.url, "POST", "/key", JSON.stringify({ key: "7" }))).status).toBe(204);
    expect(
      (await call(view.url, "POST", "/key", JSON.stringify({ key: "ok", kind: "long-press" }))).status,
    ).toBe(204);
    expect(keys).toEqual([
      { key: "7", kind: "press" },
      { key: "ok", kind: "long-press" },
    ]);
    const bad = [
      JSON.stringify({ key: "soft9" }),
      JSON.stringify({ key: 7 }),
      JSON.stringify({ key: "7", kind: "tap" }),
      JSON.stringify(["7"]),
      "null",
      "{not json",
    ];
    for (const body of bad) expect((await call(view.url, "POST", "/key", body)).status, body).toBe(400);
    expect((await call(view.url, "POST", "/key", JSON.stringify({ key: "x".repeat(5000) }))).status).toBe(
      413,
    );
    expect(
      (await call(view.url, "POST", "/key", '{"key":"1"}', { "content-type": "text/plain" })).status,
    ).toBe(415);
    expect((await call(view.url, "GET", "/key")).status).toBe(405);
    expect((await call(view.url, "GET", "/nope")).status).toBe(404);
    expect(
      (
        await call(view.url, "POST", "/key", '{"key":"1"}', {
          "content-type": "application/json",
          host: "evil.test",
        })
      ).status,
    ).toBe(421);
    expect(keys).toHaveLength(2);
  });

  it("sets the hook and streams the full snapshot over SSE, on connect and on change", async () => {
    expect((await call(view.url, "POST", "/hook", JSON.stringify({ offHook: true }))).status).toBe(204);
    expect(board.hook.offHook).toBe(true);
    expect((await call(view.url, "POST", "/hook", JSON.stringify({ offHook: "yes" }))).status).toBe(400);

    const messages: unknown[] = [];
    const done = new Promise<void>((resolve, reject) => {
      const req = request(new URL("/events", view.url), (res) => {
        expect(res.headers["content-type"]).toMatch(/text\/event-stream/);
        let buf = "";
        res.setEncoding("utf8");
        res.on("data", (d: string) => {
          buf += d;
          for (let i = buf.indexOf("\n\n"); i >= 0; i = buf.indexOf("\n\n")) {
            const block = buf.slice(0, i);
            buf = buf.slice(i + 2);
            const data = block.split("\n").find((l) => l.startsWith("data: "));
            if (data) messages.push(JSON.parse(data.slice(6)));
            if (messages.length === 1) board.display.show({ lines: ["Registered"] });
            if (messages.length === 2) {
              req.destroy();
              resolve();
            }
          }
        });
      });
      req.on("error", reject);
      req.end();
    });
    await done;
    expect(messages[0]).toMatchObject({ cols: 20, rows: 4, offHook: true, lines: ["", "", "", ""] });
    expect(messages[1]).toMatchObject({ lines: ["Registered", "", "", ""] });
  });
});
