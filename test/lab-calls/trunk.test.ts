/**
 * Issue 12: the lab's trunk, where third-party user agents meet the lab as a gateway meets Lync
 * through its mediation server: plain SIP over TCP and UDP on loopback, trusted by address, no
 * TLS-DSK. Calls in from it reach registered users (signed on the user's leg); users' calls to
 * numbers and non-lab URIs go out through it. SDP passes through untouched.
 *
 * The third-party side is a raw socket in the test (RawSip); the users are LabPhones (phones.ts).
 * Branch site: the trunk hangs off the SBA; A (4711) is on the SBA, C (4713) on the central pool.
 */
import * as net from "node:net";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { header, headerList, headers } from "../../firmware/sip/message/message.ts";
import { type Lab, startLab } from "../lab/lab.ts";
import {
  ackFor,
  addUser,
  answerTo,
  calleeDialog,
  callerDialog,
  inDialog,
  isRequest,
  isResponse,
  LabPhone,
  newInvite,
  RawSip,
  sdp,
  sleep,
  testClient,
  token,
} from "./phones.ts";

let lab: Lab;
let a: LabPhone;
let c: LabPhone;
const raws: RawSip[] = [];

beforeAll(async () => {
  lab = await startLab();
  const userC = await addUser(lab, "4713");
  lab.directory.add("4714", "1234");
  [a, c] = await Promise.all([
    LabPhone.register(lab, testClient(lab), lab.ready.sba, lab.ready.names.sba),
    LabPhone.register(lab, userC, lab.ready.pool, lab.ready.names.pool),
  ]);
}, 60_000);

afterAll(async () => {
  a?.close();
  c?.close();
  await lab?.stop();
});

afterEach(() => {
  for (const r of raws.splice(0)) r.close();
  lab.trunk.peer = undefined;
});

async function raw(make: Promise<RawSip>): Promise<RawSip> {
  const r = await make;
  raws.push(r);
  return r;
}

const port = (address: string) => Number(address.slice(address.lastIndexOf(":") + 1));

/** No TLS-DSK on the trunk side: nothing of the users' security associations leaks out. */
function unsigned(m: Parameters<typeof header>[0]): boolean {
  return header(m, "Authentication-Info") === undefined && header(m, "Authorization") === undefined;
}

describe("lab.ready", () => {
  it("names the trunk's TCP and UDP ports on 127.0.0.1", () => {
    expect(lab.ready.trunk).toEqual({ tcp: lab.trunk.tcpAddress, udp: lab.trunk.udpAddress });
    expect(lab.ready.trunk.tcp).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(lab.ready.trunk.udp).toMatch(/^127\.0\.0\.1:\d+$/);
  });
});

describe("calls in from the trunk", () => {
  for (const transport of ["tcp", "udp"] as const) {
    it(`an INVITE over plain ${transport.toUpperCase()} reaches the registered user, signed; the 200 comes back; ACK and BYE follow the Record-Route`, async () => {
      const gw =
        transport === "tcp"
          ? await raw(RawSip.tcpTo(lab.ready.trunk.tcp))
          : await raw(RawSip.udp(lab.ready.trunk.udp));
      const trunkAddr = lab.ready.trunk[transport];
      const offer = sdp(30_000);
      const invite = gw.send(
        newInvite({
          uri: `sip:4711@${trunkAddr}`,
          to: "sip:4711@lab.test",
          from: "sip:+15550123@gateway.example",
          via: gw.via,
          contact: gw.contact,
          body: offer,
        }),
      );
      expect((await gw.next(isResponse(100))).status).toBe(100);

      const inv = await a.next(isRequest("INVITE"));
      expect(inv.verdict).toBe("verified");
      expect(inv.m.body.toString()).toBe(offer);
      expect(header(inv.m, "From")).toBe(header(invite, "From"));
      expect(headers(inv.m, "Via")[0]).toMatch(/^SIP\/2\.0\/TLS sba\.lab\.test:5061;/);
      expect(headers(inv.m, "Via")[1]).toBe(header(invite, "Via"));
      // Record-routed twice, once per side: the user's side on top, the trunk's side below.
      const rr = headerList(inv.m, "Record-Route");
      expect(rr).toHaveLength(2);
      expect(rr[0]).toMatch(/^<sip:sba\.lab\.test;transport=tls;lr;lab-dlg=sba-/);
      expect(rr[1]).toContain(`<sip:${trunkAddr};transport=${transport};lr;lab-dlg=sba-`);

      const tag = token();
      a.answer(inv.m, 180, "Ringing", { toTag: tag });
      const answerSdp = sdp(31_000);
      const okSent = a.answer(inv.m, 200, "OK", { toTag: tag, body: answerSdp });
      const ringing = await gw.next(isResponse(180));
      const ok = await gw.next(isResponse(200, "INVITE"));
      expect(unsigned(ringing) && unsigned(ok)).toBe(true);
      expect(headers(ok, "Via")).toEqual(headers(invite, "Via"));
      expect(ok.body.toString()).toBe(answerSdp);

      // The gateway's route set starts with the trunk's own address, which it can reach.
      const dGw = callerDialog(invite, ok);
      expect(dGw.routes[0]).toContain(trunkAddr);
      gw.send(inDialog(dGw, "ACK", gw.via));
      const ack = await a.next(isRequest("ACK"));
      expect(ack.verdict).toBe("verified");
      expect(headers(ack.m, "Route")).toEqual([]);

      if (transport === "tcp") {
        gw.send(inDialog(dGw, "BYE", gw.via));
        const bye = await a.next(isRequest("BYE"));
        expect(bye.verdict).toBe("verified");
        a.answer(bye.m, 200, "OK");
        expect(unsigned(await gw.next(isResponse(200, "BYE")))).toBe(true);
      } else {
        // The user hangs up: the BYE reaches the gateway at its Contact, unsigned.
        a.send(inDialog(calleeDialog(inv.m, okSent), "BYE", a.via));
        const bye = await gw.next(isRequest("BYE"));
        expect(unsigned(bye)).toBe(true);
        expect(bye.uri).toBe(`sip:gw@${gw.address};transport=udp`);
        gw.send(answerTo(bye, 200, "OK"), trunkAddr);
        expect((await a.next(isResponse(200, "BYE"))).verdict).toBe("verified");
      }
      expect(lab.sba.router.dialogCount).toBe(0);
    });
  }

  it("404 for no such user, 480 for a lab user registered nowhere; a pool user is reached across the WAN", async () => {
    const gw = await raw(RawSip.udp(lab.ready.trunk.udp));
    const call = (ext: string) =>
      gw.send(
        newInvite({
          uri: `sip:${ext}@lab.test`,
          to: `sip:${ext}@lab.test`,
          from: "sip:+15550123@gateway.example",
          via: gw.via,
          contact: gw.contact,
          body: sdp(30_002),
        }),
      );
    const none = call("9999");
    const nf = await gw.next(isResponse(404));
    gw.send(ackFor(none, nf));
    const nobody = call("4714");
    const ta = await gw.next(isResponse(480), 10_000);
    gw.send(ackFor(nobody, ta));

    const toC = call("4713");
    const inv = await c.next(isRequest("INVITE"), 10_000);
    expect(inv.verdict).toBe("verified");
    expect(headerList(inv.m, "Record-Route").map((v) => /lab-dlg=(\w+)-/.exec(v)?.[1])).toEqual([
      "pool",
      "sba",
      "sba",
    ]);
    c.answer(inv.m, 603, "Decline", { toTag: token() });
    const declined = await gw.next(isResponse(603));
    expect(unsigned(declined)).toBe(true);
    gw.send(ackFor(toC, declined));
  });

  it("only 127.0.0.1 is trusted: a datagram from 127.0.0.2 is ignored, a TCP connection from it closed", async () => {
    let other: RawSip;
    try {
      other = await raw(RawSip.udp(lab.ready.trunk.udp, "127.0.0.2"));
    } catch {
      return; // no 127.0.0.2 on this system (not Linux): nothing to show
    }
    const refused = lab.trunk.stats.refused;
    other.send(
      newInvite({
        uri: "sip:4711@lab.test",
        to: "sip:4711@lab.test",
        from: "sip:intruder@127.0.0.2",
        via: `SIP/2.0/UDP 127.0.0.2:${other.port}`,
        contact: `<sip:intruder@127.0.0.2:${other.port}>`,
      }),
    );
    expect(await other.within(() => true, 300)).toEqual([]);
    expect(await a.within(isRequest("INVITE"), 0)).toEqual([]);
    const s = net.connect({
      ...{ host: "127.0.0.1", port: port(lab.ready.trunk.tcp) },
      localAddress: "127.0.0.2",
    });
    s.on("error", () => {});
    await new Promise<void>((resolve) => s.once("close", () => resolve()));
    expect(lab.trunk.stats.refused).toBe(refused + 2);
  });
});

describe("calls out through the trunk", () => {
  it("a number goes to the configured trunk peer over UDP: SDP untouched, the 200 comes back signed, BYE from the far end", async () => {
    const peer = await raw(RawSip.udp(lab.ready.trunk.udp));
    lab.trunk.peer = { host: "127.0.0.1", port: peer.port, transport: "udp" };
    const offer = sdp(40_020);
    const invite = a.invite("sip:+15550100@lab.test;user=phone", offer);
    const inv = await peer.next(isRequest("INVITE"));
    expect(inv.uri).toBe("sip:+15550100@lab.test;user=phone");
    expect(inv.body.toString()).toBe(offer);
    expect(unsigned(inv)).toBe(true);
    expect(headers(inv, "Via")[0]).toMatch(new RegExp(`^SIP/2\\.0/UDP ${lab.ready.trunk.udp};branch=`));
    const rr = headerList(inv, "Record-Route");
    expect(rr[0]).toContain(`<sip:${lab.ready.trunk.udp};transport=udp;lr;`);
    expect(rr[1]).toContain("<sip:sba.lab.test;transport=tls;lr;");

    const tag = token();
    peer.send(answerTo(inv, 183, "Session Progress", { toTag: tag, body: sdp(20_000) }));
    const early = await a.next(isResponse(183));
    expect(early.verdict).toBe("unsigned");
    expect(early.m.body.toString()).toBe(sdp(20_000));
    const okSent = peer.send(
      answerTo(inv, 200, "OK", { toTag: tag, contact: peer.contact, body: sdp(20_000) }),
    );
    const ok = await a.next(isResponse(200, "INVITE"));
    expect(ok.verdict).toBe("verified");
    expect(ok.m.body.toString()).toBe(sdp(20_000));
    a.send(inDialog(callerDialog(invite, ok.m), "ACK", a.via));
    const ack = await peer.next(isRequest("ACK"));
    expect(ack.uri).toBe(`sip:gw@${peer.address};transport=udp`);

    const dPeer = calleeDialog(inv, okSent);
    expect(dPeer.routes[0]).toContain(lab.ready.trunk.udp);
    peer.send(inDialog(dPeer, "BYE", peer.via));
    const bye = await a.next(isRequest("BYE"));
    expect(bye.verdict).toBe("verified");
    a.answer(bye.m, 200, "OK");
    expect(unsigned(await peer.next(isResponse(200, "BYE")))).toBe(true);
    expect(await peer.within(isRequest("INVITE"))).toEqual([]); // answered at once: never retransmitted
  });

  it("sip:anything@127.0.0.1:PORT;transport=tcp goes to that address over TCP; a refusal comes back signed", async () => {
    const listener = await raw(RawSip.tcpListener());
    const invite = a.invite(`sip:anything@${listener.address};transport=tcp`, sdp(40_022));
    const inv = await listener.next(isRequest("INVITE"));
    expect(headers(inv, "Via")[0]).toMatch(new RegExp(`^SIP/2\\.0/TCP ${lab.ready.trunk.tcp};branch=`));
    listener.send(answerTo(inv, 486, "Busy Here", { toTag: token() }));
    const busy = await a.next(isResponse(486));
    expect(busy.verdict).toBe("verified");
    // The trunk ACKs the 486 itself (hop by hop); A's ACK ends at the SBA.
    const ack = await listener.next(isRequest("ACK"));
    expect(header(ack, "Via")).toBe(headers(inv, "Via")[0]);
    a.send(ackFor(invite, busy.m));
    expect(await listener.within(isRequest("ACK"))).toEqual([]);
  });

  it("a pool user's call to a number reaches the trunk through the SBA, across the WAN", async () => {
    const peer = await raw(RawSip.udp(lab.ready.trunk.udp));
    lab.trunk.peer = { host: "127.0.0.1", port: peer.port, transport: "udp" };
    const invite = c.invite("sip:+15550101@lab.test", sdp(40_024));
    const inv = await peer.next(isRequest("INVITE"), 10_000);
    expect(headerList(inv, "Record-Route").map((v) => /lab-dlg=(\w+)-/.exec(v)?.[1])).toEqual([
      "sba",
      "sba",
      "pool",
    ]);
    peer.send(answerTo(inv, 603, "Decline", { toTag: token() }));
    const declined = await c.next(isResponse(603));
    expect(declined.verdict).toBe("verified");
    c.send(ackFor(invite, declined.m));
    await sleep(50); // let the ACK land before the next test touches the link
  });

  it("a number with no trunk peer configured: 404 from the SBA", async () => {
    const invite = a.invite("sip:+15550199@lab.test", sdp(40_026));
    const nf = await a.next(isResponse(404));
    expect(nf.verdict).toBe("verified");
    expect(header(nf.m, "Warning")).toContain("no trunk route");
    a.send(ackFor(invite, nf.m));
  });
});
