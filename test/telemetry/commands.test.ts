/**
 * Commands (firmware/telemetry/commands.ts through the agent): every status, disruptive ones
 * deferred until idle, disabled and unknown ones refused, retained ones ignored, replies on the
 * response topic with the correlation data, QoS 1 and a 60 s expiry.
 */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { connected, type Harness, settle, T } from "./fake-mqtt.ts";

const RT = "ops/replies/console-1";

function request(
  h: Harness & { conn: { deliver: (m: never) => void } },
  name: string,
  o: Record<string, unknown> = {},
) {
  h.conn.deliver({
    topic: T.cmd(name),
    payload: "",
    responseTopic: RT,
    correlationData: Buffer.from(`corr-${name}`),
    ...o,
  } as never);
}

const replies = (h: Harness): Array<Record<string, unknown>> =>
  h.port.published
    .filter((p) => p.topic === RT)
    .map((p) => ({
      ...(JSON.parse(p.payload) as Record<string, unknown>),
      corr: p.o.correlationData?.toString(),
    }));

describe("commands", () => {
  it("ping is answered by the agent itself, on the response topic, with the correlation data", async () => {
    const h = await connected();
    request(h, "ping");
    await settle();
    const p = h.port.published.find((x) => x.topic === RT)!;
    expect(p.o).toMatchObject({ qos: 1, messageExpiryS: 60, contentType: "application/json" });
    expect(p.o.retain).toBeFalsy();
    expect(p.o.correlationData).toEqual(Buffer.from("corr-ping"));
    expect(JSON.parse(p.payload)).toEqual({
      v: 1,
      command: "ping",
      status: "ok",
      result: { pong: true, uptimeS: 1234, birthSeq: 1 },
    });
    expect(h.device.runs).toEqual([]);
  });

  it("non-disruptive commands run at once, even while busy; args are the JSON payload", async () => {
    const h = await connected();
    h.device.idle = false;
    h.device.results.diagnostics = { registrar: { inUse: "sba.lab.test:5061" } };
    h.device.results.screenshot = { lines: ["4711", "Registered"] };
    request(h, "diagnostics", { payload: '{"lines":50}' });
    request(h, "screenshot");
    await settle();
    expect(h.device.runs).toEqual([
      { name: "diagnostics", args: { lines: 50 } },
      { name: "screenshot", args: {} },
    ]);
    expect(replies(h)).toEqual([
      {
        v: 1,
        command: "diagnostics",
        status: "ok",
        result: { registrar: { inUse: "sba.lab.test:5061" } },
        corr: "corr-diagnostics",
      },
      {
        v: 1,
        command: "screenshot",
        status: "ok",
        result: { lines: ["4711", "Registered"] },
        corr: "corr-screenshot",
      },
    ]);
  });

  it("a disruptive command while idle runs at once (one reply)", async () => {
    const h = await connected();
    request(h, "sign-out");
    await settle();
    expect(h.device.runs.map((r) => r.name)).toEqual(["sign-out"]);
    expect(replies(h)).toEqual([{ v: 1, command: "sign-out", status: "ok", corr: "corr-sign-out" }]);
  });

  it("a disruptive command while busy is deferred at once, then run at idle with a second reply", async () => {
    const h = await connected();
    h.device.idle = false;
    request(h, "reboot");
    request(h, "update", { payload: '{"bundle":"https://fw.lab.test/1.2.bundle"}' });
    await settle();
    expect(replies(h)).toEqual([
      { v: 1, command: "reboot", status: "deferred", corr: "corr-reboot" },
      { v: 1, command: "update", status: "deferred", corr: "corr-update" },
    ]);
    expect(h.device.runs).toEqual([]);
    h.agent.idleChanged(); // still busy
    await settle();
    expect(h.device.runs).toEqual([]);
    h.device.idle = true;
    h.agent.idleChanged();
    h.agent.idleChanged(); // twice: each command still runs once
    await settle();
    expect(h.device.runs).toEqual([
      { name: "reboot", args: {} },
      { name: "update", args: { bundle: "https://fw.lab.test/1.2.bundle" } },
    ]);
    expect(replies(h).slice(2)).toEqual([
      { v: 1, command: "reboot", status: "ok", corr: "corr-reboot" },
      { v: 1, command: "update", status: "ok", corr: "corr-update" },
    ]);
  });

  it("a deferred command survives a reconnect and replies on the connection of the moment", async () => {
    const h = await connected();
    h.device.idle = false;
    request(h, "reprovision");
    await settle();
    h.conn.drop();
    await h.run(60_000);
    const second = h.port.current!;
    expect(second).not.toBe(h.conn);
    h.device.idle = true;
    h.agent.idleChanged();
    await settle();
    const done = h.port.published.filter((p) => p.topic === RT);
    expect(done.map((p) => [JSON.parse(p.payload).status, p.conn])).toEqual([
      ["deferred", 0],
      ["ok", 1],
    ]);
  });

  it("a failure is status error with the HandsetError's code; anything else says internal", async () => {
    const h = await connected();
    h.device.failures.update = new HandsetError("update-signature", "the bundle's signature does not verify");
    h.device.failures.diagnostics = new Error("secret detail /etc/key.pem");
    request(h, "update");
    request(h, "diagnostics");
    await settle();
    expect(replies(h)).toEqual([
      {
        v: 1,
        command: "update",
        status: "error",
        error: { code: "update-signature", message: "the bundle's signature does not verify" },
        corr: "corr-update",
      },
      {
        v: 1,
        command: "diagnostics",
        status: "error",
        error: { code: "internal", message: "the command failed" },
        corr: "corr-diagnostics",
      },
    ]);
  });

  it("a disabled command is refused (command-disabled); the enabled set can change", async () => {
    const h = await connected({ settings: { commands: ["ping", "diagnostics"] } });
    request(h, "reboot");
    await settle();
    expect(replies(h)).toEqual([
      {
        v: 1,
        command: "reboot",
        status: "refused",
        error: { code: "command-disabled", message: "this command is disabled" },
        corr: "corr-reboot",
      },
    ]);
    h.agent.updateSettings({ commands: ["ping"] });
    request(h, "diagnostics");
    h.agent.updateSettings({ commands: ["ping", "reboot"] });
    request(h, "reboot");
    await settle();
    expect(
      replies(h)
        .slice(1)
        .map((r) => r.status),
    ).toEqual(["refused", "ok"]);
    expect(h.device.runs.map((r) => r.name)).toEqual(["reboot"]);
  });

  it("an unknown command is refused (unknown-command)", async () => {
    const h = await connected();
    request(h, "format-flash");
    await settle();
    expect(replies(h)).toEqual([
      {
        v: 1,
        command: "format-flash",
        status: "refused",
        error: { code: "unknown-command", message: "no such command" },
        corr: "corr-format-flash",
      },
    ]);
  });

  it("bad JSON or a non-object payload is refused (bad-request)", async () => {
    const h = await connected();
    request(h, "diagnostics", { payload: "{" });
    request(h, "diagnostics", { payload: "[1]" });
    request(h, "ping", { payload: '"x"' });
    await settle();
    expect(replies(h).map((r) => [r.status, (r.error as { code: string }).code])).toEqual([
      ["refused", "bad-request"],
      ["refused", "bad-request"],
      ["refused", "bad-request"],
    ]);
    expect(h.device.runs).toEqual([]);
  });

  it("a retained command is ignored (a stale reboot never reboots the phone on connect)", async () => {
    const h = await connected();
    request(h, "reboot", { retain: true });
    await settle();
    expect(h.device.runs).toEqual([]);
    expect(replies(h)).toEqual([]);
    expect(h.logs.map((l) => l.fields?.code)).toContain("command-retained");
  });

  it("a command without a response topic runs; its reply is dropped with a log line", async () => {
    const h = await connected();
    h.conn.deliver({ topic: T.cmd("screenshot"), payload: "" });
    await settle();
    expect(h.device.runs.map((r) => r.name)).toEqual(["screenshot"]);
    expect(h.port.published.filter((p) => p.topic !== T.state)).toEqual([]);
    expect(h.logs.find((l) => l.fields?.code === "command-no-response-topic")?.fields).toMatchObject({
      command: "screenshot",
      status: "ok",
    });
  });

  it("a command on another phone's topic is ignored", async () => {
    const h = await connected();
    h.conn.deliver({ topic: "handset/v1/phone-2/cmd/reboot", payload: "", responseTopic: RT });
    await settle();
    expect(h.device.runs).toEqual([]);
    expect(replies(h)).toEqual([]);
  });

  it("never replies onto a fleet topic (another phone's command topic)", async () => {
    const h = await connected();
    request(h, "ping", { responseTopic: "handset/v1/phone-2/cmd/reboot" });
    await settle();
    expect(h.port.published.filter((p) => p.topic.includes("/cmd/"))).toEqual([]);
    expect(h.logs.map((l) => l.fields?.code)).toContain("command-bad-response-topic");
  });

  it("too many waiting disruptive commands are refused (busy)", async () => {
    const h = await connected();
    h.device.idle = false;
    for (let i = 0; i < 17; i++) request(h, "reboot");
    await settle();
    expect(replies(h).filter((r) => r.status === "deferred")).toHaveLength(16);
    expect(replies(h).at(-1)).toMatchObject({ status: "refused", error: { code: "busy" } });
  });

  it("a clean stop forgets deferred commands", async () => {
    const h = await connected();
    h.device.idle = false;
    request(h, "reboot");
    await settle();
    await h.agent.stop({ clean: true });
    h.device.idle = true;
    h.agent.idleChanged();
    await settle();
    expect(h.device.runs).toEqual([]);
  });
});
