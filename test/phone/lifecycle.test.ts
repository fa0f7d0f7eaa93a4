import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import {
  assertTransition,
  canTransition,
  PHONE_STATES,
  TRANSITIONS,
  uiAllowed,
} from "../../firmware/phone/lifecycle.ts";
import { DISCOVERY, EXT_KEYS, flush, PIN_KEYS, phoneRigs } from "./fakes.ts";

const started = phoneRigs();

describe("happy path", () => {
  it("boots, signs in with 4711/1234 and registers, one frame per step", async () => {
    const r = started();
    r.phone.start();
    await flush();
    r.keys.type("4711#1234#");
    await flush();
    r.services.registration.report({ state: "registering", registrar: "sba.lab.test:5061", primary: true });
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });

    expect(r.states()).toEqual([
      "booting",
      "discovering",
      "clock-set",
      "sign-in-required",
      "signing-in",
      "provisioned",
      "registering",
      "registering",
      "registered",
    ]);
    expect(r.lastState()).toEqual({
      event: "state",
      state: "registered",
      registrar: "sba.lab.test:5061",
      primary: true,
    });
    expect(r.frames()).toEqual([
      ["handset 0.1.0", "", "Starting", ""],
      ["Looking for servers", "", "Discovering…", ""],
      ["Time set", "Thu 2026-01-01 00:00", "Clock set", ""],
      ["Ext: _", "Enter extension", "Sign in", EXT_KEYS],
      ["Ext: 4_", "Enter extension", "Sign in", EXT_KEYS],
      ["Ext: 47_", "Enter extension", "Sign in", EXT_KEYS],
      ["Ext: 471_", "Enter extension", "Sign in", EXT_KEYS],
      ["Ext: 4711_", "Enter extension", "Sign in", EXT_KEYS],
      ["PIN: _", "PIN for 4711", "Sign in", PIN_KEYS],
      ["PIN: *_", "PIN for 4711", "Sign in", PIN_KEYS],
      ["PIN: **_", "PIN for 4711", "Sign in", PIN_KEYS],
      ["PIN: ***_", "PIN for 4711", "Sign in", PIN_KEYS],
      ["PIN: ****_", "PIN for 4711", "Sign in", PIN_KEYS],
      ["Ext: 4711", "Please wait…", "Signing in…", ""],
      ["Signed in", "sip:4711@lab.test", "Provisioned", ""],
      ["4711", "Thu 2026-01-01 00:00", "Registering…", "Menu"],
      ["4711", "Thu 2026-01-01 00:00", "Registered", "Menu"],
    ]);
    // Every frame reached the display, padded to 20×4.
    expect(r.display.frames).toHaveLength(r.frames().length);
    for (const f of r.display.frames) {
      expect(f.lines).toHaveLength(4);
      for (const l of f.lines) expect(l).toHaveLength(20);
    }
    expect(r.services.signInCalls).toEqual([
      { extension: "4711", pin: "1234", certProvUrl: DISCOVERY.certProvUrl },
    ]);
    expect(r.services.calls).toEqual(["discover", "setClock", "identity", "signIn", "register"]);
    expect(r.services.registration.d).toEqual(DISCOVERY);
    expect(r.display.backlight).toBe(true);
    expect(r.indicators.status.history).toEqual(["off", "blink", "on"]);
    expect(r.indicators.messageWaiting.state).toBe("off");
  });

  it("never shows, reports or logs the PIN", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("invalid-pin", "Extension or PIN not accepted")];
    await r.bootToSignIn();
    r.keys.type("4711#9876#");
    await flush();
    r.keys.type("1234#");
    await flush();
    expect(r.services.signInCalls.map((c) => c.pin)).toEqual(["9876", "1234"]);
    const published = JSON.stringify([r.events, r.display.frames, r.logs]);
    expect(published).not.toContain("9876");
    expect(published).not.toContain("1234");
    expect(r.logs.length).toBeGreaterThan(5);
  });

  it("registers straight away when flash holds a credential", async () => {
    const r = started();
    r.services.identityResult = {
      hasCredential: true,
      uri: "sip:4711@lab.test",
      displayName: "Ada Lovelace",
    };
    r.phone.start();
    await flush();
    expect(r.states()).toEqual(["booting", "discovering", "clock-set", "registering"]);
    r.services.registration.report({ state: "registered", registrar: "pool.lab.test:5061", primary: true });
    expect(r.display.text).toEqual(["Ada Lovelace", "Thu 2026-01-01 00:00", "Registered", "Menu"]);
  });

  it("edits the fields: * deletes, soft2 clears, soft1 on an empty PIN goes back, # needs a value", async () => {
    const r = started();
    await r.bootToSignIn();
    r.keys.type("#");
    expect(r.phone.uiMode).toBe("extension");
    r.keys.type("47*11");
    expect(r.display.text[0]).toBe("Ext: 411_");
    r.keys.press("soft2");
    expect(r.display.text[0]).toBe("Ext: _");
    r.keys.type("4711#12");
    r.keys.press("soft1");
    r.keys.press("soft1");
    expect(r.phone.uiMode).toBe("pin");
    r.keys.press("soft1");
    expect(r.phone.uiMode).toBe("extension");
    expect(r.display.text).toEqual(["Ext: 4711_", "Enter extension", "Sign in", EXT_KEYS]);
    r.keys.type("#");
    expect(r.display.text[0]).toBe("PIN: _");
    r.keys.type("#");
    expect(r.phone.state).toBe("sign-in-required");
    r.keys.type("55");
    r.keys.press("*", "long-press");
    expect(r.display.text[0]).toBe("PIN: _");
    r.keys.type("1234567890123456789");
    expect(r.phone.view().pinLength).toBe(15);
    expect(r.display.text[0]).toBe("PIN: **************_");
  });
});

describe("failure screens", () => {
  it("wrong PIN: back to the PIN screen with the attempts warning, never retried automatically", async () => {
    const r = started();
    r.services.signInScript = [
      Object.assign(new HandsetError("invalid-pin", "Extension or PIN not accepted"), {
        attemptsWarning: "You have 2 attempts remaining",
      }),
    ];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    expect(r.lastState()).toEqual({ event: "state", state: "sign-in-required", reason: "invalid-pin" });
    expect(r.display.text).toEqual(["PIN: _", "Wrong PIN", "Sign in", "2 attempts left"]);
    expect(r.events).toContainEqual({
      event: "error",
      code: "invalid-pin",
      message: "Extension or PIN not accepted",
    });
    r.clock.advance(24 * 3_600_000);
    await flush();
    expect(r.services.signInCalls).toHaveLength(1);
    // Typing clears the message; the extension is kept.
    r.keys.type("1");
    expect(r.display.text).toEqual(["PIN: *_", "PIN for 4711", "Sign in", PIN_KEYS]);
  });

  it("wrong PIN: the warning can come in the error message", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("invalid-pin", "The pin is invalid. 1 attempt remaining")];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    expect(r.display.text).toEqual(["PIN: _", "Wrong PIN", "Sign in", "1 attempt left"]);
  });

  it("locked: stays on the extension screen, says to call the admin", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("account-locked", "PIN sign-in locked")];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    expect(r.phone.uiMode).toBe("extension");
    expect(r.display.text).toEqual(["Ext: 4711_", "Locked — call admin", "Sign in", EXT_KEYS]);
    r.clock.advance(3_600_000);
    await flush();
    expect(r.services.signInCalls).toHaveLength(1);
  });

  it("locked, on a 24-column display: the full sentence", async () => {
    const r = started({ cols: 24 });
    r.services.signInScript = [new HandsetError("account-locked", "PIN sign-in locked")];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    expect(r.display.text[1]).toBe("Locked — call your admin");
  });

  it("PIN sign-in disabled: extension screen with the reason", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("pin-auth-disabled", "PIN authentication is disabled")];
    await r.bootToSignIn();
    r.keys.type("4711#1111#");
    await flush();
    expect(r.display.text).toEqual(["Ext: 4711_", "PIN sign-in disabled", "Sign in", EXT_KEYS]);
  });

  it("server unreachable: failed, then signs in again by itself after the backoff", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("server-unreachable", "connect ECONNREFUSED")];
    await r.bootToSignIn();
    r.keys.type("4711#1234#");
    await flush();
    const failed = r.lastState();
    expect(failed).toMatchObject({ state: "failed", reason: "server-unreachable" });
    const wait = failed.retryInMs ?? 0;
    expect(wait).toBeGreaterThanOrEqual(500);
    expect(wait).toBeLessThanOrEqual(1_000);
    expect(r.display.text).toEqual(["Server unreachable", "Retry in 1s", "Failed", "Menu         #=Retry"]);
    expect(r.indicators.status.state).toBe("blink");
    r.clock.advance(wait - 1);
    await flush();
    expect(r.services.signInCalls).toHaveLength(1);
    r.clock.advance(1);
    await flush();
    expect(r.services.signInCalls).toEqual([
      { extension: "4711", pin: "1234", certProvUrl: DISCOVERY.certProvUrl },
      { extension: "4711", pin: "1234", certProvUrl: DISCOVERY.certProvUrl },
    ]);
    expect(r.states().slice(-4)).toEqual(["failed", "signing-in", "provisioned", "registering"]);
  });

  it("server certificate untrusted: its own screen, retried", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("server-cert-untrusted", "self-signed certificate")];
    await r.bootToSignIn();
    r.keys.type("4711#1234#");
    await flush();
    expect(r.display.text).toEqual(["Server not trusted", "Retry in 1s", "Failed", "Menu         #=Retry"]);
    r.keys.type("#"); // retry now
    await flush();
    expect(r.phone.state).toBe("registering");
  });

  it("clock invalid: its own screen; the retry sets the clock first, then signs in", async () => {
    const r = started();
    r.services.signInScript = [new HandsetError("clock-invalid", "certificate not yet valid")];
    await r.bootToSignIn();
    r.keys.type("4711#1234#");
    await flush();
    expect(r.display.text).toEqual(["Time not set", "Retry in 1s", "Failed", "Menu         #=Retry"]);
    r.clock.advance(1_000);
    await flush();
    expect(r.services.calls).toEqual([
      "discover",
      "setClock",
      "identity",
      "signIn",
      "setClock",
      "signIn",
      "register",
    ]);
    expect(r.states().slice(-6)).toEqual([
      "failed",
      "discovering",
      "clock-set",
      "signing-in",
      "provisioned",
      "registering",
    ]);
  });

  it("SNTP unanswered: goes on with the saved floor, retries SNTP in the background", async () => {
    const r = started();
    r.services.clockScript = [
      new HandsetError("clock-unset", "no SNTP answer"),
      new HandsetError("clock-unset", "no SNTP answer"),
    ];
    r.phone.start();
    await flush();
    // Not blocked on the clock: the sign-in form shows while SNTP is retried.
    expect(r.states()).toEqual(["booting", "discovering", "sign-in-required"]);
    expect(r.events).toContainEqual({ event: "error", code: "clock-unset", message: "no SNTP answer" });
    r.clock.advance(5_000); // first background retry: 2.5–5 s
    await flush();
    expect(r.services.calls).toEqual(["discover", "setClock", "identity", "setClock"]);
    r.clock.advance(10_000); // the second: 5–10 s later, and it answers
    await flush();
    expect(r.services.calls).toEqual(["discover", "setClock", "identity", "setClock", "setClock"]);
    r.clock.advance(3_600_000); // no more once set
    await flush();
    expect(r.services.calls.filter((c) => c === "setClock")).toHaveLength(3);
    expect(r.phone.state).toBe("sign-in-required");
  });

  it("discovery failure: 'No servers found', retried with a growing backoff", async () => {
    const r = started();
    r.services.discoverScript = [
      new HandsetError("discovery-failed", "no DHCP answer"),
      new HandsetError("discovery-failed", "no DHCP answer"),
    ];
    r.phone.start();
    await flush();
    expect(r.display.text).toEqual(["No servers found", "Retry in 1s", "Failed", "Menu         #=Retry"]);
    const first = r.lastState().retryInMs ?? 0;
    r.clock.advance(first);
    await flush();
    const second = r.lastState().retryInMs ?? 0;
    expect(second).toBeGreaterThanOrEqual(1_000);
    expect(second).toBeLessThanOrEqual(2_000);
    r.clock.advance(second);
    await flush();
    expect(r.services.calls.filter((c) => c === "discover")).toHaveLength(3);
    expect(r.phone.state).toBe("sign-in-required");
    expect(r.events.filter((e) => e.event === "error")).toHaveLength(2);
  });

  it("registration failed: the phone restarts registration after its backoff", async () => {
    const r = started();
    await r.bootToRegistered();
    const first = r.services.registration;
    first.report({
      state: "failed",
      error: { code: "registrar-unreachable", message: "all registrars down" },
    });
    await flush();
    expect(first.stopped).toBe(true);
    expect(r.lastState()).toMatchObject({ state: "failed", reason: "registrar-unreachable" });
    expect(r.display.text).toEqual(["Registration failed", "Retry in 1s", "Failed", "Menu         #=Retry"]);
    r.clock.advance(1_000);
    await flush();
    expect(r.services.registrations).toHaveLength(2);
    expect(r.phone.state).toBe("registering");
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
    expect(r.phone.state).toBe("registered");
  });

  it("registration failed, the policy retrying itself: shows its delay, starts nothing", async () => {
    const r = started();
    await r.bootToRegistered();
    r.services.registration.report({
      state: "failed",
      error: { code: "timeout", message: "REGISTER timed out" },
      retryInMs: 30_000,
    });
    expect(r.display.text).toEqual(["Server timeout", "Retry in 30s", "Failed", "Menu         #=Retry"]);
    r.clock.advance(60_000);
    await flush();
    expect(r.services.registrations).toHaveLength(1);
    r.services.registration.report({ state: "registering", registrar: "pool.lab.test:5061", primary: false });
    expect(r.display.text[2]).toBe("Registering…");
  });

  it("limited: registered to the backup, status LED winks (not steady as when registered)", async () => {
    const r = started();
    await r.bootToRegistered();
    r.services.registration.report({ state: "limited", registrar: "pool.lab.test:5061", primary: false });
    expect(r.lastState()).toEqual({
      event: "state",
      state: "limited",
      registrar: "pool.lab.test:5061",
      primary: false,
    });
    expect(r.display.text).toEqual(["4711", "Thu 2026-01-01 00:00", "Limited service", "Menu"]);
    expect(r.indicators.status.state).toBe("wink");
  });

  it("revoked: back to the PIN screen for the same extension", async () => {
    const r = started();
    await r.bootToRegistered();
    r.services.registration.report({
      state: "sign-in-required",
      error: { code: "certificate-revoked", message: "certificate revoked" },
    });
    await flush();
    expect(r.services.registration.stopped).toBe(true);
    expect(r.lastState()).toEqual({
      event: "state",
      state: "sign-in-required",
      reason: "certificate-revoked",
    });
    expect(r.display.text).toEqual(["PIN: _", "Signed out by server", "Sign in", PIN_KEYS]);
    expect(r.indicators.status.state).toBe("off");
    r.keys.type("1234#");
    await flush();
    expect(r.services.signInCalls.at(-1)).toMatchObject({ extension: "4711", pin: "1234" });
  });
});

describe("menu", () => {
  it("network info, pages, back", async () => {
    const r = started();
    await r.bootToRegistered();
    r.keys.press("menu");
    expect(r.display.text).toEqual(["Menu", "> Network info   1/4", "Registered", "Back        #=Select"]);
    r.keys.type("#");
    expect(r.display.text).toEqual(["Network info", "Loading…", "Registered", "Back"]);
    await flush();
    expect(r.display.text).toEqual([
      "IP: 10.0.0.5",
      "Gateway: 10.0.0.1",
      "Registered",
      "Back             1/2",
    ]);
    r.keys.press("down");
    // Wrapped whole onto the next line, never cut at the display's width.
    expect(r.display.text).toEqual(["Registrar:", "sba.lab.test:5061", "Registered", "Back             2/2"]);
    r.keys.press("soft1");
    expect(r.phone.uiMode).toBe("menu");
    r.keys.press("back");
    expect(r.display.text).toEqual(["4711", "Thu 2026-01-01 00:00", "Registered", "Menu"]);
  });

  it("about", async () => {
    const r = started();
    await r.bootToRegistered();
    r.keys.press("soft1");
    r.keys.press("down");
    expect(r.display.text[1]).toBe("> About          2/4");
    r.keys.press("ok");
    expect(r.display.text).toEqual(["handset 0.1.0", "sip:4711@lab.test", "Registered", "Back"]);
    r.keys.type("*");
    expect(r.phone.uiMode).toBe("menu");
  });

  it("sign out asks first; * cancels, # signs out", async () => {
    const r = started();
    await r.bootToRegistered();
    r.keys.press("menu");
    r.keys.type("3");
    expect(r.display.text).toEqual(["Sign out? #=Yes *=No", "4711", "Registered", ""]);
    r.keys.type("*");
    expect(r.phone.uiMode).toBe("menu");
    expect(r.services.signOuts).toBe(0);
    r.keys.type("3#");
    await flush();
    expect(r.services.signOuts).toBe(1);
    expect(r.services.registration.stopped).toBe(true);
    expect(r.lastState()).toEqual({ event: "state", state: "sign-in-required", reason: "signed-out" });
    expect(r.display.text).toEqual(["Ext: _", "Enter extension", "Sign in", EXT_KEYS]);
    expect(r.indicators.status.state).toBe("off");
  });

  it("the menu stays open while registration changes underneath", async () => {
    const r = started();
    await r.bootToRegistered();
    r.keys.press("menu");
    r.services.registration.report({ state: "limited", registrar: "pool.lab.test:5061", primary: false });
    expect(r.display.text).toEqual([
      "Menu",
      "> Network info   1/4",
      "Limited service",
      "Back        #=Select",
    ]);
  });
});

describe("idle clock", () => {
  it("the time line moves when the minute changes, and only then", async () => {
    const r = started();
    await r.bootToRegistered();
    const before = r.display.frames.length;
    r.clock.advance(59_999);
    expect(r.display.frames.length).toBe(before);
    r.clock.advance(1);
    expect(r.display.text).toEqual(["4711", "Thu 2026-01-01 00:01", "Registered", "Menu"]);
    r.clock.advance(60 * 60_000);
    expect(r.display.text[1]).toBe("Thu 2026-01-01 01:01");
    expect(r.display.frames.length).toBe(before + 61);
  });

  it("stop() leaves no timers behind", async () => {
    const r = started();
    await r.bootToRegistered();
    await r.phone.stop();
    expect(r.clock.pendingTimers()).toBe(0);
    expect(r.services.registration.stopped).toBe(true);
  });
});

describe("transition table", () => {
  it("names exactly the DESIGN.md states and only targets states", () => {
    expect(Object.keys(TRANSITIONS).sort()).toEqual([...PHONE_STATES].sort());
    for (const targets of Object.values(TRANSITIONS))
      for (const t of targets) expect(PHONE_STATES).toContain(t);
  });

  it("throws on an illegal edge (an internal bug)", () => {
    expect(() => assertTransition("booting", "registered")).toThrow(
      /illegal phone transition booting → registered/,
    );
    expect(() => assertTransition("sign-in-required", "registering")).toThrow();
    expect(canTransition("failed", "discovering")).toBe(true);
    expect(canTransition("provisioned", "failed")).toBe(false);
  });

  it("every state can reach registered (nothing gives up for good)", () => {
    for (const s of PHONE_STATES) {
      const seen = new Set([s]);
      const queue = [s];
      while (queue.length)
        for (const t of TRANSITIONS[queue.shift()!]) if (!seen.has(t)) seen.add(t) && queue.push(t);
      expect(seen.has("registered"), s).toBe(true);
    }
  });

  it("keeps the form to sign-in-required and the menu to idle/failed", () => {
    expect(uiAllowed("sign-in-required", "pin")).toBe(true);
    expect(uiAllowed("registered", "pin")).toBe(false);
    expect(uiAllowed("failed", "menu")).toBe(true);
    expect(uiAllowed("signing-in", "menu")).toBe(false);
  });
});
