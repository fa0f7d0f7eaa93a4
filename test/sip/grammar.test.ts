/** SIP grammar helpers: URI, name-addr, Via, CSeq. */
import { describe, expect, it } from "vitest";
import { SipParseError } from "../../firmware/core/errors.ts";
import { formatCSeq, parseCSeq } from "../../firmware/sip/grammar/cseq.ts";
import {
  formatNameAddr,
  parseNameAddr,
  parseNameAddrList,
  tagOf,
} from "../../firmware/sip/grammar/name-addr.ts";
import { formatUri, isUri, parseUri } from "../../firmware/sip/grammar/uri.ts";
import { parseVia, parseViaList } from "../../firmware/sip/grammar/via.ts";

const typed = (fn: () => unknown): SipParseError => {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(SipParseError);
    return err as SipParseError;
  }
  throw new Error("expected a SipParseError");
};

describe("parseUri / formatUri", () => {
  it("parses a full SIP URI", () => {
    const u = parseUri(
      "SIPS:alice:secret@Example.COM:5061;Transport=TLS;lr;maddr=%31.2.3.4?subject=hi%20there&priority=urgent",
    );
    expect(u).toMatchObject({
      scheme: "sips",
      user: "alice",
      password: "secret",
      host: "Example.COM",
      port: 5061,
    });
    expect([...u.params]).toEqual([
      ["transport", "TLS"],
      ["lr", null],
      ["maddr", "1.2.3.4"],
    ]);
    expect([...u.headers]).toEqual([
      ["subject", "hi there"],
      ["priority", "urgent"],
    ]);
    expect(u.raw).toContain("%31");
    expect(formatUri(u)).toBe(
      "sips:alice:secret@Example.COM:5061;transport=TLS;lr;maddr=1.2.3.4?subject=hi%20there&priority=urgent",
    );
  });

  it("handles IPv6 references, hosts without user, tel and other schemes", () => {
    expect(parseUri("sip:[2001:db8::1]:5060;transport=tcp")).toMatchObject({
      host: "[2001:db8::1]",
      port: 5060,
    });
    expect(parseUri("sip:[::ffff:192.0.2.1]").host).toBe("[::ffff:192.0.2.1]");
    expect(parseUri("sip:lab.test").user).toBeUndefined();
    expect(parseUri("tel:+1-201-555-0123;phone-context=example.com")).toMatchObject({
      scheme: "tel",
      user: "+1-201-555-0123",
      host: "",
    });
    expect(formatUri(parseUri("tel:+1-201-555-0123;phone-context=example.com"))).toBe(
      "tel:+1-201-555-0123;phone-context=example.com",
    );
    expect(parseUri("urn:uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6")).toMatchObject({
      scheme: "urn",
      opaque: "uuid:f81d4fae-7dec-11d0-a765-00a0c91e6bf6",
    });
  });

  it("re-escapes what needs escaping", () => {
    const u = parseUri("sip:user;par=u%40example.net@example.com");
    expect(u.user).toBe("user;par=u@example.net");
    expect(formatUri(u)).toBe("sip:user;par=u%40example.net@example.com");
    expect(formatUri({ ...parseUri("sip:x@h"), user: "a b@ü" })).toBe("sip:a%20b%40%C3%BC@h");
    for (const s of ["sip:4711@lab.test;transport=tls", "sip:[2001:db8::10]:5070", "sips:a:b@c.d;x=y?h=v"]) {
      expect(formatUri(parseUri(s))).toBe(s);
    }
  });

  it("rejects malformed URIs with a typed error", () => {
    for (const bad of [
      "",
      "sip:",
      "nocolon",
      "1sip:a@b",
      "<sip:a@b>",
      "sip:a b@c",
      "sip:@host",
      "sip:a@",
      "sip:a@[2001:db8::1",
      "sip:a@[zz::1]",
      "sip:a@b:port",
      "sip:a@b:70000",
      "sip:2001:db8::10",
      "sip:a@b;;lr",
      "sip:a@b;x=",
      "sip:a@b?",
      "sip:a@b?noequals",
      "sip:a%zz@b",
      "sip:a@-b.com",
      "sip:a@b..com",
      "tel:abc!",
    ]) {
      expect(typed(() => parseUri(bad)).code, bad).toBe("sip-parse");
      expect(isUri(bad)).toBe(false);
    }
  });
});

describe("parseNameAddr", () => {
  it("parses name-addr and addr-spec forms", () => {
    expect(parseNameAddr('"Alice \\"A\\"" <sip:alice@lab.test>;tag=abc;expires=60')).toMatchObject({
      display: 'Alice "A"',
      uri: "sip:alice@lab.test",
      bracketed: true,
    });
    const spec = parseNameAddr("sip:bob@lab.test;tag=x ; q=0.5");
    expect(spec).toMatchObject({ uri: "sip:bob@lab.test", bracketed: false });
    expect(spec.display).toBeUndefined();
    expect([...spec.params]).toEqual([
      ["tag", "x"],
      ["q", "0.5"],
    ]);
    expect(parseNameAddr("Bob Smith <sip:bob@lab.test>").display).toBe("Bob Smith");
    expect(parseNameAddr('"" <sip:a@b>').display).toBe("");
    const inst = parseNameAddr('<sip:4711@10.0.0.2>;+sip.instance="<urn:uuid:1>";reg-id=1');
    expect(inst.params.get("+sip.instance")).toBe('"<urn:uuid:1>"');
    expect(parseNameAddr("<sip:a@[2001:db8::1]>;received=[2001:db8::2]").params.get("received")).toBe(
      "[2001:db8::2]",
    );
  });

  it("rejects malformed addresses", () => {
    for (const bad of [
      "",
      '"unterminated <sip:a@b>',
      "<sip:a@b",
      "< sip:a@b>",
      "Bell, Alexander <sip:a@b>",
      "sip:a@b?Route=x",
      "sip:a@b, sip:c@d",
      "<sip:a@b> junk",
      "<sip:a@b>;;",
      "<sip:a@b>;=x",
      '"a" sip:a@b',
      "<>",
      "<nocolon>",
      "sip:a@b>",
    ]) {
      typed(() => parseNameAddr(bad));
    }
  });

  it("lists and tags", () => {
    expect(parseNameAddrList('"A, B" <sip:a@b>, <sip:c@d>;q=1').map((a) => a.uri)).toEqual([
      "sip:a@b",
      "sip:c@d",
    ]);
    typed(() => parseNameAddrList("<sip:a@b>,,<sip:c@d>"));
    expect(tagOf("<sip:a@b>;tag=42")).toBe("42");
    expect(tagOf("<sip:a@b>")).toBeUndefined();
    expect(tagOf('"broken <sip:a@b>;tag=42')).toBeUndefined();
    const text = formatNameAddr({
      display: 'Desk "4711"',
      uri: "sip:4711@lab.test",
      params: new Map([["tag", "9"]]),
    });
    expect(text).toBe('"Desk \\"4711\\"" <sip:4711@lab.test>;tag=9');
    expect(parseNameAddr(text).display).toBe('Desk "4711"');
  });
});

describe("parseVia", () => {
  it("parses sent-protocol, sent-by and parameters", () => {
    const v = parseVia("SIP/2.0/tls 10.0.0.2:5061;branch=z9hG4bK776;rport;received=192.0.2.9");
    expect(v).toMatchObject({ protocol: "SIP/2.0", transport: "TLS", host: "10.0.0.2", port: 5061 });
    expect([...v.params]).toEqual([
      ["branch", "z9hG4bK776"],
      ["rport", null],
      ["received", "192.0.2.9"],
    ]);
    expect(parseVia("SIP / 2.0 / UDP  [2001:db8::9:1] : 6050 ; branch = z9hG4bK1")).toMatchObject({
      host: "[2001:db8::9:1]",
      port: 6050,
    });
    expect(parseViaList("SIP/2.0/UDP a, SIP/2.0/TCP b:5").map((x) => [x.host, x.port])).toEqual([
      ["a", undefined],
      ["b", 5],
    ]);
  });

  it("rejects malformed Via", () => {
    for (const bad of [
      "",
      "SIP/2.0 host",
      "SIP/2.0/UDP",
      "SIP/2.0/UDPhost",
      "SIP/2.0/UDP host;;",
      "SIP/2.0/UDP host:x",
      "SIP/2.0/UDP ho st",
      "SIP/2.0/UDP [::1",
    ]) {
      typed(() => parseVia(bad));
    }
    typed(() => parseViaList("SIP/2.0/UDP 192.0.2.15;;,;,,"));
  });
});

describe("parseCSeq", () => {
  it("parses and bounds the number to 32 bits", () => {
    expect(parseCSeq("0009\t INVITE")).toEqual({ seq: 9, method: "INVITE" });
    expect(parseCSeq("4294967295 REGISTER").seq).toBe(4294967295);
    expect(formatCSeq({ seq: 2, method: "BYE" })).toBe("2 BYE");
    for (const bad of [
      "4294967296 INVITE",
      "-1 INVITE",
      "1",
      "INVITE",
      "1 INV ITE",
      "1 IN<VITE",
      "36893488147419103232 REGISTER",
    ]) {
      typed(() => parseCSeq(bad));
    }
  });
});
