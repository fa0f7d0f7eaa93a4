/**
 * The call screens' key and hook contract (keymap.ts) and soft-key layout (call-screens.ts), as
 * pure functions; the calls themselves run against the lab in calls.test.ts.
 */
import { describe, expect, it } from "vitest";
import { callTimer, endText, softKeys } from "../../firmware/phone/call-screens.ts";
import { dialUri, numberOf, partyLabel } from "../../firmware/phone/calls.ts";
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
