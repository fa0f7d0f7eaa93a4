/** Raw SIP messages reconstructed around the tls-dsk.md §5 / Vector A header values (CRLF line ends). */
import type { Random } from "../../firmware/core/random.ts";

export const crlf = (lines: string[]): string => `${lines.join("\r\n")}\r\n\r\n`;

/** A Random that hands out the given bytes (then zeros). */
export class FixedRandom implements Random {
  #bytes: number[];
  constructor(hex: string) {
    this.#bytes = [...Buffer.from(hex, "hex")];
  }
  bytes(n: number): Uint8Array {
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = this.#bytes.shift() ?? 0;
    return out;
  }
  unit(): number {
    return 0.5;
  }
}

export const REALM = "SIP Communications Service";

// ---- Vector A (pidgin-sipe ↔ simulated pool, TLS 1.0 AES128-SHA) -------------------------------
export const VA = {
  targetname: "fe01.contoso.test",
  clientKey: Buffer.from("ABFEA4C080D929F51B009832A52709B4D3D23DB0CBFB45198AD19F2A9DDD45F3", "hex"),
  serverKey: Buffer.from("A65A158B3608A9042C5A59285933CB41D3B69D05D31AB260B052A0FAAF5141B4", "hex"),
  crand: "8b073c11",
  response: "AD1433348956085C9224128FDE4C11AEAE17B63F",
  srand: "0EB28C8D",
  rspauth: "0A129769CB87C6C254B2B3C0595A6DCEA75AF75E",
  requestBuffer:
    "<TLS-DSK><8b073c11><1><SIP Communications Service><fe01.contoso.test><11B9gBD4Fa892DiB1D0mC072tF654b8B47xAB55x><6><REGISTER><sip:alice@contoso.test><2528623633><sip:alice@contoso.test><><><><>",
  responseBuffer:
    "<TLS-DSK><0EB28C8D><1><SIP Communications Service><fe01.contoso.test><11B9gBD4Fa892DiB1D0mC072tF654b8B47xAB55x><6><REGISTER><sip:alice@contoso.test><2528623633><sip:alice@contoso.test><pool1234><><><7200><200>",
};

export const VA_REQUEST = crlf([
  "REGISTER sip:contoso.test SIP/2.0",
  "Via: SIP/2.0/TLS 127.0.0.1:50522;branch=z9hG4bK3E3F1D4B;rport",
  "From: <sip:alice@contoso.test>;tag=2528623633;epid=1d7c9d3f2b",
  "To: <sip:alice@contoso.test>",
  "Max-Forwards: 70",
  "CSeq: 6 REGISTER",
  "User-Agent: UCCAPI/16.0.0.0 OC/16.0.0.0 (Skype for Business)",
  "Call-ID: 11B9gBD4Fa892DiB1D0mC072tF654b8B47xAB55x",
  'Contact: <sip:127.0.0.1:50522;transport=tls;ms-opaque=d3470f2e1d>;methods="INVITE, MESSAGE, INFO, SUBSCRIBE, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER, BENOTIFY";proxy=replace;+sip.instance="<urn:uuid:0b1c4a61-6d3e-5f0a-9c1b-2a7e4f3d8c11>"',
  "Supported: gruu-10, adhoclist, msrtc-event-categories, com.microsoft.msrtc.presence",
  "Event: registration",
  "Content-Length: 0",
]);

export const VA_RESPONSE = crlf([
  "SIP/2.0 200 OK",
  `Authentication-Info: TLS-DSK qop="auth", opaque="4A3F2C1B", srand="0EB28C8D", snum="1", rspauth="0A129769CB87C6C254B2B3C0595A6DCEA75AF75E", targetname="fe01.contoso.test", realm="SIP Communications Service", version=4`,
  "Via: SIP/2.0/TLS 127.0.0.1:50522;branch=z9hG4bK3E3F1D4B;rport=50522",
  "From: <sip:alice@contoso.test>;tag=2528623633;epid=1d7c9d3f2b",
  "To: <sip:alice@contoso.test>;tag=pool1234",
  "Call-ID: 11B9gBD4Fa892DiB1D0mC072tF654b8B47xAB55x",
  "CSeq: 6 REGISTER",
  'Contact: <sip:127.0.0.1:50522;transport=tls;ms-opaque=d3470f2e1d>;expires=7200;+sip.instance="<urn:uuid:0b1c4a61-6d3e-5f0a-9c1b-2a7e4f3d8c11>"',
  "Expires: 7200",
  "Content-Length: 0",
]);

// ---- §5.1 OCS 2007 R2 NTLM capture (version 4) --------------------------------------------------
export const NTLM_TARGET = "cosmo-ocs-r2.cosmo.local";

export const NTLM_REQUEST = crlf([
  "REGISTER sip:cosmo.local SIP/2.0",
  "Via: SIP/2.0/TLS 192.168.172.6:12723",
  "Max-Forwards: 70",
  "From: <sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15",
  "To: <sip:user@cosmo.local>",
  "Call-ID: 4037df9284354df39065195bd57a4b14",
  "CSeq: 3 REGISTER",
  'Contact: <sip:192.168.172.6:12723;transport=tls;ms-opaque=d3470f2e1d>;methods="INVITE, MESSAGE, INFO, OPTIONS, BYE, CANCEL, NOTIFY, ACK, REFER, BENOTIFY";proxy=replace;+sip.instance="<urn:uuid:4dea1ab3-f8e2-5a5f-adcb-4d2ac2aa6a71>"',
  "User-Agent: UCCAPI/3.5.6907.0 OC/3.5.6907.0 (Microsoft Office Communicator 2007 R2)",
  "Supported: gruu-10, adhoclist, msrtc-event-categories",
  "Supported: ms-forking",
  "Event: registration",
  `Proxy-Authorization: NTLM qop="auth", realm="SIP Communications Service", opaque="2BDBAC9D", targetname="cosmo-ocs-r2.cosmo.local", crand="13317733", cnum="1", response="0100000029618e9651b65a7764000000"`,
  "Content-Length: 0",
]);

export const NTLM_REQUEST_BUFFER =
  "<NTLM><13317733><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><><><><>";

export const NTLM_RESPONSE = crlf([
  "SIP/2.0 200 OK",
  "ms-keep-alive: UAS; tcp=no; hop-hop=yes; end=no; timeout=300",
  `Authentication-Info: NTLM rspauth="01000000E615438A917661BE64000000", srand="9616454F", snum="1", opaque="2BDBAC9D", qop="auth", targetname="cosmo-ocs-r2.cosmo.local", realm="SIP Communications Service"`,
  'From: "User"<sip:user@cosmo.local>;tag=3e49177a52;epid=c8ca638a15',
  "To: <sip:user@cosmo.local>;tag=5E61CCD925D17E043D9A74835A88F664",
  "Call-ID: 4037df9284354df39065195bd57a4b14",
  "CSeq: 3 REGISTER",
  "Via: SIP/2.0/TLS 192.168.172.6:12723;received=192.168.172.6;ms-received-port=12723;ms-received-cid=2600",
  "Expires: 7200",
  'Contact: <sip:192.168.172.6:12723;transport=tls;ms-opaque=d3470f2e1d>;expires=7200;+sip.instance="<urn:uuid:4dea1ab3-f8e2-5a5f-adcb-4d2ac2aa6a71>"',
  "Content-Length: 0",
]);

export const NTLM_RESPONSE_BUFFER =
  "<NTLM><9616454F><1><SIP Communications Service><cosmo-ocs-r2.cosmo.local><4037df9284354df39065195bd57a4b14><3><REGISTER><sip:user@cosmo.local><3e49177a52><sip:user@cosmo.local><5E61CCD925D17E043D9A74835A88F664><><><7200><200>";

// ---- §5.1 version 2 (13-field) vector -----------------------------------------------------------
export const V2_RESPONSE = crlf([
  "SIP/2.0 200 OK",
  `Authentication-Info: NTLM rspauth="01000000AAAAAAAABBBBBBBB01000000", srand="0878F41B", snum="1", opaque="CDE9A1D7", qop="auth", targetname="ocs1.ocs.provo.novell.com", realm="SIP Communications Service"`,
  'From: "Gabriel"<sip:gabriel@ocs.provo.novell.com>;tag=2947328781;epid=1234567890',
  "To: <sip:gabriel@ocs.provo.novell.com>;tag=B816D65C2300A32CFA6D371F2AF537FD",
  "P-Asserted-Identity: <sip:gabriel@ocs.provo.novell.com>, <tel:+18015551234>",
  "Call-ID: 8592g5DCBa1694i5887m0D0Bt2247b3F38xAE9Fx",
  "CSeq: 3 REGISTER",
  "Via: SIP/2.0/TLS 10.0.0.5:5061;branch=z9hG4bK1",
  "Expires: 900",
  "Content-Length: 0",
]);

export const V2_BUFFER =
  "<NTLM><0878F41B><1><SIP Communications Service><ocs1.ocs.provo.novell.com><8592g5DCBa1694i5887m0D0Bt2247b3F38xAE9Fx><3><REGISTER><sip:gabriel@ocs.provo.novell.com><2947328781><B816D65C2300A32CFA6D371F2AF537FD><900><200>";

// ---- §5.2 [MS-OCPSTN] §4.7.2.1 INVITE 200 OK -----------------------------------------------------
export const OCPSTN_200 = crlf([
  "SIP/2.0 200 OK",
  `Authentication-Info: TLS-DSK qop="auth", opaque="F755045D", srand="1D9666D9", snum="17", rspauth="3359c8ac2e6229b2eb9738ac707dc8c3e54f65f0", targetname="PROXY.company1", realm="SIP Communications Service", version=4`,
  "VIA: SIP/2.0/TLS 10.0.0.2:1234;branch=z9hG4bKabc;ms-received-port=1234;ms-received-cid=100",
  'FROM: "user112"<sip:user112@company1>;tag=ed04066c4a;epid=54dd5867e8',
  "TO: <sip:+14258901234@company1;user=phone>;tag=201fec487e;epid=CDCFEF8F18",
  "CSEQ: 1 INVITE",
  "CALL-ID: e571df11a45947f1a5b90da8d957b8ae",
  "RECORD-ROUTE: <sip:PROXY.company1:5061;transport=tls;lr>",
  "CONTACT: <sip:PROXY.company1:5061;transport=tls;maddr=10.0.0.3>",
  "SESSION-EXPIRES: 720;refresher=uac",
  "P-ASSERTED-IDENTITY: <sip:+14258901234@company1;user=phone>",
  "CONTENT-TYPE: application/sdp",
  "CONTENT-LENGTH: 0",
]);

export const OCPSTN_BUFFER =
  "<TLS-DSK><1D9666D9><17><SIP Communications Service><PROXY.company1><e571df11a45947f1a5b90da8d957b8ae><1><INVITE><sip:user112@company1><ed04066c4a><sip:+14258901234@company1;user=phone><201fec487e><sip:+14258901234@company1;user=phone><><><200>";
