/**
 * firmware/config/: one typed table for every option of `handset run`; validation with a one-line
 * error naming the key; the reference (`handset config --defaults`) and README's copy of it; the
 * composition root reading every option from the validated configuration.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { OPTIONS } from "../../firmware/config/options.ts";
import { ConfigError, parseConfig } from "../../firmware/config/parse.ts";
import { referenceMarkdown, referenceRows, referenceText } from "../../firmware/config/reference.ts";
import { phoneConfigFrom } from "../../firmware/main.ts";

const MINIMAL = { trustedRoots: ["/etc/handset/root.pem"] };

function refusal(json: unknown): ConfigError {
  try {
    parseConfig(json);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return err as ConfigError;
  }
  throw new Error(`accepted ${JSON.stringify(json)}`);
}

describe("parseConfig", () => {
  it("fills every option: the file's values, else the table's defaults", () => {
    const c = parseConfig({
      ...MINIMAL,
      board: "sim",
      network: {
        dhcp: { server: "127.0.0.1:6767" },
        ntp: "[::1]:123",
        staticRegistrars: ["pool.lab.test:5061"],
      },
    });
    expect(c.board).toBe("sim");
    expect(c.storeDir).toBe("/var/lib/handset");
    expect(c.utcOffsetMinutes).toBe(0);
    expect(c["network.innerTls"]).toBe("auto");
    expect(c["network.dhcpTimeoutMs"]).toBe(10_000);
    expect(c["network.dhcp.server"]).toEqual({ host: "127.0.0.1", port: 6767 });
    expect(c["network.ntp"]).toEqual({ host: "::1", port: 123 });
    expect(c["network.staticRegistrars"]).toEqual([{ host: "pool.lab.test", port: 5061 }]);
    expect(c["network.dhcp.interface"]).toBeUndefined();
    expect(Object.keys(c).sort()).toEqual(Object.keys(OPTIONS).sort());
  });

  it("accepts README's example", () => {
    const readme = readFileSync(join(import.meta.dirname, "../../README.md"), "utf8");
    const text = /For example:\n\n```json\n([\s\S]*?)```/.exec(readme)?.[1];
    expect(text).toBeDefined();
    const c = parseConfig(JSON.parse(text!));
    expect(c["network.dhcp.interface"]).toBe("eth0");
  });

  const cases: Array<[string, unknown, string, RegExp]> = [
    [
      "an unknown top-level key",
      { ...MINIMAL, bored: "pi" },
      "bored",
      /unknown option \(did you mean board\?\)/,
    ],
    [
      "an unknown nested key",
      { ...MINIMAL, network: { dhcp: { interfce: "eth0" } } },
      "network.dhcp.interfce",
      /did you mean network\.dhcp\.interface/,
    ],
    ["a key nothing reads", { ...MINIMAL, sip: { broker: "x" } }, "sip", /unknown option/],
    [
      "a key nothing reads in a group",
      { ...MINIMAL, mqtt: { broker: "x" } },
      "mqtt.broker",
      /did you mean mqtt\.brokers/,
    ],
    ["a wrong enum value", { ...MINIMAL, network: { innerTls: "1.3" } }, "network.innerTls", /"1\.3"/],
    ["a number for a string", { ...MINIMAL, storeDir: 7 }, "storeDir", /expected a non-empty string, got 7/],
    ["a string for a number", { ...MINIMAL, utcOffsetMinutes: "60" }, "utcOffsetMinutes", /integer/],
    ["a number out of range", { ...MINIMAL, network: { dhcpTimeoutMs: 0 } }, "network.dhcpTimeoutMs", /1000/],
    ["a bad HOST:PORT", { ...MINIMAL, network: { ntp: "pool:99999" } }, "network.ntp", /HOST:PORT/],
    [
      "a bad list element",
      { ...MINIMAL, network: { staticRegistrars: ["a:1", "b"] } },
      "network.staticRegistrars",
      /\[1\]/,
    ],
    ["a value where a group is", { ...MINIMAL, network: "eth0" }, "network", /expected an object/],
    [
      "an http URL",
      { ...MINIMAL, network: { staticCertProvUrl: "http://x/" } },
      "network.staticCertProvUrl",
      /https/,
    ],
    ["a missing required option", {}, "trustedRoots", /required/],
    ["an empty required list", { trustedRoots: [] }, "trustedRoots", /at least one/],
    [
      "a bad host table value",
      { ...MINIMAL, network: { hosts: { "pool.lab.test": "x" } } },
      "network.hosts",
      /HOST:PORT/,
    ],
  ];
  for (const [what, json, key, reason] of cases) {
    it(`refuses ${what} with one line naming ${key}`, () => {
      const e = refusal(json);
      expect(e.code).toBe("config-invalid");
      expect(e.key).toBe(key);
      expect(e.message.startsWith(`${key}: `)).toBe(true);
      expect(e.message).toMatch(reason);
      expect(e.message).not.toContain("\n");
    });
  }

  it("refuses a document that is not an object", () => {
    for (const json of [null, [], "x", 3]) expect(refusal(json).message).toMatch(/must be a JSON object/);
  });

  it("names the file when asked to", () => {
    expect(refusal({}).inFile("/etc/phone.json").message).toBe(
      "/etc/phone.json: trustedRoots: required (path[] (at least one))",
    );
  });
});

describe("the option table", () => {
  it("describes every option: a type, a description, and a default or a reason to have none", () => {
    for (const r of referenceRows()) {
      expect(r.type, r.name).not.toBe("");
      expect(r.description.length, r.name).toBeGreaterThan(20);
      if (r.required) expect(r.default, r.name).toBeUndefined();
      expect(typeof r.secret).toBe("boolean");
    }
  });

  it("every default passes its own validation", () => {
    const rows = referenceRows();
    const nested: Record<string, unknown> = { ...MINIMAL };
    for (const r of rows) {
      if (r.default === undefined) continue;
      const parts = r.name.split(".");
      let o = nested;
      for (const p of parts.slice(0, -1)) {
        o[p] ??= {};
        o = o[p] as Record<string, unknown>;
      }
      o[parts.at(-1)!] = r.default;
    }
    const c = parseConfig(nested) as Record<string, unknown>;
    for (const r of rows) if (r.default !== undefined) expect(c[r.name], r.name).toBeDefined();
  });

  it("README carries the same table as `handset config --defaults`", () => {
    const readme = readFileSync(join(import.meta.dirname, "../../README.md"), "utf8");
    const m = /<!-- config-reference:begin -->\n([\s\S]*?)\n<!-- config-reference:end -->/.exec(readme);
    // Cell by cell: the Markdown formatter pads the columns.
    const cells = (table: string) =>
      table.split("\n").map((line) => line.split(/(?<!\\)\|/).map((c) => c.trim().replace(/^-+$/, "-")));
    expect(cells(m?.[1] ?? "")).toEqual(cells(referenceMarkdown()));
    expect(readme).toContain("handset config --defaults");
  });

  it("the text reference names every option with its default", () => {
    const text = referenceText();
    for (const r of referenceRows()) expect(text).toContain(r.name);
    expect(text).toMatch(/network\.innerTls\s+"1\.2" \| "1\.0" \| "auto"\s+default "auto"/);
    expect(text).toMatch(/trustedRoots\s+.*required/);
  });
});

describe("phoneConfigFrom (the composition root reads the validated configuration)", () => {
  const base = parseConfig(MINIMAL);
  /** A value for each option different from its default, to see it arrive in the phone's config. */
  const changed: Record<string, unknown> = {
    board: "sim",
    storeDir: "/tmp/x",
    utcOffsetMinutes: 60,
    "network.dhcp.interface": "eth1",
    "network.dhcp.server": { host: "10.0.0.1", port: 67 },
    "network.dhcpTimeoutMs": 2_000,
    "network.ntp": { host: "10.0.0.2", port: 123 },
    "network.dnsServer": "10.0.0.3",
    "network.domain": "contoso.com",
    "network.staticRegistrars": [{ host: "pool.contoso.com", port: 5061 }],
    "network.staticCertProvUrl": "https://pool.contoso.com/CertProv/CertProvisioningService.svc",
    "network.hosts": { "pool.contoso.com": "10.0.0.4:5061" },
    "network.innerTls": "1.0",
    "network.failbackProbeMs": 5_000,
    "log.level": "debug",
    "mqtt.brokers": ["mqtts://mqtt.contoso.com:8883"],
    "mqtt.prefix": "contoso/phones",
    "mqtt.deviceId": "phone-1",
    "mqtt.site": "berlin",
    "mqtt.username": "phone-1",
    "mqtt.passwordFile": "/etc/handset/mqtt-password",
    "mqtt.ca": "/etc/handset/mqtt-ca.pem",
    "mqtt.cert": "/etc/handset/mqtt.pem",
    "mqtt.key": "/etc/handset/mqtt.key",
    "mqtt.keepaliveS": 60,
    "mqtt.commands": ["ping"],
    "mqtt.outboxSize": 50,
    "mqtt.outboxRatePerS": 5,
    "telemetry.intervalS": 60,
    "media.srtp": "optional",
    "media.address": "192.0.2.10",
  };
  /** Read by runCommand itself: the board it builds, the logging, the fleet link (fleet-link.ts). */
  const readByRun = (name: string) =>
    name === "board" || name === "log.level" || name.startsWith("mqtt.") || name.startsWith("telemetry.");

  it("has a changed value for every option but those the run command itself reads", () => {
    expect(Object.keys(changed).sort()).toEqual(
      Object.keys(OPTIONS)
        .filter((n) => n !== "trustedRoots")
        .sort(),
    );
  });

  for (const [name, value] of Object.entries(changed)) {
    if (readByRun(name)) continue; // not part of the phone core's configuration
    it(`${name} reaches the phone's configuration`, () => {
      const before = JSON.stringify(phoneConfigFrom(base, ["PEM"]));
      const after = JSON.stringify(phoneConfigFrom({ ...base, [name]: value }, ["PEM"]));
      expect(after).not.toBe(before);
    });
  }

  it("asks DHCP only when an interface or a server is configured", () => {
    expect(phoneConfigFrom(base, []).network.dhcp).toBeUndefined();
    expect(phoneConfigFrom({ ...base, "network.dhcp.interface": "eth0" }, []).network.dhcp).toEqual({
      interface: "eth0",
    });
  });
});
