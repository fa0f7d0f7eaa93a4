/**
 * The call screens' key and hook contract (keymap.ts) and soft-key layout (call-screens.ts), as
 * pure functions; the calls themselves run against the lab in calls.test.ts.
 */
import { describe, expect, it } from "vitest";
import {
  type CallScreenView,
  callBody,
  callTimer,
  endText,
  softKeys,
} from "../../firmware/phone/call-screens.ts";
import { type CallView, dialUri, numberOf, partyLabel } from "../../firmware/phone/calls.ts";
import { commandFor, hookCommand } from "../../firmware/phone/keymap.ts";

const press = (key: Parameters<typeof commandFor>[2]["key"]) => ({ key, kind: "press" as const });

describe("call keys", () => {
  it("idle: a digit opens the dial screen with it; soft2 Dial, soft3 Redial, soft4 Missed; off-hook dials", () => {
    expect(commandFor("registered", "none", press("4"))).toEqual({ kind: "open-dial", digit: "4" });
    expect(commandFor("registered", "none", press("soft2"))).toEqual({ kind: "open-dial" });
    expect(commandFor("limited", "none", press("soft3"))).toEqual({ kind: "redial" });
    expect(commandFor("registered", "none", press("soft4"))).toEqual({ kind: "open-missed" });
    expect(hookCommand("registered", "none", true)).toEqual({ kind: "open-dial" });
    expect(hookCommand("sign-in-required", "extension", true)).toBeUndefined();
  });

  it("dial: digits type, # calls, * deletes, on-hook closes", () => {
    expect(commandFor("registered", "dial", press("7"))).toEqual({ kind: "digit", digit: "7" });
    expect(commandFor("registered", "dial", press("#"))).toEqual({ kind: "place-call" });
    expect(commandFor("registered", "dial", press("*"))).toEqual({ kind: "rubout" });
    expect(commandFor("registered", "dial", { key: "*", kind: "long-press" })).toEqual({ kind: "clear" });
    expect(hookCommand("registered", "dial", false)).toEqual({ kind: "close-call-screen" });
  });

  it("incoming: off-hook or soft1 answers, soft4 rejects, on-hook does nothing", () => {
    expect(hookCommand("registered", "incoming", true)).toEqual({ kind: "answer" });
    expect(commandFor("registered", "incoming", press("soft1"))).toEqual({ kind: "answer" });
    expect(commandFor("registered", "incoming", press("soft4"))).toEqual({ kind: "reject" });
    expect(hookCommand("registered", "incoming", false)).toBeUndefined();
  });

  it("in call: soft1 hold, soft2 transfer, soft3 mute, soft4 and on-hook hang up — also while the registration moves", () => {
    for (const state of ["registered", "limited", "registering", "failed"] as const) {
      expect(commandFor(state, "in-call", press("soft1"))).toEqual({ kind: "toggle-hold" });
      expect(commandFor(state, "in-call", press("soft2"))).toEqual({ kind: "open-transfer" });
      expect(commandFor(state, "in-call", press("soft3"))).toEqual({ kind: "toggle-mute" });
      expect(commandFor(state, "in-call", press("soft4"))).toEqual({ kind: "hang-up" });
      expect(hookCommand(state, "in-call", false)).toEqual({ kind: "hang-up" });
    }
    expect(commandFor("registered", "transfer", press("#"))).toEqual({ kind: "transfer" });
    // The keypad is DTMF in a call; on the transfer screen it types the number.
    for (const key of ["0", "5", "9", "*", "#"] as const)
      expect(commandFor("registered", "in-call", press(key))).toEqual({ kind: "dtmf", digit: key });
    expect(commandFor("registered", "in-call", { key: "*", kind: "long-press" })).toBeUndefined();
    expect(commandFor("registered", "transfer", press("5"))).toEqual({ kind: "digit", digit: "5" });
    expect(commandFor("registered", "outgoing", press("5"))).toBeUndefined();
    expect(hookCommand("registered", "outgoing", false)).toEqual({ kind: "hang-up" });
  });
});

describe("call screen pieces", () => {
  it("soft keys sit over their keys, shortened to fit", () => {
    expect(softKeys(["Menu", "Dial", "Redial", "Missed"], 20)).toBe("Menu Dial Redl  Miss");
    expect(softKeys(["", "", "", "End"], 20)).toBe("                 End");
    expect(softKeys(["Menu", "Dial", "Redial", "Missed"], 32)).toBe("Menu    Dial    Redial    Missed");
  });

  it("timer, end texts, numbers and the dialled URI", () => {
    expect(callTimer(65_400)).toBe("01:05");
    expect(callTimer(3_723_000)).toBe("1:02:03");
    expect(endText({ direction: "outgoing", name: "", number: "", reason: "busy", durationMs: 0 })).toBe(
      "Busy",
    );
    expect(endText({ direction: "outgoing", name: "", number: "", reason: "line-lost", durationMs: 0 })).toBe(
      "Line lost",
    );
    expect(dialUri("4712", "sip:4711@lab.test")).toBe("sip:4712@lab.test");
    expect(numberOf("sip:4712@lab.test;user=phone")).toBe("4712");
    expect(numberOf("tel:+4930123")).toBe("+4930123");
    expect(
      partyLabel({ uri: "sip:4712@lab.test", asserted: [{ uri: "tel:+4930123", displayName: "Bob" }] }, "?"),
    ).toEqual({ name: "Bob", number: "+4930123" });
  });
});

describe("in-call screen: being transferred, DTMF typed", () => {
  const call: CallView = {
    direction: "incoming",
    phase: "connected",
    name: "4711",
    number: "4711",
    connectedMs: 65_000,
    held: false,
    heldByPeer: false,
    muted: false,
    digits: "",
  };
  const view = (c: Partial<CallView>): CallScreenView => ({
    dialText: "",
    call: { ...call, ...c },
    missed: [],
    missedIndex: 0,
    timeOf: () => "00:00",
  });

  it("Transferring to 4713… on one line where it fits, on two where it does not", () => {
    expect(callBody(view({ transferringTo: "4713" }), 32)).toEqual([
      "4711",
      "Transferring to 4713…",
      softKeys(["", "", "", "End"], 32),
    ]);
    expect(callBody(view({ transferringTo: "4713" }), 20)).toEqual([
      "Transferring to",
      "4713…",
      "                 End",
    ]);
  });

  it("the digits typed show on line 1 (the name keeps up to half the line, the newest digits the rest)", () => {
    expect(callBody(view({ digits: "123#" }), 20)[0]).toBe("4711            123#");
    expect(callBody(view({ name: "Conference Bridge", digits: "98765432101234#" }), 20)[0]).toBe(
      "Conference 32101234#",
    );
    expect(callBody(view({}), 20)[0]).toBe("4711");
  });
});
