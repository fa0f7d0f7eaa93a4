import { describe, expect, it } from "vitest";
import { AuthError } from "../../firmware/core/errors.ts";
import { SeededRandom } from "../../firmware/core/random.ts";
import { findChallenge, formatAuthHeader, parseAuthHeader } from "../../firmware/sip/grammar/auth-params.ts";

const code = (c: string) => expect.objectContaining({ code: c });

describe("parseAuthHeader", () => {
  it("parses a TLS-DSK challenge with quoted and token values", () => {
    const c = parseAuthHeader(
      'TLS-DSK realm="SIP Communications Service", targetname="fe01.contoso.test", version=4, sts-uri="https://fe01.contoso.test:443/CertProv/CertProvisioningService.svc"',
    );
    expect(c.scheme).toBe("TLS-DSK");
    expect(Object.fromEntries(c.params)).toEqual({
      realm: "SIP Communications Service",
      targetname: "fe01.contoso.test",
      version: "4",
      "sts-uri": "https://fe01.contoso.test:443/CertProv/CertProvisioningService.svc",
    });
  });

  it("keeps commas and equals signs inside quotes, and base64 padding", () => {
    const c = parseAuthHeader('TLS-DSK opaque="A,B", gssapi-data="FgMBADUB+/==", realm="x, y = z"');
    expect(c.params.get("opaque")).toBe("A,B");
    expect(c.params.get("gssapi-data")).toBe("FgMBADUB+/==");
    expect(c.params.get("realm")).toBe("x, y = z");
  });

  it("resolves escaped quotes and backslashes", () => {
    const c = parseAuthHeader('NTLM realm="say \\"hi\\" \\\\ there", qop="auth"');
    expect(c.params.get("realm")).toBe('say "hi" \\ there');
    expect(c.params.get("qop")).toBe("auth");
  });

  it("lower-cases parameter names, keeps value case and the scheme as received", () => {
    const c = parseAuthHeader('tls-dsk REALM="Mixed Case", SRand="1D9666D9", Version=4');
    expect(c.scheme).toBe("tls-dsk");
    expect(c.params.get("realm")).toBe("Mixed Case");
    expect(c.params.get("srand")).toBe("1D9666D9");
    expect(c.params.get("version")).toBe("4");
  });

  it("tolerates odd whitespace, tabs and empty list elements", () => {
    const c = parseAuthHeader('  TLS-DSK\trealm = "r" ,, targetname="t" ,version=4 , ');
    expect(Object.fromEntries(c.params)).toEqual({ realm: "r", targetname: "t", version: "4" });
  });

  it("accepts a bare scheme and a token68 credential", () => {
    expect(parseAuthHeader("Kerberos").params.size).toBe(0);
    const n = parseAuthHeader("Negotiate YIIBbgYGKwYBBQUCoIIBYjCCAV6g==");
    expect(n.scheme).toBe("Negotiate");
    expect(n.token68).toBe("YIIBbgYGKwYBBQUCoIIBYjCCAV6g==");
  });

  it.each([
    "",
    "   ",
    '"TLS-DSK" realm="x"',
    'TLS-DSK realm="unterminated',
    "TLS-DSK realm=, version=4",
    'TLS-DSK realm="a" targetname="b"',
    'TLS-DSK ="x"',
    'TLS-DSK realm "x"',
    'TLS-DSK realm="a\\',
    'TLS-DSK, realm="x"',
    'TLS-DSK realm="a\r\nInjected: yes"',
    "TLS-DSK realm=a b",
  ])("rejects %j with auth-header-malformed", (v) => {
    expect(() => parseAuthHeader(v)).toThrow(AuthError);
    expect(() => parseAuthHeader(v)).toThrow(code("auth-header-malformed"));
  });
});

describe("formatAuthHeader", () => {
  it("quotes by default, leaves tokens unquoted when asked, escapes", () => {
    expect(
      formatAuthHeader("TLS-DSK", [
        ["qop", "auth"],
        ["realm", "SIP Communications Service"],
        ["version", "4", false],
        ["odd", 'a"b\\c'],
      ]),
    ).toBe('TLS-DSK qop="auth", realm="SIP Communications Service", version=4, odd="a\\"b\\\\c"');
    expect(formatAuthHeader("Kerberos", [])).toBe("Kerberos");
  });

  it("refuses header injection and bad tokens", () => {
    expect(() => formatAuthHeader("TLS-DSK", [["realm", "a\r\nX: y"]])).toThrow(
      code("auth-header-malformed"),
    );
    expect(() => formatAuthHeader("TLS-DSK", [["version", "4 5", false]])).toThrow(
      code("auth-header-malformed"),
    );
    expect(() => formatAuthHeader("TLS DSK", [])).toThrow(code("auth-header-malformed"));
    expect(() => formatAuthHeader("TLS-DSK", [["re alm", "x"]])).toThrow(code("auth-header-malformed"));
  });

  it("round-trips through parseAuthHeader", () => {
    const v = formatAuthHeader("TLS-DSK", [
      ["opaque", "F755045D"],
      ["realm", 'quote " comma , backslash \\'],
      ["version", "4", false],
    ]);
    expect(Object.fromEntries(parseAuthHeader(v).params)).toEqual({
      opaque: "F755045D",
      realm: 'quote " comma , backslash \\',
      version: "4",
    });
  });
});

describe("findChallenge", () => {
  const values = [
    'NTLM realm="SIP Communications Service", targetname="fe01.contoso.test", version=4',
    'Kerberos realm="SIP Communications Service", targetname="sip/fe01.contoso.test", version=4',
    'TLS-DSK realm="SIP Communications Service", targetname="fe01.contoso.test", version=4, sts-uri="https://x/CertProv"',
  ];

  it("picks the header with the requested scheme, case-insensitively", () => {
    expect(findChallenge(values, "tls-dsk")?.params.get("sts-uri")).toBe("https://x/CertProv");
    expect(findChallenge(values, "Kerberos")?.params.get("targetname")).toBe("sip/fe01.contoso.test");
    expect(findChallenge(values, "Digest")).toBeUndefined();
    expect(findChallenge([], "TLS-DSK")).toBeUndefined();
  });

  it("does not confuse a scheme with a prefix of another", () => {
    expect(findChallenge(['TLS-DSKX realm="a"', 'TLS-DSK realm="b"'], "TLS-DSK")?.params.get("realm")).toBe(
      "b",
    );
  });

  it("skips malformed headers of other schemes, reports a malformed wanted one", () => {
    expect(findChallenge(['NTLM realm="oops', values[2] as string], "TLS-DSK")?.scheme).toBe("TLS-DSK");
    expect(() => findChallenge(['TLS-DSK realm="oops'], "TLS-DSK")).toThrow(code("auth-header-malformed"));
  });
});

describe("fuzz: only AuthError ever escapes", () => {
  const ALPHABET = [
    ..."abcXYZ019-_.~+/=",
    '"',
    '"',
    "\\",
    ",",
    ",",
    " ",
    " ",
    "\t",
    "=",
    "=",
    "<",
    ">",
    ";",
    "\r",
    "\n",
    "\0",
    "é",
    "€",
    "\u{1F600}",
    "\uD800",
  ];
  const SEEDS = [
    'TLS-DSK realm="SIP Communications Service", targetname="fe01", version=4',
    'Authentication-Info: TLS-DSK qop="auth", opaque="F755045D", srand="1D9666D9", snum="17", rspauth="3359"',
    'NTLM realm="a\\"b", x=y',
  ];

  it("10 000 seeded random and mutated inputs", () => {
    const rnd = new SeededRandom(0x5eed);
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rnd.unit() * xs.length)] as T;
    let parsed = 0;
    let rejected = 0;
    for (let iter = 0; iter < 10_000; iter++) {
      let s: string;
      if (iter % 2 === 0) {
        const len = Math.floor(rnd.unit() * 40);
        s = Array.from({ length: len }, () => pick(ALPHABET)).join("");
        if (rnd.unit() < 0.5) s = `TLS-DSK ${s}`;
      } else {
        const chars = [...pick(SEEDS)];
        const edits = 1 + Math.floor(rnd.unit() * 4);
        for (let e = 0; e < edits; e++) {
          const at = Math.floor(rnd.unit() * (chars.length + 1));
          const op = rnd.unit();
          if (op < 0.33) chars.splice(at, 1);
          else if (op < 0.66) chars.splice(at, 0, pick(ALPHABET));
          else chars[at] = pick(ALPHABET);
        }
        s = chars.join("");
      }
      try {
        const c = parseAuthHeader(s);
        parsed++;
        expect(typeof c.scheme).toBe("string");
        // Whatever parsed must survive a format → parse round trip.
        const again = parseAuthHeader(
          formatAuthHeader(
            c.scheme,
            [...c.params].filter(([, v]) => !/[\r\n\0]/.test(v)),
          ),
        );
        for (const [k, v] of again.params) expect(c.params.get(k)).toBe(v);
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        expect(err.code).toBe("auth-header-malformed");
        rejected++;
      }
      try {
        findChallenge([s, 'TLS-DSK realm="r"'], "TLS-DSK");
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
      }
    }
    expect(parsed).toBeGreaterThan(100);
    expect(rejected).toBeGreaterThan(100);
  });
});
