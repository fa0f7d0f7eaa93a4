/**
 * Issue 12, the phone's calls end to end: whole Phones on simulated boards, registered with the
 * lab's SBA by the firmware's Account over real TLS-DSK, calling each other through the lab's call
 * router, driven only by the board (keys and the hook switch) as a person would. Media is a test
 * port (call-rig's FakeMedia, which records the DTMF sent through it); call-dtmf.test.ts runs the
 * real media port.
 *
 * A = 4711 (the lab's test client), B = 4712, C = 4713, all on the SBA.
 */
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { type Lab, startLab } from "../lab/lab.ts";
import { addUser, testClient } from "../lab-calls/phones.ts";
import { callStates, type LabHandset, labHandset, until, untilShows } from "./lab-phone.ts";

let lab: Lab;
let a: LabHandset;
let b: LabHandset;
let c: LabHandset;

beforeAll(async () => {
  lab = await startLab();
  const [userB, userC] = await Promise.all([addUser(lab, "4712"), addUser(lab, "4713")]);
  [a, b, c] = await Promise.all([
    labHandset(lab, testClient(lab), "A"),
    labHandset(lab, userB, "B"),
    labHandset(lab, userC, "C"),
  ]);
}, 60_000);

afterAll(async () => {
  for (const h of [a, b, c]) await h?.stop();
  await lab?.stop();
});

// A test that failed half-way leaves no call behind for the next.
afterEach(async () => {
  for (const h of [a, b, c]) {
    if (!h) continue;
    h.phone.calls.hangUp();
    h.board.setHook(false);
  }
  for (const h of [a, b, c]) if (h) await until(h, () => !h.phone.inCall, "no call", 5_000);
});

/** Back at the idle screen, no call left. */
async function idle(...hs: LabHandset[]): Promise<void> {
  for (const h of hs) {
    if (h.board.snapshot().offHook) h.board.setHook(false);
    await until(h, () => !h.phone.inCall && h.phone.uiMode === "none", "idle", 5_000);
  }
}

describe("a call between two phones through the lab's SBA", () => {
  it("A lifts the handset and dials 4712#; B rings and answers by the hook; A holds and resumes; B hangs up", async () => {
    expect(a.screen()[3]).toBe("Menu Dial Redl  Miss");

    a.board.setHook(true);
    expect(a.screen()).toEqual(["Dial: _", "Enter number", "Registered", "Back Clr        Call"]);
    a.board.typeKeys("4712");
    expect(a.screen()[0]).toBe("Dial: 4712_");
    expect(a.phone.isIdle()).toBe(false); // someone at the dial screen
    a.board.typeKeys("#");
    expect(a.screen()).toEqual(["4712", "Calling…", "Registered", "                 End"]);

    // B rings: the incoming screen names the caller, the ring LED blinks, the ringer is on.
    await untilShows(b, "Incoming call");
    expect(b.screen()).toEqual(["4711", "Incoming call", "Registered", "Answ           Rejct"]);
    expect(b.board.indicatorStates.messageWaiting).toBe("blink");
    expect(b.events).toContainEqual({ event: "ring", on: true });
    expect(b.phone.isIdle()).toBe(false);
    await untilShows(a, "Ringing…");

    b.board.setHook(true);
    await untilShows(a, /^00:0\d/);
    await untilShows(b, /^00:0\d/);
    expect(b.board.indicatorStates.messageWaiting).toBe("off");
    expect(b.events).toContainEqual({ event: "ring", on: false });
    expect(a.screen()[0]).toBe("4712");
    expect(a.screen()[3]).toBe("Hold Xfer Mute   End");
    expect(b.screen()[0]).toBe("4711");
    expect(a.phone.inCall && b.phone.inCall).toBe(true);
    expect(a.phone.isIdle()).toBe(false);

    // The call timer runs on the phone's clock.
    await untilShows(a, /^00:01/, 3_000);

    a.board.press("soft1"); // Hold
    await untilShows(a, "On hold");
    await untilShows(b, "Held");
    expect(a.screen()[3]).toBe("Resm Xfer Mute   End");
    expect(a.services.ports[0]!.log).toContain("offer update sendonly");
    expect(a.services.ports[0]!.held).toBe(true);

    a.board.press("soft1"); // Resume
    await until(a, () => !a.screen()[1]!.includes("On hold"), "resumed");
    await until(b, () => !b.screen()[1]!.includes("Held"), "B sees the resume");
    expect(a.screen()[3]).toBe("Hold Xfer Mute   End");

    a.board.press("soft3"); // Mute: the flag on the screen
    expect(a.screen()[1]).toMatch(/Muted$/);
    expect(a.screen()[3]).toBe("Hold Xfer Unmt   End");
    a.board.press("soft3");
    expect(a.screen()[1]).not.toMatch(/Muted/);

    b.board.setHook(false); // B hangs up
    await untilShows(a, "Call ended");
    await untilShows(b, "Call ended");
    expect(a.screen()[1]).toMatch(/^4712 +00:0\d$/);
    await idle(a, b);
    expect(callStates(a)).toEqual(["calling", "ringing", "connected", "held", "connected", "ended", "idle"]);
    expect(callStates(b)).toEqual(["incoming", "connected", "held", "connected", "ended", "idle"]);
    const ended = a.events.find((e) => e.event === "call" && e.state === "ended");
    expect(ended).toMatchObject({ direction: "outgoing", remote: "4712", reason: "remote-hangup" });
    expect(a.phone.isIdle()).toBe(true);
    expect(b.phone.isIdle()).toBe(true);
    // A's handset is still off the hook: the idle() helper put it back.
    expect(a.phone.calls.lastDialled).toEqual({ uri: "sip:4712@lab.test", label: "4712" });
  }, 30_000);

  it("Redial calls the last number; A cancels by the hook before an answer: B lists a missed call", async () => {
    a.board.press("soft3"); // Redial
    expect(a.screen()[0]).toBe("4712");
    await untilShows(b, "Incoming call");
    a.board.setHook(true);
    a.board.setHook(false); // on-hook: cancel
    await untilShows(a, "Call ended");
    await until(b, () => !b.phone.inCall, "B's call to end");
    await idle(a, b);
    expect(b.screen()[0]).toMatch(/^4712 +1 missed$/);
    expect(b.phone.calls.missed[0]).toMatchObject({ number: "4711", busy: false });
    // Kept in flash too, for a restart (missed-store.test.ts restores it).
    await expect
      .poll(async () => (await b.services.missedCalls!.load())?.missed[0])
      .toMatchObject({ number: "4711", uri: "sip:4711@lab.test", busy: false });

    // The missed list from idle (soft4), then call back with #.
    b.board.press("soft4");
    expect(b.screen()[0]).toMatch(/^Missed 1\/1 +\d\d:\d\d$/);
    expect(b.screen()[1]).toBe("4711");
    expect(b.screen()[3]).toBe("Back            Call");
    b.board.press("#");
    await untilShows(a, "Incoming call");
    expect(b.phone.calls.lastDialled?.uri).toMatch(/^sip:4711@lab\.test/);
    a.board.press("soft4"); // Reject: 603 Decline
    await untilShows(b, "Declined");
    await idle(a, b);
    // Looked at: the idle screen no longer counts it.
    expect(b.screen()[0]).toBe("4712");
  }, 30_000);

  it("a second call while one is up gets 486 Busy Here and is listed as missed", async () => {
    a.board.typeKeys("4712#"); // a digit on idle opens the dial screen
    await untilShows(b, "Incoming call");
    b.board.press("soft1"); // Answer by soft key
    await untilShows(a, /^00:0\d/);

    c.board.typeKeys("4712#");
    await untilShows(c, "Busy");
    expect(b.phone.calls.missed[0]).toMatchObject({ number: "4713", busy: true });
    expect(b.events).toContainEqual({
      event: "call",
      state: "missed",
      direction: "incoming",
      remote: "4713",
      reason: "busy",
    });
    // B's call goes on; B sees it is still up.
    expect(b.screen()[0]).toBe("4711");
    expect(b.phone.inCall).toBe(true);

    b.board.press("soft4"); // End
    await untilShows(a, "Call ended");
    await idle(a, b, c);
    expect(b.screen()[0]).toMatch(/1 missed$/);
  }, 30_000);

  it("an incoming call answered by lifting the handset; the caller hangs up with End", async () => {
    c.board.press("soft2"); // Dial
    c.board.typeKeys("4711");
    c.board.press("soft4"); // Call
    await untilShows(a, "Incoming call");
    expect(a.screen()[0]).toBe("4713");
    a.board.setHook(true);
    await untilShows(c, /^00:0\d/);
    c.board.press("soft4");
    await untilShows(a, "Call ended");
    await idle(a, c);
  }, 30_000);
});

describe("transfer, DTMF and a lost line", () => {
  it("B transfers A to C with Xfer: A shows Transferring to 4713…, C rings and answers, A–C talk, B's call ended Transferred", async () => {
    const since = a.events.length;
    a.board.typeKeys("4712#");
    await untilShows(b, "Incoming call");
    b.board.setHook(true);
    await untilShows(a, /^00:0\d/);
    await untilShows(b, /^00:0\d/);

    b.board.press("soft2"); // Xfer
    expect(b.screen()).toEqual(["To: _", "Transfer 4711", "Registered", "Back Clr        Send"]);
    b.board.typeKeys("4713#");
    // A takes the REFER and dials C; on a 20-column display the words take two lines.
    await untilShows(a, "Transferring to");
    expect(a.screen()).toEqual(["Transferring to", "4713…", "Registered", "                 End"]);
    await untilShows(c, "Incoming call");
    expect(c.screen()[0]).toBe("4711");
    await untilShows(b, "Xfer…");

    c.board.setHook(true);
    await untilShows(b, "Transferred");
    await until(a, () => a.screen()[0] === "4713" && /^00:0\d/.test(a.screen()[1]!), "A connected to C");
    await untilShows(c, /^00:0\d/);
    expect(a.screen()[3]).toBe("Hold Xfer Mute   End");
    await until(b, () => !b.phone.inCall, "B's call to end");
    expect(b.events).toContainEqual(
      expect.objectContaining({ event: "call", state: "ended", remote: "4711", reason: "transferred" }),
    );
    await idle(b);
    // A's original call ended (the fleet hears of it), and the one to C began without a call-ended screen.
    expect(callStates({ ...a, events: a.events.slice(since) })).toEqual([
      "calling",
      "ringing",
      "connected",
      "transferring",
      "ended",
      "connected",
    ]);
    expect(a.events).toContainEqual({
      event: "call",
      state: "transferring",
      direction: "outgoing",
      remote: "4712",
      to: "4713",
    });
    expect(a.events).toContainEqual(
      expect.objectContaining({ event: "call", state: "ended", remote: "4712", reason: "transferred" }),
    );
    expect(a.events.at(-1)).not.toMatchObject({ event: "call", state: "idle" });

    // DTMF on the A–C call: each key a telephone-event through the call's port, shown on line 1.
    a.board.typeKeys("12#");
    expect(a.screen()[0]).toBe("4713             12#");
    const [toB, toC] = a.services.ports.slice(-2);
    expect(toC!.digits.map((d) => d.digit)).toEqual(["1", "2", "#"]);
    expect(toB!.digits).toEqual([]);

    c.board.setHook(false);
    await untilShows(a, "Call ended");
    await idle(a, c);
  }, 30_000);

  it("a transfer to a number the pool does not know fails: NOTIFY 404, B and A stay connected", async () => {
    a.board.typeKeys("4712#");
    await untilShows(b, "Incoming call");
    b.board.setHook(true);
    await untilShows(a, /^00:0\d/);
    b.board.press("soft2");
    b.board.typeKeys("4799#");
    await untilShows(b, "Xfer failed");
    await untilShows(a, "Xfer failed");
    expect(a.screen()[0]).toBe("4712");
    expect(a.phone.inCall && b.phone.inCall).toBe(true);
    expect(b.phone.uiMode).toBe("in-call");
    b.board.press("soft4");
    await idle(a, b);
  }, 30_000);

  it("the line goes while a call is up: the call ends with BYE and the screen says Line lost", async () => {
    a.board.typeKeys("4712#");
    await untilShows(b, "Incoming call");
    b.board.setHook(true);
    await untilShows(a, /^00:0\d/);
    await b.services.account!.stop();
    await untilShows(b, "Line lost");
    await untilShows(a, "Call ended");
    expect(b.events).toContainEqual(
      expect.objectContaining({ event: "call", state: "ended", reason: "line-lost" }),
    );
    expect(b.phone.calls.hasLine).toBe(false);
    await idle(a);
  }, 30_000);
});
