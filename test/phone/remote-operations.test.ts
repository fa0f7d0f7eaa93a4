/**
 * The phone's operations the fleet calls (firmware/commands/fleet-link.ts): whether it is idle
 * (disruptive commands wait for that), sign-out without the menu, and reprovisioning (a new
 * certificate, then a fresh registration with it; a failure keeps the old one registered).
 */
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import { flush, phoneRigs } from "./fakes.ts";

const started = phoneRigs();

describe("remote operations of the phone", () => {
  it("is idle when registered or waiting at an empty form; not while signing in or while someone types", async () => {
    const r = started();
    await r.bootToSignIn();
    expect(r.phone.state).toBe("sign-in-required");
    expect(r.phone.isIdle()).toBe(true);
    r.keys.type("47");
    await flush();
    expect(r.phone.isIdle()).toBe(false); // mid-way through the extension
    r.keys.type("11#1234#");
    await flush();
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
    await flush();
    expect(r.phone.state).toBe("registered");
    expect(r.phone.isIdle()).toBe(true);
  });

  it("is not idle while the sign-in is in flight", async () => {
    const r = started();
    let release!: () => void;
    r.services.signIn = (o) => {
      r.services.calls.push("signIn");
      return new Promise((resolve) => {
        release = () => resolve({ uri: `sip:${o.extension}@lab.test` });
      });
    };
    await r.bootToSignIn();
    r.keys.type("4711#1234#");
    await flush();
    expect(r.phone.state).toBe("signing-in");
    expect(r.phone.isIdle()).toBe(false);
    release();
    await flush();
    expect(r.phone.isIdle()).toBe(true);
  });

  it("requestSignOut: registration stopped, certificate wiped, back at the sign-in form", async () => {
    const r = started();
    await r.bootToRegistered();
    await flush();
    await r.phone.requestSignOut();
    expect(r.services.signOuts).toBe(1);
    expect(r.services.registration.stopped).toBe(true);
    expect(r.lastState()).toMatchObject({ state: "sign-in-required", reason: "signed-out" });
    await expect(r.phone.requestSignOut()).rejects.toMatchObject({ code: "not-signed-in" });
  });

  it("requestReprovision: a new certificate, then a new registration; a failure leaves the old one running", async () => {
    const r = started();
    await r.bootToRegistered();
    await flush();
    const first = r.services.registration;
    const out = await r.phone.requestReprovision();
    expect(out.notAfter).toBeGreaterThan(0);
    expect(first.stopped).toBe(true);
    expect(r.services.registrations).toHaveLength(2);
    expect(r.lastState()).toMatchObject({ state: "registering", reason: "reprovisioned" });
    r.services.registration.report({ state: "registered", registrar: "sba.lab.test:5061", primary: true });
    await flush();
    const second = r.services.registration;
    r.services.reprovisionScript.push(new HandsetError("server-unreachable", "pool unreachable"));
    await expect(r.phone.requestReprovision()).rejects.toMatchObject({ code: "server-unreachable" });
    expect(second.stopped).toBe(false);
    expect(r.phone.state).toBe("registered");
  });
});
