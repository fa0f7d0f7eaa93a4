/**
 * The phone's logging (firmware/commands/phone.ts phoneLogging): the level the configuration (or
 * the fleet, live) sets decides what is written; the recent-log ring for `diagnostics` keeps info
 * and above whatever the level, redacted.
 */
import { describe, expect, it } from "vitest";
import { createOutput } from "../../firmware/commands/output.ts";
import { phoneLogging } from "../../firmware/commands/phone.ts";

function capture() {
  const lines: Array<Record<string, unknown>> = [];
  const out = createOutput(
    true,
    (l) => lines.push(JSON.parse(l) as Record<string, unknown>),
    () => {},
  );
  return { out, lines };
}

describe("phoneLogging", () => {
  it("writes records at the level and above; setLevel changes that at once", () => {
    const { out, lines } = capture();
    const l = phoneLogging(out, { verbose: false, level: "info" });
    l.logger.debug("d");
    l.logger.info("i");
    l.setLevel("error");
    l.logger.warn("w");
    l.logger.error("e");
    l.setLevel("debug");
    l.logger.debug("d2");
    expect(lines.map((x) => x["message"])).toEqual(["i", "e", "d2"]);
  });

  it("without a level (the demo) writes nothing unless --verbose", () => {
    const a = capture();
    phoneLogging(a.out, { verbose: false }).logger.error("quiet");
    expect(a.lines).toEqual([]);
    const b = capture();
    const v = phoneLogging(b.out, { verbose: true, level: "error" });
    v.logger.debug("loud");
    v.setLevel("error"); // --verbose wins
    v.logger.debug("still");
    expect(b.lines.map((x) => x["message"])).toEqual(["loud", "still"]);
  });

  it("the recent log keeps info and above, redacted, whatever is written", () => {
    const { out } = capture();
    const l = phoneLogging(out, { verbose: false, level: "error" });
    l.logger.debug("not kept");
    l.logger.info("kept", {
      pin: "918273645501",
      keyPem: "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----",
    });
    l.logger.warn("pem in text -----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----");
    const recent = l.recent.recent();
    expect(recent.map((r) => r.message)).toEqual(["kept", "pem in text [pem removed]"]);
    expect(JSON.stringify(recent)).not.toMatch(/918273645501|PRIVATE KEY|MIIB/);
  });
});
