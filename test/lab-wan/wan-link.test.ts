/**
 * The WAN link between the branch and the centre (issue 6, lab part): TLS end to end through it,
 * and each fault driven through the control endpoint as a test or a person would.
 */
import { readFile } from "node:fs/promises";
import * as https from "node:https";
import * as net from "node:net";
import { performance } from "node:perf_hooks";
import * as tls from "node:tls";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Lab, startLab } from "../lab/lab.ts";
import { WanLink, type WanLinkStats } from "../lab/wan-link.ts";

let lab: Lab;
let ca: string;
const open: net.Socket[] = [];

beforeAll(async () => {
  lab = await startLab();
  ca = await readFile(lab.ready.ca, "utf8");
});

afterAll(async () => {
  await lab?.stop();
});

afterEach(async () => {
  for (const s of open.splice(0)) s.destroy();
  await control("/wan/restore");
});

/** The control endpoint's JSON answer (a /wan/* result, or /status with its `wan` part). */
type ControlBody = { wan: WanLinkStats } & Record<string, unknown>;

async function control(path: string, method = "POST"): Promise<{ status: number; body: ControlBody }> {
  const res = await fetch(`${lab.ready.control}${path}`, { method });
  return { status: res.status, body: (await res.json()) as ControlBody };
}

function split(hostPort: string): { host: string; port: number } {
  const i = hostPort.lastIndexOf(":");
  return { host: hostPort.slice(0, i), port: Number(hostPort.slice(i + 1)) };
}

/** A TLS connection to the pool registrar through the WAN; not yet waited for. */
function dialPool(): tls.TLSSocket {
  const s = tls.connect({ ...split(lab.ready.pool), servername: lab.ready.names.pool, ca });
  s.on("error", () => {});
  open.push(s);
  return s;
}

function secured(s: tls.TLSSocket): Promise<void> {
  return new Promise((resolve, reject) => {
    s.once("secureConnect", () => resolve());
    s.once("error", reject);
  });
}

/** Resolves with what happens first on the socket within ms: data, close, error or nothing. */
function firstEvent(s: net.Socket, ms: number): Promise<string> {
  return new Promise((resolve) => {
    const done = (what: string) => {
      clearTimeout(t);
      resolve(what);
    };
    const t = setTimeout(() => done("nothing"), ms);
    s.once("data", () => done("data"));
    s.once("secureConnect", () => done("secureConnect"));
    s.once("end", () => done("end"));
    s.once("close", () => done("close"));
    s.once("error", (e: NodeJS.ErrnoException) => done(`error:${e.code}`));
  });
}

/** A SIP keep-alive ping ("\r\n\r\n"); the registrar pongs "\r\n". Resolves with the round trip (ms). */
async function ping(s: tls.TLSSocket): Promise<number> {
  const t0 = performance.now();
  const pong = new Promise<void>((resolve) => s.once("data", () => resolve()));
  s.write("\r\n\r\n");
  await pong;
  return performance.now() - t0;
}

function get(url: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = https.get(url, { ca, agent: false }, (res) => {
      let body = "";
      res.on("data", (d) => {
        body += d;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on("error", reject);
    req.setTimeout(3000, () => req.destroy(new Error("timeout")));
  });
}

describe("lab.ready in the branch site", () => {
  it("names the WAN side for the central pool and its web services, the LAN for the SBA", () => {
    const r = lab.ready;
    expect(r.pool).toBe(lab.wan.address("pool"));
    expect(r.pool).not.toBe(lab.pool.address);
    expect(r.wan).toEqual({ pool: r.pool, certProv: r.certProv });
    expect(new URL(r.certProv).host).toBe(lab.wan.address("web"));
    expect(r.hosts[r.names.pool]).toBe(r.pool);
    expect(r.sba).toBe(lab.sba.address);
    expect(r.registrar).toBe(lab.sba.address);
    expect(r.direct.pool).toBe(lab.pool.address);
  });
});

describe("WAN link, up", () => {
  it("carries TLS end to end to the pool registrar (certificate verified by name)", async () => {
    const before = lab.wan.stats.routes["pool"]!.connections;
    const s = dialPool();
    await secured(s);
    expect(s.authorized).toBe(true);
    expect(s.getPeerCertificate().subjectaltname).toContain(`DNS:${lab.ready.names.pool}`);
    expect(await ping(s)).toBeGreaterThanOrEqual(0);
    expect(lab.wan.stats.routes["pool"]!.connections).toBe(before + 1);
  });

  it("the registrars' challenges name certProv through the WAN", async () => {
    const s = dialPool();
    await secured(s);
    const reply = new Promise<string>((resolve) => {
      let buf = "";
      s.on("data", (d) => {
        buf += d;
        if (buf.includes("\r\n\r\n")) resolve(buf);
      });
    });
    s.write(
      [
        "REGISTER sip:lab.test SIP/2.0",
        "Via: SIP/2.0/TLS 127.0.0.1:5061;branch=z9hG4bKwan1",
        "Max-Forwards: 70",
        "From: <sip:4711@lab.test>;tag=w1",
        "To: <sip:4711@lab.test>",
        "Call-ID: wan-test-1",
        "CSeq: 1 REGISTER",
        "Contact: <sip:4711@127.0.0.1:5061;transport=tls>",
        "Content-Length: 0",
        "",
        "",
      ].join("\r\n"),
    );
    const text = await reply;
    expect(text).toMatch(/^SIP\/2\.0 401/);
    expect(text).toContain(`sts-uri="${lab.ready.certProv}"`);
  });

  it("an HTTPS GET of <certProv>/mex crosses it, and the WSDL names the WAN side too", async () => {
    const r = await get(`${lab.ready.certProv}/mex`);
    expect(r.status).toBe(200);
    expect(r.body).toContain(lab.ready.certProv);
    expect(lab.wan.stats.routes["web"]!.connections).toBeGreaterThan(0);
  });
});

describe("WAN faults via the control endpoint", () => {
  it("cut: an established connection gets no byte and no close; a new handshake never completes", async () => {
    const s = dialPool();
    await secured(s);
    const dropped = lab.wan.stats.bytesDropped;
    expect((await control("/wan/cut")).body).toMatchObject({ ok: true, mode: "blackhole" });
    s.write("\r\n\r\n");
    const fresh = dialPool();
    const [old, young] = await Promise.all([firstEvent(s, 1000), firstEvent(fresh, 1000)]);
    expect(old).toBe("nothing");
    expect(young).toBe("nothing");
    expect(lab.wan.stats.bytesDropped).toBeGreaterThan(dropped);
    const status = await control("/status", "GET");
    expect(status.body.wan).toMatchObject({ mode: "blackhole" });

    // Restore: the connection born in the cut completes (its SYN retransmitted), new ones work.
    await control("/wan/restore");
    await secured(fresh);
    const again = dialPool();
    await secured(again);
    expect(await ping(again)).toBeGreaterThanOrEqual(0);
    expect((await get(`${lab.ready.certProv}/mex`)).status).toBe(200);
  });

  it("cut: the web services are unreachable (an HTTPS request times out)", async () => {
    await control("/wan/cut");
    const t0 = performance.now();
    await expect(
      new Promise((resolve, reject) => {
        const req = https.get(`${lab.ready.certProv}/mex`, { ca, agent: false }, resolve);
        req.on("error", reject);
        req.setTimeout(500, () => req.destroy(new Error("timeout")));
      }),
    ).rejects.toThrow("timeout");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(450);
  });

  it("reset: existing connections get ECONNRESET promptly; the link stays up", async () => {
    const a = dialPool();
    const b = dialPool();
    await Promise.all([secured(a), secured(b)]);
    const t0 = performance.now();
    const events = Promise.all([firstEvent(a, 1000), firstEvent(b, 1000)]);
    expect((await control("/wan/reset")).body).toMatchObject({ ok: true, mode: "up" });
    expect(await events).toEqual(["error:ECONNRESET", "error:ECONNRESET"]);
    expect(performance.now() - t0).toBeLessThan(500);
    const c = dialPool();
    await secured(c);
    expect(await ping(c)).toBeGreaterThanOrEqual(0);
  });

  it("latency: a round trip takes at least twice the one-way delay, and restore removes it", async () => {
    const s = dialPool();
    await secured(s);
    expect((await control("/wan/latency?ms=150")).body).toMatchObject({ mode: "latency", latencyMs: 150 });
    expect(await ping(s)).toBeGreaterThanOrEqual(299);
    await control("/wan/restore");
    expect(await ping(s)).toBeLessThan(100);
  });

  it("latency: validates ms (0–60000)", async () => {
    for (const bad of ["-1", "60001", "abc", "", "1.5"]) {
      expect((await control(`/wan/latency?ms=${bad}`)).status).toBe(400);
    }
    expect((await control("/wan/latency?ms=0")).body).toMatchObject({ mode: "up" });
    expect((await control("/wan/latency?ms=60000")).status).toBe(200);
  });

  it("GET /status reports the WAN mode and its counters", async () => {
    const { body } = await control("/status", "GET");
    expect(body.wan).toMatchObject({ mode: "up", latencyMs: 0 });
    expect(body.wan.connections).toBeGreaterThan(0);
    expect(body.wan.bytesToCentre).toBeGreaterThan(0);
    expect(body.wan.bytesToBranch).toBeGreaterThan(0);
    expect(Object.keys(body.wan.routes).sort()).toEqual(["pool", "web"]);
    expect(body.pool).toBeDefined();
  });
});

describe("WanLink on plain TCP", () => {
  it("keeps order under latency, passes half-close, and survives a peer's RST", async () => {
    const server = net.createServer({ allowHalfOpen: true }, (s) => {
      s.on("error", () => {});
      s.on("data", (d) => {
        if (d.includes("RST")) s.resetAndDestroy();
        else s.write(d);
      });
      s.on("end", () => s.end("bye"));
    });
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
    const port = (server.address() as net.AddressInfo).port;
    const link = await WanLink.start([{ name: "echo", target: { host: "127.0.0.1", port } }]);
    try {
      link.setLatency(20);
      const c = net.connect({ ...split(link.address("echo")), allowHalfOpen: true });
      c.on("error", () => {});
      let got = "";
      c.on("data", (d) => {
        got += d;
      });
      const ended = new Promise<void>((r) => c.on("end", () => r()));
      await new Promise<void>((r) => c.on("connect", () => r()));
      const sent = Array.from({ length: 50 }, (_, i) => `${i};`).join("");
      for (let i = 0; i < 50; i++) c.write(`${i};`);
      c.end();
      await ended;
      expect(got).toBe(`${sent}bye`);

      const d = net.connect(split(link.address("echo")));
      const result = firstEvent(d, 1000);
      d.write("RST");
      expect(await result).toBe("error:ECONNRESET");
      expect(link.stats).toMatchObject({ mode: "latency", connections: 2 });
    } finally {
      await link.stop();
      await new Promise<void>((r) => server.close(() => r()));
    }
  });
});

describe("hq site", () => {
  it("names the pool and certProv directly; the WAN link exists but is not in the phone's path", async () => {
    const hq = await startLab({ site: "hq" });
    try {
      expect(hq.ready.pool).toBe(hq.pool.address);
      expect(hq.ready.registrar).toBe(hq.pool.address);
      expect(hq.ready.hosts[hq.ready.names.pool]).toBe(hq.pool.address);
      expect(hq.ready.certProv).toBe(hq.web.certProvUrl);
      expect(hq.ready.wan.pool).toBe(hq.wan.address("pool"));
      hq.wan.cut();
      const hqCa = await readFile(hq.ready.ca, "utf8");
      const s = tls.connect({ ...split(hq.ready.pool), servername: hq.ready.names.pool, ca: hqCa });
      s.on("error", () => {});
      try {
        expect(await firstEvent(s, 2000)).toBe("secureConnect");
      } finally {
        s.destroy();
      }
    } finally {
      await hq.stop();
    }
  });
});
