/**
 * Issue 14, the phone's own screens an admin reads: the failed screen's countdown, the status LED
 * of limited service, the lockout screen, Backspace on the PIN screen, attempts left on "Wrong PIN".
 */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { render } from "../../firmware/phone/screens.ts";
import { ProvisioningError } from "../../firmware/provisioning/errors.ts";
import { pinFailure } from "../../firmware/provisioning/web-ticket.ts";
import { DISCOVERY, EXT_KEYS, flush, PIN_KEYS, phoneRigs } from "../phone/fakes.ts";

const started = phoneRigs();

describe("the failed screen counts down", () => {
  it("'Retry in 36s' goes 35s, 34s … on the clock, one timer a second, only while it shows", async () => {
    const r = started();
    await r.bootToRegistered();
    r.services.registration.report({
      state: "failed",
      error: { code: "timeout", message: "REGISTER timed out" },
      retryInMs: 36_000,
    });
    expect(r.display.text[1]).toBe("Retry in 36s");
    const timers = r.clock.pendingTimers();
    r.clock.advance(999);
    expect(r.display.text[1]).toBe("Retry in 36s");
    r.clock.advance(1);
    expect(r.display.text[1]).toBe("Retry in 35s");
    r.clock.advance(10_000);
    expect(r.display.text[1]).toBe("Retry in 25s");
    expect(r.clock.pendingTimers()).toBe(timers);
    // The menu over it: no countdown timer runs; back on the screen it shows the time left.
    r.keys.press("menu");
    expect(r.clock.pendingTimers()).toBe(timers - 1);
    r.clock.advance(5_000);
    r.keys.press("back");
    expect(r.display.text[1]).toBe("Retry in 20s");
    expect(r.clock.pendingTimers()).toBe(timers);
    // Leaving `failed` ends it.
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
    expect(r.clock.pendingTimers()).toBe(timers - 1);
  });

  it("counts down to the phone's own retry after a failure", async () => {
    const r = started();
    const fail = new HandsetError("discovery-failed", "no DHCP answer");
    r.services.discoverScript = [fail, fail, fail, fail];
    r.phone.start();
    await flush();
    // The backoff grows (1 s, 2 s, 4 s … in this rig) until the wait is a few seconds.
    let s = Number(/Retry in (\d+)s/.exec(r.display.text[1]!)?.[1]);
    for (let i = 0; i < 4 && s < 3; i++) {
      r.clock.advance(s * 1000);
      await flush();
      s = Number(/Retry in (\d+)s/.exec(r.display.text[1]!)?.[1]);
    }
    expect(r.display.text[0]).toBe("No servers found");
    expect(s).toBeGreaterThan(2);
    r.clock.advance(1_000);
    expect(r.display.text[1]).toBe(`Retry in ${s - 1}s`);
  });
});

describe("status LED", () => {
  it("steady when registered, winking when limited, blinking while registering or failed", async () => {
    const r = started();
    await r.bootToRegistered();
    expect(r.indicators.status.state).toBe("on");
    r.services.registration.report({ state: "limited", registrar: "pool.lab.test:5061", primary: false });
    expect(r.indicators.status.state).toBe("wink");
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
    expect(r.indicators.status.state).toBe("on");
    r.services.registration.report({ state: "registering", registrar: "sba.lab.test:5061" });
    expect(r.indicators.status.state).toBe("blink");
    expect(new Set(["on", "wink", "blink"]).size).toBe(3);
  });
});

describe("the lockout screen fits the display", () => {
  /** The lab's (and a pool's) lockout answer: the server's text names the lock, not attempts. */
  const locked = () =>
    pinFailure({
      status: 401,
      diagnostic: { id: 28004, fields: { reason: "The PIN is locked out." } },
      warnings: [{ code: 120, agent: "pool.lab.test", text: "PinLockedOut" }],
      reason: "The PIN is locked out.",
      basicChallenge: true,
    });

  it.each([20, 16, 24])("on %i columns every line is whole (no sentence cut off)", async (cols) => {
    const r = started({ cols });
    const err = locked();
    expect(err.code).toBe("account-locked");
    r.services.signInScript = [err];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    const lines = r.display.text;
    expect(lines[1]).toBe(
      { 24: "Locked — call your admin", 20: "Locked — call admin", 16: "Locked—ask admin" }[cols],
    );
    for (const l of lines) expect(l.length).toBeLessThanOrEqual(cols);
    // Line 4 keeps the key hints instead of a cut-off "The PIN is locked ou".
    expect(lines[3]).not.toMatch(/locked/i);
    if (cols === 20) expect(lines).toEqual(["Ext: 4711_", "Locked — call admin", "Sign in", EXT_KEYS]);
  });

  it("a server text that names attempts left is shown, shortened to fit", () => {
    const view = {
      state: "sign-in-required" as const,
      ui: "extension" as const,
      version: "0.1.0",
      timeText: "",
      extension: "4711",
      pinLength: 0,
      menuIndex: 0,
      infoPage: 0,
      notice: { code: "invalid-pin", attemptsWarning: "Your account will be locked after 1 more attempt" },
    };
    expect(render(view, { cols: 20, rows: 4 }).lines[3]?.trimEnd()).toBe("1 attempt left");
    expect(render(view, { cols: 10, rows: 4 }).lines[3]?.trimEnd()).toBe("1 left");
  });
});

describe("Backspace on the PIN screen", () => {
  it("deletes one digit, as on the extension screen (back key, soft1, *, left)", async () => {
    const r = started();
    await r.bootToSignIn();
    r.keys.type("4711#1234");
    expect(r.display.text[0]).toBe("PIN: ****_");
    r.keys.press("back"); // the terminal's Backspace and the web page's Back
    expect(r.display.text[0]).toBe("PIN: ***_");
    r.keys.press("soft1");
    expect(r.display.text[0]).toBe("PIN: **_");
    r.keys.press("*");
    r.keys.press("left");
    expect(r.phone.uiMode).toBe("pin");
    expect(r.display.text).toEqual(["PIN: _", "PIN for 4711", "Sign in", PIN_KEYS]);
    // With no digit left, Back goes back to the extension (kept).
    r.keys.press("back");
    expect(r.phone.uiMode).toBe("extension");
    expect(r.display.text).toEqual(["Ext: 4711_", "Enter extension", "Sign in", EXT_KEYS]);
    r.keys.type("#12#");
    await flush();
    expect(r.services.signInCalls.at(-1)).toMatchObject({ extension: "4711", pin: "12" });
  });
});

describe("'Wrong PIN' says how many attempts are left when the pool says so", () => {
  const wrongPin = async (err: HandsetError) => {
    const r = started();
    r.services.signInScript = [err];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    return r.display.text;
  };

  it("from the pool's reason text (X-Ms-diagnostics reason), through pinFailure", async () => {
    const err = pinFailure({
      status: 401,
      diagnostic: { id: 28003, fields: { reason: "The pin is invalid. 2 attempts remaining." } },
      warnings: [{ code: 120, agent: "pool.lab.test", text: "InvalidPin" }],
      reason: "The pin is invalid. 2 attempts remaining.",
      basicChallenge: true,
    });
    expect(err).toBeInstanceOf(ProvisioningError);
    expect(await wrongPin(err)).toEqual(["PIN: _", "Wrong PIN", "Sign in", "2 attempts left"]);
  });

  it("a bare count, or the count in words", async () => {
    const bare = Object.assign(new HandsetError("invalid-pin", "Extension or PIN not accepted"), {
      attemptsWarning: "3",
    });
    expect((await wrongPin(bare))[3]).toBe("3 attempts left");
    const words = Object.assign(new HandsetError("invalid-pin", "Extension or PIN not accepted"), {
      attemptsWarning: "One more attempt before the PIN is locked",
    });
    expect((await wrongPin(words))[3]).toBe("1 attempt left");
  });

  it("says nothing about attempts when the pool does not (the key hints stay)", async () => {
    const err = pinFailure({
      status: 401,
      diagnostic: { id: 28003, fields: { reason: "The pin is invalid." } },
      warnings: [{ code: 120, agent: "pool.lab.test", text: "InvalidPin" }],
      reason: "The pin is invalid.",
      basicChallenge: true,
    });
    expect(await wrongPin(err)).toEqual(["PIN: _", "Wrong PIN", "Sign in", PIN_KEYS]);
    expect(DISCOVERY.registrars).toHaveLength(1);
  });
});
