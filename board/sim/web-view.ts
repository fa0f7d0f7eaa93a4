/**
 * The simulated phone as a web page. One self-contained page (inline CSS and script, no external
 * assets) draws the desk phone; the display follows the board over server-sent events and key
 * clicks come back as JSON POSTs.
 *
 *   GET  /        the page
 *   GET  /events  SSE: `event: board` with the full SimBoardSnapshot JSON, on connect and on
 *                 every change (frame, backlight, indicator, hook)
 *   GET  /state   the same snapshot, once, as JSON
 *   POST /key     {"key": "<hal key>", "kind"?: "press" | "long-press"} → 204; 400 if not a key
 *   POST /hook    {"offHook": boolean} → 204
 *
 * Listens on 127.0.0.1 unless told otherwise. POSTs must be `application/json` (so a foreign page
 * cannot send them without a CORS preflight, which this server never grants) and are capped at
 * 1 KiB; the Host header must name the address we listen on (no DNS rebinding).
 */

import { randomBytes } from "node:crypto";
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { HandsetError } from "../../firmware/core/errors.ts";
import { isKey } from "../../firmware/hal/keys.ts";
import type { SimBoard } from "./sim-board.ts";

export interface WebViewOptions {
  /** 0 picks an ephemeral port. */
  port: number;
  host?: string;
  /** SSE keep-alive comment interval; default 15 s. */
  keepAliveMs?: number;
}

export interface WebView {
  url: string;
  stop(): Promise<void>;
}

export const MAX_BODY_BYTES = 1024;

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

function readJson(req: IncomingMessage): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const type = (req.headers["content-type"] ?? "").split(";")[0]!.trim().toLowerCase();
    if (type !== "application/json") {
      reject(new HttpFailure(415, "content-type must be application/json"));
      req.resume();
      return;
    }
    const declared = Number(req.headers["content-length"] ?? "0");
    if (declared > MAX_BODY_BYTES) {
      reject(new HttpFailure(413, `body larger than ${MAX_BODY_BYTES} bytes`));
      req.resume();
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0;
    let failed = false;
    req.on("data", (chunk: Buffer) => {
      if (failed) return;
      size += chunk.length;
      if (size > MAX_BODY_BYTES) {
        failed = true;
        reject(new HttpFailure(413, `body larger than ${MAX_BODY_BYTES} bytes`));
        return;
      }
      chunks.push(chunk);
    });
    req.on("end", () => {
      if (failed) return;
      try {
        resolve(JSON.parse(Buffer.concat(chunks).toString("utf8")));
      } catch {
        reject(new HttpFailure(400, "body is not JSON"));
      }
    });
    req.on("error", reject);
  });
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

export async function startWebView(board: SimBoard, o: WebViewOptions): Promise<WebView> {
  const host = o.host ?? "127.0.0.1";
  const keepAliveMs = o.keepAliveMs ?? 15_000;
  const streams = new Set<ServerResponse>();
  /** Host headers we answer; filled once the port is known. Empty = any (wildcard bind). */
  const allowedHosts = new Set<string>();
  let anyHost = false;

  const snapshotJson = () => JSON.stringify(board.snapshot());
  const offChange = board.changes.on((change) => {
    if (change.type === "key") return;
    const data = `event: board\ndata: ${snapshotJson()}\n\n`;
    for (const res of streams) res.write(data);
  });
  const keepAlive = setInterval(() => {
    for (const res of streams) res.write(": keep-alive\n\n");
  }, keepAliveMs);
  keepAlive.unref();

  const send = (res: ServerResponse, status: number, body: string, type = "text/plain; charset=utf-8") => {
    res.writeHead(status, {
      "content-type": type,
      "content-length": Buffer.byteLength(body),
      "cache-control": "no-store",
      "x-content-type-options": "nosniff",
    });
    res.end(body);
  };

  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://sim.invalid");
    if (!anyHost && !allowedHosts.has((req.headers.host ?? "").toLowerCase())) {
      throw new HttpFailure(421, "unexpected Host header");
    }
    const route = `${req.method} ${url.pathname}`;
    switch (route) {
      case "GET /": {
        const nonce = randomBytes(16).toString("base64");
        res.setHeader(
          "content-security-policy",
          `default-src 'none'; style-src 'nonce-${nonce}'; script-src 'nonce-${nonce}'; connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'`,
        );
        send(res, 200, renderPage(board, nonce), "text/html; charset=utf-8");
        return;
      }
      case "GET /state":
        send(res, 200, snapshotJson(), "application/json");
        return;
      case "GET /events": {
        res.writeHead(200, {
          "content-type": "text/event-stream; charset=utf-8",
          "cache-control": "no-store",
          connection: "keep-alive",
          "x-content-type-options": "nosniff",
        });
        res.write(`retry: 1000\nevent: board\ndata: ${snapshotJson()}\n\n`);
        streams.add(res);
        req.on("close", () => streams.delete(res));
        return;
      }
      case "POST /key": {
        const body = await readJson(req);
        if (!isRecord(body) || typeof body.key !== "string" || !isKey(body.key)) {
          throw new HttpFailure(
            400,
            'expected {"key": "<one of 0-9 * # soft1-4 up down left right ok back menu>"}',
          );
        }
        const kind = body.kind ?? "press";
        if (kind !== "press" && kind !== "long-press") {
          throw new HttpFailure(400, 'kind must be "press" or "long-press"');
        }
        if (kind === "press") board.press(body.key);
        else board.longPress(body.key);
        res.writeHead(204, { "cache-control": "no-store" }).end();
        return;
      }
      case "POST /hook": {
        const body = await readJson(req);
        if (!isRecord(body) || typeof body.offHook !== "boolean") {
          throw new HttpFailure(400, 'expected {"offHook": true|false}');
        }
        board.setHook(body.offHook);
        res.writeHead(204, { "cache-control": "no-store" }).end();
        return;
      }
      default:
        if (["/", "/state", "/events", "/key", "/hook"].includes(url.pathname)) {
          res.setHeader("allow", url.pathname === "/key" || url.pathname === "/hook" ? "POST" : "GET");
          throw new HttpFailure(405, "method not allowed");
        }
        throw new HttpFailure(404, "not found");
    }
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      const status = err instanceof HttpFailure ? err.status : 500;
      const message = err instanceof HttpFailure ? err.message : "internal error";
      if (status === 413) res.setHeader("connection", "close");
      send(res, status, `${message}\n`);
    });
  });
  server.headersTimeout = 10_000;
  server.requestTimeout = 10_000;

  await new Promise<void>((resolve, reject) => {
    server.once("error", (err) =>
      reject(
        new HandsetError(
          "web-view-listen",
          `sim web view cannot listen on ${host}:${o.port}: ${err.message}`,
        ),
      ),
    );
    server.listen(o.port, host, () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  const hostPart = host.includes(":") ? `[${host}]` : host;
  for (const h of [hostPart, "localhost", "127.0.0.1", "[::1]"])
    allowedHosts.add(`${h.toLowerCase()}:${port}`);
  anyHost = host === "0.0.0.0" || host === "::";

  let stopped = false;
  return {
    url: `http://${hostPart}:${port}/`,
    async stop() {
      if (stopped) return;
      stopped = true;
      offChange();
      clearInterval(keepAlive);
      for (const res of streams) res.end();
      streams.clear();
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
    },
  };
}

const escapeHtml = (s: string) =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]!);

const KEYPAD: ReadonlyArray<[string, string]> = [
  ["1", ""],
  ["2", "ABC"],
  ["3", "DEF"],
  ["4", "GHI"],
  ["5", "JKL"],
  ["6", "MNO"],
  ["7", "PQRS"],
  ["8", "TUV"],
  ["9", "WXYZ"],
  ["*", ""],
  ["0", "+"],
  ["#", ""],
];

function renderPage(board: SimBoard, nonce: string): string {
  const s = board.snapshot();
  const lines = s.lines
    .map((line, n) => {
      const cells = Array.from(
        { length: s.cols },
        (_, c) => `<span class="cell">${escapeHtml(line[c] ?? " ")}</span>`,
      );
      return `<div class="line" data-testid="line-${n}" id="line-${n}">${cells.join("")}</div>`;
    })
    .join("");
  const keypad = KEYPAD.map(
    ([k, letters]) =>
      `<button type="button" class="key digit" data-key="${escapeHtml(k)}" aria-label="${k === "*" ? "star" : k === "#" ? "hash" : k}"><span class="main">${escapeHtml(k)}</span><span class="sub">${letters}</span></button>`,
  ).join("");
  const softkeys = [1, 2, 3, 4]
    .map(
      (n) =>
        `<button type="button" class="key soft" data-key="soft${n}" aria-label="softkey ${n}"><span class="bar"></span></button>`,
    )
    .join("");
  const nav = (key: string, label: string, text: string) =>
    `<button type="button" class="key nav nav-${key}" data-key="${key}" aria-label="${label}">${text}</button>`;
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>handset — simulated desk phone</title>
<style nonce="${nonce}">
  :root { --lcd-on: #9dff6a; --lcd-bg: #0d1f0d; --body: #2b2e33; --edge: #1a1c1f; }
  * { box-sizing: border-box; }
  body { margin: 0; min-height: 100vh; display: grid; place-items: center; background: #c9ccd1;
    font-family: system-ui, "DejaVu Sans", sans-serif; color: #e8e8e8; }
  .phone { display: grid; grid-template-columns: 150px auto; gap: 22px; padding: 26px 30px 30px;
    background: linear-gradient(160deg, #3a3e44, var(--body) 40%, #222428); border-radius: 28px 28px 40px 40px;
    box-shadow: 0 18px 40px rgba(0,0,0,.45), inset 0 1px 0 rgba(255,255,255,.12); border: 2px solid var(--edge); }
  .handset { grid-row: 1 / span 3; display: flex; flex-direction: column; align-items: center; gap: 12px; }
  .receiver { width: 120px; height: 330px; border-radius: 60px; background: linear-gradient(90deg, #1c1e21, #33363b 50%, #1c1e21);
    box-shadow: inset 0 0 0 2px #111, 0 6px 12px rgba(0,0,0,.5); display: flex; flex-direction: column;
    justify-content: space-between; align-items: center; padding: 26px 0; transition: transform .25s, opacity .25s; }
  .receiver .grille { width: 60px; height: 40px; border-radius: 20px;
    background: repeating-linear-gradient(90deg, #0b0c0d 0 3px, #2a2d31 3px 6px); }
  .offhook .receiver { transform: translate(-14px, -16px) rotate(-12deg); opacity: .55; }
  .top { display: flex; flex-direction: column; gap: 10px; }
  .brand { display: flex; justify-content: space-between; align-items: center; font-size: 12px; letter-spacing: .2em;
    color: #aab; text-transform: uppercase; }
  .leds { display: flex; gap: 16px; align-items: center; }
  .led { display: inline-flex; align-items: center; gap: 6px; font-size: 11px; letter-spacing: .05em; text-transform: none; }
  .led .dot { width: 12px; height: 12px; border-radius: 50%; background: #3b3f44; box-shadow: inset 0 1px 2px #000; }
  .led.mwi[data-state="on"] .dot, .led.mwi[data-state="blink"] .dot { background: #ff3b2f; box-shadow: 0 0 8px #ff3b2f; }
  .led.status[data-state="on"] .dot, .led.status[data-state="blink"] .dot, .led.status[data-state="wink"] .dot { background: #38e05a; box-shadow: 0 0 8px #38e05a; }
  .led.mwi[data-state="wink"] .dot { background: #ff3b2f; box-shadow: 0 0 8px #ff3b2f; }
  .led[data-state="blink"] .dot { animation: blink 1s steps(1) infinite; }
  .led[data-state="wink"] .dot { animation: wink 2s steps(1) infinite; }
  @keyframes blink { 50% { opacity: .15; } }
  @keyframes wink { 87.5% { opacity: .15; } }
  .bezel { display: flex; justify-content: center; padding: 14px; border-radius: 10px; background: #111315; box-shadow: inset 0 2px 6px #000; }
  #display { display: inline-flex; flex-direction: column; padding: 10px 12px; border-radius: 4px; background: var(--lcd-bg);
    font-family: "DejaVu Sans Mono", "Liberation Mono", Consolas, monospace; font-size: 22px; line-height: 1.25;
    color: var(--lcd-on); text-shadow: 0 0 6px rgba(157,255,106,.55); box-shadow: inset 0 0 18px rgba(0,0,0,.8); }
  #display.dark { color: #3f7a2c; text-shadow: none; background: #081208; }
  .line { display: flex; white-space: pre; }
  .cell { display: inline-block; width: 1ch; text-align: center; background: rgba(157,255,106,.05); margin: 0 1px; }
  .softkeys { display: grid; grid-template-columns: repeat(4, 1fr); gap: 10px; }
  .key { font: inherit; color: inherit; cursor: pointer; border: 1px solid #111; border-radius: 10px;
    background: linear-gradient(#50545b, #383b40); box-shadow: 0 3px 0 #15171a, inset 0 1px 0 rgba(255,255,255,.15); }
  .key:active { transform: translateY(2px); box-shadow: 0 1px 0 #15171a; }
  .key:focus-visible { outline: 3px solid #7fb3ff; outline-offset: 2px; }
  .soft { height: 26px; } .soft .bar { display: block; height: 4px; margin: 0 18px; background: #9aa; border-radius: 2px; }
  .lower { display: grid; grid-template-columns: auto auto; gap: 30px; align-items: start; }
  .keypad { display: grid; grid-template-columns: repeat(3, 64px); gap: 10px; }
  .digit { height: 52px; display: flex; flex-direction: column; align-items: center; justify-content: center; }
  .digit .main { font-size: 22px; font-weight: 600; } .digit .sub { font-size: 9px; letter-spacing: .15em; color: #aab; min-height: 11px; }
  .navpad { display: grid; grid-template-columns: repeat(3, 48px); grid-template-rows: repeat(3, 48px); gap: 6px;
    padding: 10px; border-radius: 50%; background: #1f2125; }
  .nav { font-size: 18px; } .nav-up { grid-area: 1 / 2; } .nav-left { grid-area: 2 / 1; } .nav-ok { grid-area: 2 / 2; border-radius: 50%; font-size: 13px; }
  .nav-right { grid-area: 2 / 3; } .nav-down { grid-area: 3 / 2; }
  .side { display: flex; flex-direction: column; gap: 12px; align-items: stretch; }
  .fn { display: grid; grid-template-columns: 1fr 1fr; gap: 8px; } .fn .key { height: 34px; font-size: 13px; }
  #hook { height: 44px; font-size: 14px; font-weight: 600; background: linear-gradient(#2f8f46, #226b34); }
  .offhook #hook { background: linear-gradient(#c0392b, #8e2a20); }
  #link { font-size: 11px; color: #aab; text-align: right; } #link.down { color: #ff8a7a; }
</style>
</head>
<body>
<main class="phone${s.offHook ? " offhook" : ""}" id="phone" aria-label="Simulated desk phone">
  <div class="handset" aria-hidden="true"><div class="receiver"><div class="grille"></div><div class="grille"></div></div></div>
  <div class="top">
    <div class="brand"><span>handset</span>
      <div class="leds">
        <span class="led mwi" id="led-messageWaiting" data-testid="led-messageWaiting" data-state="${s.indicators.messageWaiting}" role="status" aria-label="message waiting light: ${s.indicators.messageWaiting}"><span class="dot"></span>msg</span>
        <span class="led status" id="led-status" data-testid="led-status" data-state="${s.indicators.status}" role="status" aria-label="status light: ${s.indicators.status}"><span class="dot"></span>status</span>
      </div>
    </div>
    <div class="bezel">
      <div id="display" data-testid="display" role="region" aria-label="display" aria-live="polite" data-cols="${s.cols}" data-rows="${s.rows}" class="${s.backlight ? "" : "dark"}">${lines}</div>
    </div>
    <div class="softkeys" role="group" aria-label="softkeys">${softkeys}</div>
  </div>
  <div class="lower">
    <div class="keypad" role="group" aria-label="keypad">${keypad}</div>
    <div class="side">
      <div class="navpad" role="group" aria-label="navigation">
        ${nav("up", "up", "▲")}${nav("left", "left", "◀")}${nav("ok", "ok", "OK")}${nav("right", "right", "▶")}${nav("down", "down", "▼")}
      </div>
      <div class="fn">${nav("back", "back", "Back")}${nav("menu", "menu", "Menu")}</div>
      <button type="button" class="key" id="hook" data-testid="hook" aria-pressed="${s.offHook}" aria-label="${s.offHook ? "hang up" : "lift handset"}">${s.offHook ? "Hang up" : "Lift handset"}</button>
      <div id="link" role="status" aria-label="connection">connecting…</div>
    </div>
  </div>
</main>
<script nonce="${nonce}">
(() => {
  "use strict";
  const phone = document.getElementById("phone");
  const display = document.getElementById("display");
  const hookButton = document.getElementById("hook");
  const link = document.getElementById("link");
  let offHook = ${s.offHook ? "true" : "false"};
  const post = (path, body) =>
    fetch(path, { method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(body) });
  const render = (s) => {
    display.classList.toggle("dark", !s.backlight);
    s.lines.forEach((text, n) => {
      const line = document.getElementById("line-" + n);
      if (!line) return;
      const cells = line.children;
      for (let c = 0; c < cells.length; c++) {
        const ch = text[c] === undefined ? " " : text[c];
        if (cells[c].textContent !== ch) cells[c].textContent = ch;
      }
    });
    for (const [name, state] of Object.entries(s.indicators)) {
      const led = document.getElementById("led-" + name);
      if (!led) continue;
      led.dataset.state = state;
      led.setAttribute("aria-label", (name === "status" ? "status" : "message waiting") + " light: " + state);
    }
    offHook = s.offHook;
    phone.classList.toggle("offhook", offHook);
    hookButton.setAttribute("aria-pressed", String(offHook));
    hookButton.setAttribute("aria-label", offHook ? "hang up" : "lift handset");
    hookButton.textContent = offHook ? "Hang up" : "Lift handset";
  };
  const events = new EventSource("/events");
  events.addEventListener("board", (e) => render(JSON.parse(e.data)));
  events.addEventListener("open", () => { link.textContent = "live"; link.classList.remove("down"); });
  events.addEventListener("error", () => { link.textContent = "reconnecting…"; link.classList.add("down"); });
  let downAt = 0;
  document.querySelectorAll("button[data-key]").forEach((b) => {
    b.addEventListener("pointerdown", () => { downAt = Date.now(); });
    b.addEventListener("click", () => {
      const held = downAt && Date.now() - downAt > 700;
      downAt = 0;
      post("/key", { key: b.dataset.key, kind: held ? "long-press" : "press" });
    });
  });
  hookButton.addEventListener("click", () => post("/hook", { offHook: !offHook }));
  const keyboard = { Enter: "ok", Backspace: "back", Escape: "back", ArrowUp: "up", ArrowDown: "down",
    ArrowLeft: "left", ArrowRight: "right", F1: "soft1", F2: "soft2", F3: "soft3", F4: "soft4", m: "menu" };
  document.addEventListener("keydown", (e) => {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    if (e.key === "h") { post("/hook", { offHook: !offHook }); return; }
    const key = /^[0-9*#]$/.test(e.key) ? e.key : keyboard[e.key];
    if (!key) return;
    if (document.activeElement && document.activeElement.tagName === "BUTTON" && e.key === "Enter") return;
    e.preventDefault();
    if (!e.repeat) post("/key", { key, kind: "press" });
  });
})();
</script>
</body>
</html>
`;
}
