import { describe, expect, it } from "vitest";
import type { Key, KeyEvent } from "../../firmware/hal/keys.ts";
import { commandFor } from "../../firmware/phone/keymap.ts";
import {
  formatClock,
  type PhoneView,
  render,
  retryText,
  STATUS_LABEL,
} from "../../firmware/phone/screens.ts";
import { appendDigit, backspace, fieldLine, masked } from "../../firmware/phone/text-entry.ts";

const base: PhoneView = {
  state: "registered",
  ui: "none",
  version: "0.1.0",
  timeText: "Thu 2026-01-01 00:00",
  name: "A very long display name indeed",
  extension: "4711",
  pinLength: 0,
  menuIndex: 0,
  infoPage: 0,
};

describe("render", () => {
  it("pads and cuts every line to the display", () => {
    expect(render(base, { cols: 20, rows: 4 }).lines).toEqual([
      "A very long display ",
      "Thu 2026-01-01 00:00",
      "Registered          ",
      "Menu                ",
    ]);
  });

  it("keeps the status line on small displays and blank rows on big ones", () => {
    expect(render(base, { cols: 16, rows: 2 }).lines).toEqual(["A very long disp", "Registered      "]);
    expect(render(base, { cols: 10, rows: 1 }).lines).toEqual(["Registered"]);
    expect(render(base, { cols: 20, rows: 6 }).lines.slice(4)).toEqual([" ".repeat(20), " ".repeat(20)]);
  });

  it("is pure: same view, same frame", () => {
    expect(render(base, { cols: 20, rows: 4 })).toEqual(render({ ...base }, { cols: 20, rows: 4 }));
  });

  it("names every state on the status line", () => {
    for (const [state, label] of Object.entries(STATUS_LABEL)) {
      const lines = render({ ...base, state: state as PhoneView["state"] }, { cols: 20, rows: 4 }).lines;
      expect(lines[2]?.trimEnd()).toBe(label);
    }
  });

  it("has a failed screen for unknown codes, by step", () => {
    const lines = render(
      { ...base, state: "failed", failure: { code: "weird", step: "sign-in" } },
      { cols: 20, rows: 4 },
    ).lines.map((l) => l.trimEnd());
    expect(lines).toEqual(["Sign-in failed", "Retrying…", "Failed", "Menu         #=Retry"]);
  });

  it("writes retry delays and the clock", () => {
    expect(retryText(29_001)).toBe("Retry in 30s");
    expect(retryText(600_000)).toBe("Retry in 10 min");
    expect(formatClock(Date.UTC(2026, 6, 4, 13, 7, 59))).toBe("Sat 2026-07-04 13:07");
    expect(formatClock(Date.UTC(2026, 6, 4, 23, 30), 60)).toBe("Sun 2026-07-05 00:30");
  });
});

describe("text entry", () => {
  it("appends digits up to the limit, deletes, masks", () => {
    expect(appendDigit("12", "3", 4)).toBe("123");
    expect(appendDigit("1234", "5", 4)).toBe("1234");
    expect(appendDigit("12", "#", 4)).toBe("12");
    expect(backspace("123")).toBe("12");
    expect(backspace("")).toBe("");
    expect(masked(4)).toBe("****");
    expect(fieldLine("Ext: ", "4711", 20)).toBe("Ext: 4711_");
    expect(fieldLine("Ext: ", "123456789012345", 16)).toBe(
      "Ext: 1234512345_".replace("1234512345", "6789012345"),
    );
  });
});

describe("key map", () => {
  it("maps keys per screen", () => {
    const press = (key: Key): KeyEvent => ({ key, kind: "press" });
    expect(commandFor("sign-in-required", "extension", press("7"))).toEqual({
      kind: "digit",
      digit: "7",
    });
    expect(commandFor("sign-in-required", "pin", press("#"))).toEqual({ kind: "confirm" });
    expect(commandFor("sign-in-required", "pin", press("soft1"))).toEqual({ kind: "rubout" });
    expect(commandFor("registered", "none", press("soft1"))).toEqual({ kind: "open-menu" });
    expect(commandFor("failed", "none", press("#"))).toEqual({ kind: "retry-now" });
    expect(commandFor("signing-in", "none", press("#"))).toBeUndefined();
    expect(commandFor("sign-in-required", "pin", { key: "1", kind: "long-press" })).toBeUndefined();
    expect(commandFor("sign-in-required", "pin", { key: "*", kind: "long-press" })).toEqual({
      kind: "clear",
    });
  });
});
