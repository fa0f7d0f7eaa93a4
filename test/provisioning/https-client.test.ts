import type { RequestListener } from "node:http";
import * as https from "node:https";
import type { AddressInfo } from "node:net";
import * as net from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createHttpsClient } from "../../firmware/platform/https-client.ts";
import { LabCa } from "../lab/ca.ts";

let ca: LabCa;
let otherCa: LabCa;
const servers: Array<https.Server | net.Server> = [];
const sockets = new Set<net.Socket>();

async function serve(
  cert: { cert: string; key: string },
  handler: RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      res.setHeader("Set-Cookie", ["session=abc; Path=/; HttpOnly"]);
      res.setHeader("X-Ms-diagnostics", '28003;reason="x"');
      res.setHeader("Content-Type", "text/plain");
      res.end(JSON.stringify({ cookie: req.headers.cookie ?? null, body: Buffer.concat(chunks).toString() }));
    });
  },
): Promise<string> {
  const server = https.createServer({ cert: cert.cert, key: cert.key }, handler);
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

beforeAll(async () => {
  [ca, otherCa] = await Promise.all([LabCa.create(), LabCa.create("Some Other CA")]);
});

afterAll(async () => {
  for (const s of sockets) s.destroy();
  for (const s of servers) {
    (s as https.Server).closeAllConnections?.();
    await new Promise((r) => s.close(r));
  }
});

describe("createHttpsClient (platform)", () => {
  it("talks HTTPS to a server the CA vouches for, keeps cookies and passes statuses through", async () => {
    const url = await serve(await ca.issueServer("pool.lab.test", []));
    const client = createHttpsClient({ ca: [ca.cert], timeoutMs: 5000 });
    try {
      const first = await client.request({ method: "POST", url: `${url}/x`, body: "héllo" });
      expect(first.status).toBe(200);
      expect(JSON.parse(first.body)).toEqual({ cookie: null, body: "héllo" });
      expect(first.headers["x-ms-diagnostics"]).toBe('28003;reason="x"');
      const second = await client.request({ method: "GET", url: `${url}/y` });
      expect(JSON.parse(second.body).cookie).toBe("session=abc");
      const fresh = createHttpsClient({ ca: [ca.cert] });
      expect(JSON.parse((await fresh.request({ method: "GET", url })).body).cookie).toBe(null);
      fresh.close();
    } finally {
      client.close();
    }
  });

  it("maps an untrusted certificate to server-cert-untrusted", async () => {
    const url = await serve(await otherCa.issueServer("pool.lab.test", []));
    const client = createHttpsClient({ ca: [ca.cert] });
    await expect(client.request({ method: "GET", url })).rejects.toMatchObject({
      code: "server-cert-untrusted",
    });
    client.close();
  });

  it("maps an expired certificate to server-cert-time", async () => {
    const expired = await ca.issue({
      commonName: "pool.lab.test",
      ips: ["127.0.0.1"],
      serverAuth: true,
      notBefore: new Date(Date.now() - 10 * 24 * 3600_000),
      days: 2,
    });
    const url = await serve(expired);
    const client = createHttpsClient({ ca: [ca.cert] });
    await expect(client.request({ method: "GET", url })).rejects.toMatchObject({ code: "server-cert-time" });
    client.close();
  });

  it("maps a refused port to server-unreachable", async () => {
    const probe = net.createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise((r) => probe.close(r));
    const client = createHttpsClient({ ca: [ca.cert] });
    await expect(client.request({ method: "GET", url: `https://127.0.0.1:${port}/` })).rejects.toMatchObject({
      code: "server-unreachable",
    });
    client.close();
  });

  it("maps a silent server to timeout", async () => {
    const silent = net.createServer((s) => {
      sockets.add(s);
    });
    servers.push(silent);
    await new Promise<void>((r) => silent.listen(0, "127.0.0.1", r));
    const url = `https://127.0.0.1:${(silent.address() as AddressInfo).port}/`;
    const client = createHttpsClient({ ca: [ca.cert], timeoutMs: 300 });
    await expect(client.request({ method: "GET", url })).rejects.toMatchObject({ code: "timeout" });
    client.close();
  });
});
