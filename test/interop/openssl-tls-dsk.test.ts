/**
 * The phone's tunnelled TLS-DSK handshake against a real `openssl s_server`. The test plays the
 * registrar: each client token goes to s_server over TCP and the server's reply is collected
 * until it is a whole flight, exactly the bytes that would travel as gssapi-data. The key
 * material is then recomputed independently from s_server's key log (master secret, client
 * random) plus the server random from the ServerHello that crossed the bridge, and must equal
 * the engine's.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { createTlsDskEngine } from "../../firmware/platform/tls-dsk-engines.ts";
import type { InnerTls, TlsDskHandshakeResult } from "../../firmware/sip/tls-dsk/engine.ts";
import { keyMaterialFromMaster, prfTls12, TLS_DSK_LABEL } from "../../firmware/sip/tls-dsk/prf.ts";
import {
  clientRandomFromHello,
  serverRandomFromFlight,
  splitRecords,
} from "../../firmware/sip/tls-dsk/records.ts";
import { serverNeedsTls10 } from "../../firmware/sip/tls-dsk/version-fallback.ts";
import { type IssuedCert, LabCa } from "../lab/ca.ts";
import { FlightBridge, masterFromKeylog, opensslAvailable, type SServer, startSServer } from "./openssl.ts";

const haveOpenssl = opensslAvailable();
const mustHaveOpenssl = process.env.CI === "true";

it.runIf(!haveOpenssl && mustHaveOpenssl)("openssl is installed (required in CI)", () => {
  throw new Error("openssl not installed");
});

describe.skipIf(!haveOpenssl)(
  `TLS-DSK inner handshake against openssl s_server${haveOpenssl ? "" : " (openssl not installed)"}`,
  () => {
    const TARGET = "pool.lab.test";
    let ca: LabCa;
    let srv: IssuedCert;
    let cli: IssuedCert;
    const servers: SServer[] = [];

    beforeAll(async () => {
      ca = await LabCa.create();
      [srv, cli] = await Promise.all([ca.issueServer(TARGET, []), ca.issueClient("alice@lab.test")]);
    });

    afterAll(() => {
      for (const s of servers) s.stop();
    });

    async function run(
      innerTls: InnerTls,
      sserverArgs: string[],
    ): Promise<{
      done: TlsDskHandshakeResult;
      expected: Buffer;
      flight1Records: number;
      ms: number;
    }> {
      const server = await startSServer({ cert: srv.cert, key: srv.key, ca: ca.cert }, [
        ...sserverArgs,
        "-Verify",
        "1",
      ]);
      servers.push(server);
      const bridge = await FlightBridge.connect(server.port);
      const engine = createTlsDskEngine({
        cert: cli.cert,
        key: cli.key,
        ca: [ca.cert],
        targetname: TARGET,
        innerTls,
      });
      try {
        const t0 = performance.now();
        const hello = await engine.start();
        const flight1 = await bridge.exchange(hello);
        const r1 = await engine.step(flight1);
        if (!("token" in r1)) throw new Error("engine finished after server flight 1");
        const flight2 = await bridge.exchange(r1.token);
        const r2 = await engine.step(flight2);
        if (!("done" in r2))
          throw new Error(`engine not done after server flight 2; s_server said:\n${server.log()}`);
        const ms = performance.now() - t0;

        const clientRandom = clientRandomFromHello(hello);
        const serverRandom = serverRandomFromFlight(flight1);
        const master = await masterFromKeylog(server.keylogPath, clientRandom);
        const { cipher, version } = r2.done;
        const expected =
          version !== "TLSv1.2"
            ? keyMaterialFromMaster(master, clientRandom, serverRandom, "tls1")
            : cipher.endsWith("SHA384")
              ? prfTls12(master, TLS_DSK_LABEL, Buffer.concat([clientRandom, serverRandom]), 128, "sha384")
              : keyMaterialFromMaster(master, clientRandom, serverRandom, "tls12");
        return { done: r2.done, expected, flight1Records: splitRecords(flight1).records.length, ms };
      } finally {
        engine.destroy();
        bridge.close();
        server.stop();
      }
    }

    it("Node engine, TLS 1.2 (s_server -tls1_2 -Verify 1): key material equals PRF(keylog master)", async () => {
      const r = await run("1.2", ["-tls1_2"]);
      expect(r.done.version).toBe("TLSv1.2");
      expect(r.done.keyMaterial).toHaveLength(128);
      expect(r.done.keyMaterial.toString("hex")).toBe(r.expected.toString("hex"));
      expect(r.done.peerCertificatePem.replace(/\s/g, "")).toBe(srv.cert.replace(/\s/g, ""));
    });

    it("forge engine, TLS 1.0 (s_server -tls1 AES128-SHA:AES256-SHA): key material equals TLS1 PRF(keylog master)", async () => {
      const r = await run("1.0", ["-tls1", "-cipher", "AES128-SHA:AES256-SHA:@SECLEVEL=0"]);
      expect(r.done.version).toBe("TLSv1");
      expect(["AES128-SHA", "AES256-SHA"]).toContain(r.done.cipher);
      expect(r.done.keyMaterial.toString("hex")).toBe(r.expected.toString("hex"));
      // s_server sends one record per handshake message; the phone must accept any layout.
      expect(r.flight1Records).toBeGreaterThan(1);
    });

    it("auto against s_server limited to TLS 1.0: server flight 1 calls for the 1.0 profile", async () => {
      // "auto" offers only TLS 1.2 (no @SECLEVEL=0); the registration falls back to a fresh 1.0
      // handshake when server flight 1 shows a ServerHello < 1.2 or a protocol_version alert.
      const server = await startSServer({ cert: srv.cert, key: srv.key, ca: ca.cert }, [
        "-tls1",
        "-cipher",
        "AES128-SHA:AES256-SHA:@SECLEVEL=0",
        "-Verify",
        "1",
      ]);
      servers.push(server);
      const bridge = await FlightBridge.connect(server.port);
      const engine = createTlsDskEngine({
        cert: cli.cert,
        key: cli.key,
        ca: [ca.cert],
        targetname: TARGET,
        innerTls: "auto",
      });
      try {
        const flight1 = await bridge.exchange(await engine.start());
        expect(serverNeedsTls10(flight1)).toBe(true);
      } finally {
        engine.destroy();
        bridge.close();
        server.stop();
      }
      // …and the 1.0 profile then agrees with s_server on the key material.
      const r = await run("1.0", ["-tls1", "-cipher", "AES128-SHA:AES256-SHA:@SECLEVEL=0"]);
      expect(r.done.version).toBe("TLSv1");
      expect(r.done.keyMaterial.toString("hex")).toBe(r.expected.toString("hex"));
    });
  },
);
