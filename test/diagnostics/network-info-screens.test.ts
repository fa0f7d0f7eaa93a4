/**
 * Issue 14, "Diagnostics an admin can reach": the Network info pages one by one (registrar in use
 * and whether it is the backup, IP, MAC, NTP server used, certificate subject, issuer, serial,
 * expiry), long values wrapped across lines and pages instead of cut at 20 characters, the menu
 * from the sign-in screen, and the factory reset with its confirmation.
 */
import { describe, expect, it } from "vitest";
import { infoPages, wrap } from "../../firmware/phone/screens.ts";
import { type Diagnostics, diagnosticsRows } from "../../firmware/telemetry/diagnostics.ts";
import { EXT_KEYS, flush, phoneRigs } from "../phone/fakes.ts";

const started = phoneRigs();

/** What the diagnostics of a phone registered to its backup look like (firmware/telemetry). */
const DIAG: Diagnostics = {
  version: "0.1.0",
  user: "sip:4711@lab.test",
  registrar: {
    inUse: "pool.lab.test:5061",
    backup: true,
    from: "registration",
    primary: "sba.lab.test:5061",
    discovered: [],
  },
  network: { interface: "eth0", ip: "10.0.0.5", mac: "b8:27:eb:12:34:56" },
  ntp: { server: "ntp.lab.test:123", set: true, discovered: [] },
  certificate: {
    subject: "CN=4711@lab.test",
    issuer: "CN=Handset Lab Root CA",
    serial: "4F2A9C1B7E0D3A5566778899AABBCCDD",
    notBefore: "2026-01-01T00:00:00.000Z",
    notAfter: "2026-07-01T12:00:00.000Z",
    sha256: "AA:BB",
  },
  trustedRoots: [],
};

describe("Network info pages (20 × 4)", () => {
  it("shows each diagnostic on its page, whole, and pages with up/down", async () => {
    const r = started();
    r.services.info = diagnosticsRows(DIAG);
    await r.bootToRegistered();
    r.services.registration.report({ state: "limited", registrar: "pool.lab.test:5061", primary: false });
    r.keys.press("menu");
    r.keys.press("#");
    await flush();
    const pages: string[][] = [r.display.text];
    for (let i = 0; i < 11; i++) {
      r.keys.press("down");
      pages.push(r.display.text);
    }
    const L = "Limited service";
    expect(pages).toEqual([
      ["Registrar (backup):", "pool.lab.test:5061", L, "Back            1/12"],
      ["User:", "sip:4711@lab.test", L, "Back            2/12"],
      ["IP: 10.0.0.5", "", L, "Back            3/12"],
      ["MAC:", "b8:27:eb:12:34:56", L, "Back            4/12"],
      ["NTP:", "ntp.lab.test:123", L, "Back            5/12"],
      ["Cert subject:", "CN=4711@lab.test", L, "Back            6/12"],
      // The issuer is 21 characters: wrapped at a word onto the next page, never cut.
      ["Cert issuer:", "CN=Handset Lab Root", L, "Back            7/12"],
      ["CA", "", L, "Back            8/12"],
      // The serial (32 hex digits) goes on over the next page.
      ["Cert serial:", "4F2A9C1B7E0D3A556677", L, "Back            9/12"],
      ["8899AABBCCDD", "", L, "Back           10/12"],
      ["Cert expires:", "2026-07-01 12:00:00Z", L, "Back           11/12"],
      ["Primary:", "sba.lab.test:5061", L, "Back           12/12"],
    ]);
    // Down at the last page stays there; up goes back one.
    r.keys.press("down");
    expect(r.display.text[3]).toBe("Back           12/12");
    r.keys.press("up");
    expect(r.display.text[3]).toBe("Back           11/12");
  });

  it("the page list itself, for a narrower display too", () => {
    const rows = diagnosticsRows(DIAG);
    expect(infoPages(rows, 20)).toEqual([
      ["Registrar (backup):", "pool.lab.test:5061"],
      ["User:", "sip:4711@lab.test"],
      ["IP: 10.0.0.5"],
      ["MAC:", "b8:27:eb:12:34:56"],
      ["NTP:", "ntp.lab.test:123"],
      ["Cert subject:", "CN=4711@lab.test"],
      ["Cert issuer:", "CN=Handset Lab Root"],
      ["CA"],
      ["Cert serial:", "4F2A9C1B7E0D3A556677"],
      ["8899AABBCCDD"],
      ["Cert expires:", "2026-07-01 12:00:00Z"],
      ["Primary:", "sba.lab.test:5061"],
    ]);
    for (const page of infoPages(rows, 16))
      for (const line of page) expect(line.length).toBeLessThanOrEqual(16);
    expect(wrap("4F2A9C1B7E0D3A5566778899AABBCCDD", 16)).toEqual(["4F2A9C1B7E0D3A55", "66778899AABBCCDD"]);
  });
});

describe("the menu from the sign-in screen", () => {
  it("Menu opens Network info and About before anyone signed in; Back returns to the form", async () => {
    const r = started();
    await r.bootToSignIn();
    r.keys.type("47");
    r.keys.press("menu");
    expect(r.phone.state).toBe("sign-in-required");
    expect(r.display.text).toEqual(["Menu", "> Network info   1/3", "Sign in", "Back        #=Select"]);
    r.keys.press("#");
    await flush();
    expect(r.services.calls).toContain("networkInfo");
    expect(r.display.text).toEqual(["IP: 10.0.0.5", "Gateway: 10.0.0.1", "Sign in", "Back             1/2"]);
    r.keys.press("back");
    r.keys.press("down");
    expect(r.display.text[1]).toBe("> About          2/3");
    r.keys.press("ok");
    expect(r.display.text).toEqual(["handset 0.1.0", "Not signed in", "Sign in", "Back"]);
    r.keys.press("back");
    r.keys.press("down");
    // No "Sign out" where nobody is signed in.
    expect(r.display.text[1]).toBe("> Factory reset  3/3");
    r.keys.press("back");
    expect(r.phone.uiMode).toBe("extension");
    expect(r.display.text).toEqual(["Ext: 47_", "Enter extension", "Sign in", EXT_KEYS]);
  });

  it("from the PIN screen too, and the typed PIN is dropped", async () => {
    const r = started();
    await r.bootToSignIn();
    r.keys.type("4711#12");
    r.keys.press("menu");
    expect(r.phone.uiMode).toBe("menu");
    expect(r.phone.view().pinLength).toBe(0);
    r.keys.press("soft1");
    expect(r.display.text[0]).toBe("Ext: 4711_");
  });
});

describe("factory reset", () => {
  it("asks first: * cancels; # wipes flash and starts again from discovery", async () => {
    const r = started();
    await r.bootToRegistered();
    r.keys.press("menu");
    r.keys.type("4");
    expect(r.phone.uiMode).toBe("confirm-reset");
    expect(r.display.text).toEqual([
      "Factory reset?",
      "Erases sign-in, cert",
      "Registered",
      "*=No           #=Yes",
    ]);
    r.keys.press("*");
    expect(r.phone.uiMode).toBe("menu");
    expect(r.services.resets).toBe(0);
    r.keys.type("4#");
    await flush();
    expect(r.services.resets).toBe(1);
    expect(r.services.registration.stopped).toBe(true);
    expect(r.events).toContainEqual({ event: "state", state: "discovering", reason: "factory-reset" });
    // Discovery again, then (the fake store being empty) the sign-in screen, nothing remembered.
    expect(r.services.calls.slice(r.services.calls.indexOf("factoryReset"))).toEqual([
      "factoryReset",
      "discover",
      "setClock",
      "identity",
    ]);
    expect(r.phone.state).toBe("sign-in-required");
    expect(r.display.text).toEqual(["Ext: _", "Enter extension", "Sign in", EXT_KEYS]);
  });

  it("from the sign-in screen", async () => {
    const r = started();
    await r.bootToSignIn();
    r.keys.press("menu");
    r.keys.type("3");
    expect(r.phone.uiMode).toBe("confirm-reset");
    r.keys.press("ok");
    await flush();
    expect(r.services.resets).toBe(1);
    expect(r.states().slice(-3)).toEqual(["discovering", "clock-set", "sign-in-required"]);
  });
});
