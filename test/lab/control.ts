/**
 * The lab's control endpoint: faults on demand for tests and for people driving the demo.
 * POST /registrar/{pool,sba}/{stop,start}, /registrar/{pool,sba}/fault?mode=bad-rspauth|
 * no-auth-info|none, /users/<extension>/revoke, /wan/cut (blackhole), /wan/reset (reset every
 * connection across the WAN once), /wan/restore, /wan/latency?ms=N (0–60000), /ntp/{stop,start}
 * (the NTP server stops or resumes answering). GET /status.
 */
import { createServer, type IncomingMessage, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { UserDirectory } from "./directory.ts";
import type { NtpResponder } from "./ntp-responder.ts";
import type { LabRegistrar } from "./registrar.ts";
import type { WanLink } from "./wan-link.ts";

export interface LabControl {
  url: string;
  stop(): Promise<void>;
}

export async function startControl(o: {
  pool: LabRegistrar;
  sba: LabRegistrar;
  directory: UserDirectory;
  wan?: WanLink;
  ntp?: NtpResponder;
}): Promise<LabControl> {
  const registrars: Record<string, LabRegistrar> = { pool: o.pool, sba: o.sba };
  const handle = async (req: IncomingMessage, res: ServerResponse): Promise<void> => {
    const url = new URL(req.url ?? "/", "http://lab");
    const answer = (status: number, body: unknown) => {
      res.writeHead(status, { "content-type": "application/json" });
      res.end(JSON.stringify(body));
    };
    if (req.method === "GET" && url.pathname === "/status") {
      return answer(200, {
        pool: { running: o.pool.running, address: o.pool.address, stats: o.pool.stats },
        sba: { running: o.sba.running, address: o.sba.address, stats: o.sba.stats },
        ...(o.wan ? { wan: o.wan.stats } : {}),
      });
    }
    if (req.method !== "POST") return answer(405, { error: "POST only" });
    const parts = url.pathname.split("/").filter(Boolean);
    if (parts[0] === "registrar" && parts[1] && registrars[parts[1]]) {
      const r = registrars[parts[1]]!;
      if (parts[2] === "stop") await r.stop();
      else if (parts[2] === "start") await r.start();
      else if (parts[2] === "fault") {
        const mode = url.searchParams.get("mode") ?? "none";
        r.faults = { badRspauth: mode === "bad-rspauth", omitAuthenticationInfo: mode === "no-auth-info" };
      } else return answer(404, { error: "unknown registrar action" });
      return answer(200, { ok: true, registrar: parts[1], running: r.running });
    }
    if (parts[0] === "wan" && o.wan && parts.length === 2) {
      const wan = o.wan;
      let reset: number | undefined;
      if (parts[1] === "cut") wan.cut();
      else if (parts[1] === "restore") wan.restore();
      else if (parts[1] === "reset") reset = wan.reset();
      else if (parts[1] === "latency") {
        const raw = url.searchParams.get("ms") ?? "";
        const ms = Number(raw);
        if (!/^\d+$/.test(raw) || ms > 60_000) return answer(400, { error: "ms must be an integer 0-60000" });
        wan.setLatency(ms);
      } else return answer(404, { error: "unknown wan action" });
      return answer(200, {
        ok: true,
        mode: wan.mode,
        latencyMs: wan.latencyMs,
        ...(reset === undefined ? {} : { reset }),
      });
    }
    if (parts[0] === "ntp" && o.ntp && parts.length === 2 && (parts[1] === "stop" || parts[1] === "start")) {
      o.ntp.silent = parts[1] === "stop";
      return answer(200, { ok: true, ntp: o.ntp.silent ? "silent" : "answering" });
    }
    if (parts[0] === "users" && parts[1] && parts[2] === "revoke") {
      const user = o.directory.byExtension(parts[1]);
      if (!user) return answer(404, { error: "no such user" });
      o.directory.revokeAll(user);
      return answer(200, { ok: true });
    }
    return answer(404, { error: "unknown control path" });
  };
  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      res.writeHead(500);
      res.end(String(err));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", () => resolve()));
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}
