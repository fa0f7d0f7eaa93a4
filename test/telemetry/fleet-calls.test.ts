/**
 * Calls on the fleet (issue 12): the fleet link (firmware/commands/fleet-link.ts) turns the
 * phone's call events into the retained state's `call` and into call.* events. The phone events
 * fed here are the ones a transferred call makes in test/phone/calls.test.ts; MQTT is the fake
 * port, time a ManualClock.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { type FleetLink, startFleetLink } from "../../firmware/commands/fleet-link.ts";
import { ManualClock } from "../../firmware/core/clock.ts";
import { silentLogger } from "../../firmware/core/logger.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import type { PhoneEvent } from "../../firmware/phone/phone.ts";
import { FakeMqttPort, run, SETTINGS, T } from "./fake-mqtt.ts";

const dirs: string[] = [];
const links: FleetLink[] = [];
afterEach(async () => {
  for (const l of links.splice(0)) await l.stop();
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});

async function link() {
  const clock = new ManualClock();
  const port = new FakeMqttPort(clock);
  const storeDir = await mkdtemp(join(tmpdir(), "fleet-calls-"));
  dirs.push(storeDir);
  const l = await startFleetLink({
    settings: SETTINGS,
    storeDir,
    clock,
    random: new SeededRandom(3),
    logger: silentLogger,
    version: "0.1.0",
    core: () => undefined,
    screen: () => [],
    restartCore: async () => {},
    reboot: () => {},
    port,
  });
  links.push(l);
  // The outbox and the session number live in a real directory: real I/O, so wait in real time.
  await expect.poll(() => port.payloads(T.state).length).toBeGreaterThan(0);
  const feed = async (...events: PhoneEvent[]) => {
    for (const e of events) l.onPhoneEvent(e);
    await run(clock, 0);
  };
  const state = () => port.payloads(T.state).at(-1);
  const events = () => port.payloads(T.event).filter((e) => String(e.type).startsWith("call."));
  return { clock, port, feed, state, events };
}

describe("calls in the fleet's state and events", () => {
  it("state.call is null without a call, follows the call, and a transfer's call replaces the first", async () => {
    const f = await link();
    await f.feed({ event: "state", state: "registered", registrar: "sba.lab.test:5061", primary: true });
    await expect.poll(() => f.state()?.state).toBe("registered");
    expect(f.state()?.call).toBeNull();

    await f.feed({ event: "call", state: "calling", direction: "outgoing", remote: "4712" });
    await expect
      .poll(() => f.state()?.call)
      .toEqual({
        state: "calling",
        direction: "outgoing",
        remote: "4712",
        since: "2026-01-01T00:00:00.000Z",
      });
    f.clock.advance(2_000);
    await f.feed(
      { event: "call", state: "ringing", direction: "outgoing", remote: "4712" },
      { event: "call", state: "connected", direction: "outgoing", remote: "4712" },
    );
    await expect
      .poll(() => f.state()?.call)
      .toMatchObject({ state: "connected", since: "2026-01-01T00:00:00.000Z" });

    f.clock.advance(60_000);
    await f.feed(
      { event: "call", state: "transferring", direction: "outgoing", remote: "4712", to: "4713" },
      {
        event: "call",
        state: "ended",
        direction: "outgoing",
        remote: "4712",
        reason: "transferred",
        durationMs: 61_400,
      },
      { event: "call", state: "connected", direction: "outgoing", remote: "4713" },
    );
    await expect
      .poll(() => f.state()?.call)
      .toEqual({
        state: "connected",
        direction: "outgoing",
        remote: "4713",
        since: "2026-01-01T00:01:02.000Z",
      });

    await f.feed(
      {
        event: "call",
        state: "ended",
        direction: "outgoing",
        remote: "4713",
        reason: "remote-hangup",
        durationMs: 900,
      },
      { event: "call", state: "idle" },
    );
    await expect.poll(() => f.state()?.call).toBeNull();
    await expect.poll(() => f.events().length).toBe(5);
    const strip = (e: Record<string, unknown>) => {
      const { v: _v, seq: _s, ts: _t, ...rest } = e;
      return rest;
    };
    expect(f.events().map(strip)).toEqual([
      { type: "call.started", direction: "outgoing", remote: "4712" },
      { type: "call.transferring", remote: "4712", to: "4713" },
      { type: "call.ended", direction: "outgoing", remote: "4712", reason: "transferred", durationS: 61 },
      { type: "call.started", direction: "outgoing", remote: "4713" },
      { type: "call.ended", direction: "outgoing", remote: "4713", reason: "remote-hangup", durationS: 1 },
    ]);
  });

  it("an incoming call that is missed: started, ended remote-cancelled with status, and call.missed", async () => {
    const f = await link();
    await f.feed(
      { event: "call", state: "incoming", direction: "incoming", remote: "+4930123" },
      {
        event: "call",
        state: "ended",
        direction: "incoming",
        remote: "+4930123",
        reason: "remote-cancelled",
        status: 487,
        durationMs: 0,
      },
      { event: "call", state: "missed", direction: "incoming", remote: "+4930123" },
      { event: "call", state: "missed", direction: "incoming", remote: "4713", reason: "busy" },
    );
    await expect.poll(() => f.events().length).toBe(4);
    expect(f.events().map((e) => [e.type, e.remote, e.reason ?? e.busy, e.status])).toEqual([
      ["call.started", "+4930123", undefined, undefined],
      ["call.ended", "+4930123", "remote-cancelled", 487],
      ["call.missed", "+4930123", false, undefined],
      ["call.missed", "4713", true, undefined],
    ]);
    expect(f.state()?.call).toBeNull();
  });
});
