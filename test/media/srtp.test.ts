/**
 * SRTP/SRTCP core (firmware/media/srtp*.ts): RFC 3711 Appendix B vectors, libsrtp's published
 * srtp_validate() packets (data only), and the behaviour around ROC, replay, MKI and tampering.
 */
import { createHmac } from "node:crypto";
import { describe, expect, it } from "vitest";
import { HandsetError } from "../../firmware/core/errors.ts";
import {
  masterKeyFromInline,
  type SrtpPolicy,
  SrtpReceiver,
  SrtpSender,
  type SrtpSuite,
} from "../../firmware/media/srtp.ts";
import {
  aesCmKeystream,
  counterIv,
  deriveKey,
  deriveSessionKeys,
  kdfInputBlock,
  Label,
} from "../../firmware/media/srtp-kdf.ts";
import { estimateIndex, ReplayWindow } from "../../firmware/media/srtp-replay.ts";

const hex = (s: string) => Buffer.from(s.replace(/\s+/g, ""), "hex");

// RFC 3711 B.3 master key and salt; libsrtp's srtp_validate() uses the same pair.
const MASTER_KEY = hex("E1F97A0D3E018BE0D64FA32C06DE4139");
const MASTER_SALT = hex("0EC675AD498AFEEBB6960B3AABE6");

function policy(suite: SrtpSuite = "AES_CM_128_HMAC_SHA1_80", extra: Partial<SrtpPolicy> = {}): SrtpPolicy {
  return { suite, masterKey: MASTER_KEY, masterSalt: MASTER_SALT, ...extra };
}

/** A G.711-sized RTP packet: V=2, PT 0, the given SEQ/SSRC, payload filled with `fill`. */
function rtp(seq: number, ssrc = 0x1234_5678, payloadLength = 160, fill = 0xd5): Buffer {
  const p = Buffer.alloc(12 + payloadLength, fill);
  p[0] = 0x80;
  p[1] = 0x00;
  p.writeUInt16BE(seq & 0xffff, 2);
  p.writeUInt32BE((seq * 160) >>> 0, 4);
  p.writeUInt32BE(ssrc, 8);
  return p;
}

/** An RTCP receiver report with one report block's worth of body. */
function rtcp(ssrc = 0x1234_5678, fill = 0x42): Buffer {
  const p = Buffer.alloc(32, fill);
  p[0] = 0x81;
  p[1] = 201;
  p.writeUInt16BE(32 / 4 - 1, 2);
  p.writeUInt32BE(ssrc, 4);
  return p;
}

function protect(sender: SrtpSender, packet: Buffer): Buffer {
  const r = sender.protectRtp(packet);
  if (!r.ok) throw new Error(`protect refused: ${r.reason}`);
  return r.packet;
}

function protectRtcp(sender: SrtpSender, packet: Buffer): Buffer {
  const r = sender.protectRtcp(packet);
  if (!r.ok) throw new Error(`protect refused: ${r.reason}`);
  return r.packet;
}

describe("RFC 3711 B.2 AES-CM keystream", () => {
  const sessionKey = hex("2B7E151628AED2A6ABF7158809CF4F3C");
  // "Session Salt: F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000 (already shifted)": the 14-octet salt.
  const sessionSalt = hex("F0F1F2F3F4F5F6F7F8F9FAFBFCFD");

  it("forms the IV from salt, SSRC 0, ROC 0, SEQ 0 as the vector's offset", () => {
    expect(counterIv(sessionSalt, 0, 0, 0).toString("hex").toUpperCase()).toBe(
      "F0F1F2F3F4F5F6F7F8F9FAFBFCFD0000",
    );
  });

  it("produces the published blocks at both ends of the 65282-block segment", () => {
    const iv = counterIv(sessionSalt, 0, 0, 0);
    const ks = aesCmKeystream(sessionKey, iv, 1_044_512);
    expect(ks.length).toBe(65_282 * 16);
    const block = (n: number) =>
      ks
        .subarray(n * 16, n * 16 + 16)
        .toString("hex")
        .toUpperCase();
    expect(block(0x0000)).toBe("E03EAD0935C95E80E166B16DD92B4EB4");
    expect(block(0x0001)).toBe("D23513162B02D0F72A43A2FE4A5F97AB");
    expect(block(0x0002)).toBe("41E95B3BB0A2E8DD477901E4FCA894C0");
    expect(block(0xfeff)).toBe("EC8CDF7398607CB0F2D21675EA9EA1E4");
    expect(block(0xff00)).toBe("362B7C3C6773516318A077D7FC5073AE");
    expect(block(0xff01)).toBe("6A2CC3787889374FBEB4C81B17BA6C44");
  });
});

describe("RFC 3711 B.3 key derivation", () => {
  it("builds the PRF input blocks x·2^16 for the three SRTP labels", () => {
    expect(kdfInputBlock(MASTER_SALT, Label.rtpEncryption)).toEqual(hex("0EC675AD498AFEEBB6960B3AABE60000"));
    expect(kdfInputBlock(MASTER_SALT, Label.rtpSalt)).toEqual(hex("0EC675AD498AFEE9B6960B3AABE60000"));
    expect(kdfInputBlock(MASTER_SALT, Label.rtpAuthentication)).toEqual(
      hex("0EC675AD498AFEEAB6960B3AABE60000"),
    );
  });

  it("derives the cipher key", () => {
    expect(deriveKey(MASTER_KEY, MASTER_SALT, Label.rtpEncryption, 16)).toEqual(
      hex("C61E7A93744F39EE10734AFE3FF7A087"),
    );
  });

  it("derives the cipher salt (the first 14 octets of the AES-CM output)", () => {
    expect(deriveKey(MASTER_KEY, MASTER_SALT, Label.rtpSalt, 16)).toEqual(
      hex("30CBBC08863D8C85D49DB34A9AE17AC6"),
    );
    expect(deriveKey(MASTER_KEY, MASTER_SALT, Label.rtpSalt, 14)).toEqual(
      hex("30CBBC08863D8C85D49DB34A9AE1"),
    );
  });

  it("derives the 94-octet auth key of the vector, whose first 20 octets HMAC-SHA1 uses", () => {
    const authKey = hex(`
      CEBE321F6FF7716B6FD4AB49AF256A15
      6D38BAA48F0A0ACF3C34E2359E6CDBCE
      E049646C43D9327AD175578EF7227098
      6371C10C9A369AC2F94A8C5FBCDDDC25
      6D6E919A48B610EF17C2041E47403576
      6B68642C59BBFC2F34DB60DBDFB2`);
    expect(authKey.length).toBe(94);
    expect(deriveKey(MASTER_KEY, MASTER_SALT, Label.rtpAuthentication, 94)).toEqual(authKey);
    const session = deriveSessionKeys(MASTER_KEY, MASTER_SALT);
    expect(session.rtp.authKey).toEqual(authKey.subarray(0, 20));
    expect(session.rtp.encryptionKey).toEqual(hex("C61E7A93744F39EE10734AFE3FF7A087"));
    expect(session.rtp.salt).toEqual(hex("30CBBC08863D8C85D49DB34A9AE1"));
  });

  it("keeps SRTCP session keys apart from SRTP's (labels 3..5)", () => {
    const session = deriveSessionKeys(MASTER_KEY, MASTER_SALT);
    expect(session.rtcp.encryptionKey).not.toEqual(session.rtp.encryptionKey);
    expect(session.rtcp.authKey).not.toEqual(session.rtp.authKey);
    expect(session.rtcp.salt).not.toEqual(session.rtp.salt);
    expect(session.rtcp.encryptionKey).toEqual(deriveKey(MASTER_KEY, MASTER_SALT, 0x03, 16));
  });
});

describe("known-answer packets (libsrtp srtp_validate data: key/salt of B.3, SSRC 0xcafebabe)", () => {
  const plainRtp = hex("800f1234decafbadcafebabe abababababababababababababababab");
  const srtp80 = hex(`800f1234decafbadcafebabe 4e55dc4ce79978d88ca4d215949d2402 b78d6acc99ea179b8dbb`);
  const plainRtcp = hex("81c8000bcafebabe abababababababababababababababab");
  // Its sender numbers the first SRTCP packet 1 (E ‖ index = 80000001), not the RFC's 0.
  const srtcp80 = hex(`81c8000bcafebabe 7128035be487b9bdbef89041f977a5a8 80000001 993e08cd54d6c1230798`);

  it("protects the RTP packet to the published SRTP packet (80-bit tag)", () => {
    expect(protect(new SrtpSender(policy()), plainRtp)).toEqual(srtp80);
  });

  it("unprotects the published SRTP packet", () => {
    const r = new SrtpReceiver(policy()).unprotectRtp(srtp80);
    expect(r).toMatchObject({ ok: true, ssrc: 0xcafebabe, index: 0x1234 });
    if (r.ok) expect(r.packet).toEqual(plainRtp);
  });

  it("with the 32-bit suite, the same packet carries the tag's first 4 octets", () => {
    const out = protect(new SrtpSender(policy("AES_CM_128_HMAC_SHA1_32")), plainRtp);
    expect(out).toEqual(srtp80.subarray(0, 32));
    expect(new SrtpReceiver(policy("AES_CM_128_HMAC_SHA1_32")).unprotectRtp(out).ok).toBe(true);
  });

  it("protects the RTCP packet to the published SRTCP packet (given libsrtp's first index)", () => {
    const sender = new SrtpSender(policy(), { initialSrtcpIndex: 1 });
    expect(protectRtcp(sender, plainRtcp)).toEqual(srtcp80);
  });

  it("unprotects the published SRTCP packet", () => {
    const r = new SrtpReceiver(policy()).unprotectRtcp(srtcp80);
    expect(r).toMatchObject({ ok: true, ssrc: 0xcafebabe, index: 1, encrypted: true });
    if (r.ok) expect(r.packet).toEqual(plainRtcp);
  });
});

describe("SRTP round trip", () => {
  it("encrypts the payload only, restores it exactly, and counts", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    for (let seq = 1000; seq < 1010; seq++) {
      const plain = rtp(seq);
      const wire = protect(sender, plain);
      expect(wire.length).toBe(plain.length + 10);
      expect(wire.subarray(0, 12)).toEqual(plain.subarray(0, 12));
      expect(wire.subarray(12, plain.length)).not.toEqual(plain.subarray(12));
      const r = receiver.unprotectRtp(wire);
      expect(r.ok).toBe(true);
      if (r.ok) expect(r.packet).toEqual(plain);
    }
    expect(sender.stats.rtp).toEqual({ protected: 10, refused: 0 });
    expect(receiver.stats.rtp).toMatchObject({ received: 10, accepted: 10, badTag: 0, replayed: 0 });
  });

  it("leaves CSRCs and a header extension in the clear and encrypts from the payload on", () => {
    const plain = Buffer.concat([
      hex("92 00 0007 00000001 00000042"), // V=2, X=1, CC=2
      hex("11111111 22222222"), // CSRCs
      hex("BEDE 0001 10AA0000"), // one-word RFC 8285 extension
      Buffer.alloc(40, 0x77),
    ]);
    const wire = protect(new SrtpSender(policy()), plain);
    expect(wire.subarray(0, 28)).toEqual(plain.subarray(0, 28));
    expect(wire.subarray(28, 68)).not.toEqual(plain.subarray(28));
    const r = new SrtpReceiver(policy()).unprotectRtp(wire);
    expect(r.ok && r.packet.equals(plain)).toBe(true);
  });

  it("authenticates packet ‖ ROC and keys the IV by ROC after a wrap (checked independently)", () => {
    const keys = deriveSessionKeys(MASTER_KEY, MASTER_SALT).rtp;
    const sender = new SrtpSender(policy());
    for (const seq of [65534, 65535]) protect(sender, rtp(seq));
    const plain = rtp(3); // after the wrap: ROC = 1
    const wire = protect(sender, plain);
    const ks = aesCmKeystream(keys.encryptionKey, counterIv(keys.salt, 0x1234_5678, 1, 3), 160);
    const body = Buffer.from(plain.subarray(12).map((b, i) => b ^ (ks[i] as number)));
    expect(wire.subarray(12, 172)).toEqual(body);
    const tag = createHmac("sha1", keys.authKey)
      .update(wire.subarray(0, 172))
      .update(hex("00000001"))
      .digest()
      .subarray(0, 10);
    expect(wire.subarray(172)).toEqual(tag);
  });
});

describe("index estimation (RFC 3711 §3.3.1, Appendix A)", () => {
  it("picks ROC+1 past a forward wrap and ROC−1 for a late packet from before it", () => {
    expect(estimateIndex({ roc: 0, highestSeq: 65535 }, 0)).toMatchObject({ step: 1, roc: 1, index: 65536 });
    expect(estimateIndex({ roc: 1, highestSeq: 2 }, 65534)).toMatchObject({ step: -1, roc: 0, index: 65534 });
    // The boundaries of Appendix A's strict comparisons: s_l − 32768 > SEQ, SEQ − s_l > 32768.
    expect(estimateIndex({ roc: 5, highestSeq: 40000 }, 7231)).toMatchObject({ step: 1, roc: 6 });
    expect(estimateIndex({ roc: 5, highestSeq: 40000 }, 7232)).toMatchObject({ step: 0, roc: 5 });
    expect(estimateIndex({ roc: 5, highestSeq: 100 }, 32868)).toMatchObject({ step: 0, roc: 5 });
    expect(estimateIndex({ roc: 5, highestSeq: 100 }, 32869)).toMatchObject({ step: -1, roc: 4 });
    expect(estimateIndex({ roc: 5, highestSeq: 100 }, 32869)).toMatchObject({ index: 4 * 65536 + 32869 });
  });

  it("at ROC 0 orders a ROC−1 packet before the stream instead of 2^48 ahead", () => {
    const e = estimateIndex({ roc: 0, highestSeq: 10 }, 65000);
    expect(e.roc).toBe(0xffff_ffff);
    expect(e.index).toBeLessThan(0);
  });

  it("accepts every packet across 65535→0 delivered out of order in both directions", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const seqs = [65530, 65531, 65532, 65533, 65534, 65535, 0, 1, 2, 3, 4, 5];
    const wire = new Map(seqs.map((s) => [s, protect(sender, rtp(s))]));
    const order = [65530, 65532, 65531, 1, 65533, 0, 65535, 3, 65534, 2, 5, 4];
    const indices: number[] = [];
    for (const s of order) {
      const r = receiver.unprotectRtp(wire.get(s)!);
      expect(r.ok, `seq ${s}`).toBe(true);
      if (r.ok) {
        expect(r.packet).toEqual(rtp(s));
        indices.push(r.index);
      }
    }
    expect(indices).toEqual(order.map((s) => (s >= 65530 ? s : 65536 + s)));
    // Past the wrap, a fresh packet continues on ROC 1.
    const next = receiver.unprotectRtp(protect(sender, rtp(6)));
    expect(next).toMatchObject({ ok: true, index: 65536 + 6 });
  });

  it("follows several wraps of a long stream", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    let last = 0;
    for (let n = 0; n < 3 * 65536 + 10; n += 97) {
      const r = receiver.unprotectRtp(protect(sender, rtp(n & 0xffff)));
      expect(r.ok).toBe(true);
      if (r.ok) last = r.index;
    }
    expect(last).toBe(Math.floor((3 * 65536 + 9) / 97) * 97);
  });
});

describe("replay protection (§3.3.2)", () => {
  it("rejects a replayed packet and counts it", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const wire = protect(sender, rtp(7));
    expect(receiver.unprotectRtp(wire).ok).toBe(true);
    expect(receiver.unprotectRtp(wire)).toEqual({ ok: false, reason: "replay" });
    expect(receiver.stats.rtp).toMatchObject({ received: 2, accepted: 1, replayed: 1 });
  });

  it("accepts a late packet 63 behind the newest, rejects one 64 behind as too old", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const wire = Array.from({ length: 200 }, (_, s) => protect(sender, rtp(s)));
    expect(receiver.unprotectRtp(wire[100]!).ok).toBe(true);
    expect(receiver.unprotectRtp(wire[36]!)).toEqual({ ok: false, reason: "too-old" });
    expect(receiver.unprotectRtp(wire[37]!).ok).toBe(true);
    expect(receiver.unprotectRtp(wire[37]!)).toEqual({ ok: false, reason: "replay" });
    expect(receiver.unprotectRtp(wire[199]!).ok).toBe(true);
    expect(receiver.unprotectRtp(wire[100]!)).toEqual({ ok: false, reason: "too-old" });
    expect(receiver.stats.rtp).toMatchObject({ accepted: 3, tooOld: 2, replayed: 1 });
  });

  it("keeps the window over a jump larger than the window", () => {
    const w = new ReplayWindow();
    w.accept(5);
    w.accept(1000);
    expect(w.check(5)).toBe("too-old");
    expect(w.check(999)).toBe("ok");
    expect(w.check(1000)).toBe("replay");
    expect(w.highest()).toBe(1000);
  });

  it("the sender refuses to protect an index twice (keystream reuse)", () => {
    const sender = new SrtpSender(policy());
    protect(sender, rtp(9));
    expect(sender.protectRtp(rtp(9, undefined, 160, 0x00))).toEqual({ ok: false, reason: "replay" });
    expect(sender.stats.rtp).toEqual({ protected: 1, refused: 1 });
  });
});

describe("authentication failures", () => {
  it("a flipped byte anywhere (header, payload, tag) is a counted bad-tag, never a throw", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const wire = protect(sender, rtp(50));
    for (const at of [1, 5, 11, 12, 100, wire.length - 11, wire.length - 1]) {
      const forged = Buffer.from(wire);
      forged[at] = (forged[at] as number) ^ 0x01;
      expect(receiver.unprotectRtp(forged), `byte ${at}`).toEqual({ ok: false, reason: "bad-tag" });
    }
    expect(receiver.stats.rtp.badTag).toBe(7);
    expect(receiver.stats.rtp.accepted).toBe(0);
  });

  it("a forged packet moves neither the window nor the ROC, nor creates an SSRC", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const wire = Array.from({ length: 3 }, (_, i) => protect(sender, rtp(65534 + i)));
    // A forgery at the genuine packet's index: afterwards the genuine one must still get in.
    const forged = Buffer.from(wire[0]!);
    forged[20] = (forged[20] as number) ^ 0xff;
    expect(receiver.unprotectRtp(forged).ok).toBe(false);
    expect(receiver.unprotectRtp(wire[0]!).ok).toBe(true);
    // A forgery that would push the ROC to 1 if it counted: 65535 must still be read on ROC 0.
    const fakeWrap = Buffer.from(wire[2]!);
    fakeWrap[fakeWrap.length - 1] = (fakeWrap[fakeWrap.length - 1] as number) ^ 0x80;
    expect(receiver.unprotectRtp(fakeWrap)).toEqual({ ok: false, reason: "bad-tag" });
    expect(receiver.unprotectRtp(wire[1]!)).toMatchObject({ ok: true, index: 65535 });
    expect(receiver.unprotectRtp(wire[2]!)).toMatchObject({ ok: true, index: 65536 });
    // A forged first packet of a new SSRC must not seed its s_l: had s_l become 40000, SEQ 10
    // would be read as ROC 1 and the genuine packet would fail.
    const stranger = Buffer.from(protect(sender, rtp(40000, 0xabcd)));
    stranger[30] = (stranger[30] as number) ^ 1;
    expect(receiver.unprotectRtp(stranger)).toEqual({ ok: false, reason: "bad-tag" });
    const genuine = protect(new SrtpSender(policy()), rtp(10, 0xabcd));
    expect(receiver.unprotectRtp(genuine)).toMatchObject({ ok: true, index: 10, ssrc: 0xabcd });
  });

  it("rejects packets too short for header and tag, and junk of every length, without throwing", () => {
    const receiver = new SrtpReceiver(policy());
    expect(receiver.unprotectRtp(new Uint8Array(0))).toEqual({ ok: false, reason: "short" });
    expect(receiver.unprotectRtp(new Uint8Array(21))).toEqual({ ok: false, reason: "short" });
    // CC = 15 claims 60 octets of CSRCs that are not there.
    expect(receiver.unprotectRtp(Buffer.concat([hex("8f00"), Buffer.alloc(40)]))).toEqual({
      ok: false,
      reason: "short",
    });
    expect(receiver.unprotectRtcp(new Uint8Array(21))).toEqual({ ok: false, reason: "short" });
    let x = 12345;
    for (let n = 0; n < 300; n++) {
      const junk = Buffer.alloc(n % 90);
      for (let i = 0; i < junk.length; i++) {
        x = (x * 1103515245 + 12345) >>> 0;
        junk[i] = x >>> 24;
      }
      expect(receiver.unprotectRtp(junk).ok).toBe(false);
      expect(receiver.unprotectRtcp(junk).ok).toBe(false);
    }
    expect(receiver.stats.rtp.accepted + receiver.stats.rtcp.accepted).toBe(0);
    expect(receiver.stats.rtp.received).toBe(303);
  });

  it("a receiver on another key rejects everything as bad-tag", () => {
    const other = new SrtpReceiver({ ...policy(), masterKey: Buffer.alloc(16, 1) });
    expect(other.unprotectRtp(protect(new SrtpSender(policy()), rtp(1)))).toEqual({
      ok: false,
      reason: "bad-tag",
    });
  });
});

describe("SRTCP", () => {
  it("round trips with E set, a fresh index per packet from 0, and an 80-bit tag", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    for (let i = 0; i < 3; i++) {
      const plain = rtcp();
      const wire = protectRtcp(sender, plain);
      expect(wire.length).toBe(plain.length + 4 + 10);
      expect(wire.readUInt32BE(plain.length)).toBe((0x8000_0000 | i) >>> 0);
      expect(wire.subarray(0, 8)).toEqual(plain.subarray(0, 8));
      expect(wire.subarray(8, plain.length)).not.toEqual(plain.subarray(8));
      const r = receiver.unprotectRtcp(wire);
      expect(r).toMatchObject({ ok: true, index: i, encrypted: true, ssrc: 0x1234_5678 });
      if (r.ok) expect(r.packet).toEqual(plain);
    }
    expect(receiver.stats.rtcp).toMatchObject({ received: 3, accepted: 3 });
  });

  it("rejects a replayed and a tampered SRTCP packet, counted apart from SRTP", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const wire = protectRtcp(sender, rtcp());
    expect(receiver.unprotectRtcp(wire).ok).toBe(true);
    expect(receiver.unprotectRtcp(wire)).toEqual({ ok: false, reason: "replay" });
    const next = protectRtcp(sender, rtcp());
    const forged = Buffer.from(next);
    forged[10] = (forged[10] as number) ^ 4;
    expect(receiver.unprotectRtcp(forged)).toEqual({ ok: false, reason: "bad-tag" });
    // Rewriting the index (to dodge the replay list) breaks the tag: the index is authenticated.
    const renumbered = Buffer.from(wire);
    renumbered.writeUInt32BE(0x8000_0009, 32);
    expect(receiver.unprotectRtcp(renumbered)).toEqual({ ok: false, reason: "bad-tag" });
    expect(receiver.unprotectRtcp(next).ok).toBe(true);
    expect(receiver.stats.rtcp).toMatchObject({ received: 5, accepted: 2, replayed: 1, badTag: 2 });
    expect(receiver.stats.rtp.received).toBe(0);
  });

  it("accepts an authenticated packet with E = 0 and leaves it unencrypted", () => {
    const keys = deriveSessionKeys(MASTER_KEY, MASTER_SALT).rtcp;
    const plain = rtcp();
    const authenticated = Buffer.concat([plain, hex("00000005")]);
    const tag = createHmac("sha1", keys.authKey).update(authenticated).digest().subarray(0, 10);
    const r = new SrtpReceiver(policy()).unprotectRtcp(Buffer.concat([authenticated, tag]));
    expect(r).toMatchObject({ ok: true, index: 5, encrypted: false });
    if (r.ok) expect(r.packet).toEqual(plain);
  });

  it("keeps an SRTCP index and replay list per SSRC", () => {
    const sender = new SrtpSender(policy());
    const receiver = new SrtpReceiver(policy());
    const a = protectRtcp(sender, rtcp(1));
    const b = protectRtcp(sender, rtcp(2));
    expect(a.readUInt32BE(32)).toBe(0x8000_0000);
    expect(b.readUInt32BE(32)).toBe(0x8000_0000);
    expect(receiver.unprotectRtcp(a).ok).toBe(true);
    expect(receiver.unprotectRtcp(b).ok).toBe(true);
  });

  it("refuses to wrap the 31-bit SRTCP index under one key", () => {
    const sender = new SrtpSender(policy(), { initialSrtcpIndex: 0x7fff_ffff });
    const last = protectRtcp(sender, rtcp());
    expect(last.readUInt32BE(32)).toBe(0xffff_ffff);
    expect(sender.protectRtcp(rtcp())).toEqual({ ok: false, reason: "exhausted" });
  });
});

describe("32-bit tag suite", () => {
  it("appends a 4-octet SRTP tag, keeps 10 octets for SRTCP, and still detects tampering", () => {
    const p32 = policy("AES_CM_128_HMAC_SHA1_32");
    const sender = new SrtpSender(p32);
    const receiver = new SrtpReceiver(p32);
    const plain = rtp(1);
    const wire = protect(sender, plain);
    expect(wire.length).toBe(plain.length + 4);
    expect(receiver.unprotectRtp(wire).ok).toBe(true);
    const forged = protect(sender, rtp(2));
    forged[forged.length - 1] = (forged[forged.length - 1] as number) ^ 1;
    expect(receiver.unprotectRtp(forged)).toEqual({ ok: false, reason: "bad-tag" });
    expect(protectRtcp(sender, rtcp()).length).toBe(32 + 4 + 10);
    // An 80-bit receiver reads the last 10 octets as the tag of a shorter packet: no match.
    expect(new SrtpReceiver(policy()).unprotectRtp(protect(new SrtpSender(p32), plain)).ok).toBe(false);
  });
});

describe("MKI", () => {
  const mki1 = { value: 1, length: 4 };

  it("puts the MKI between the encrypted portion and the tag, and accepts a match", () => {
    const sender = new SrtpSender(policy(undefined, { mki: mki1 }));
    const receiver = new SrtpReceiver(policy(undefined, { mki: mki1 }));
    const plain = rtp(1);
    const wire = protect(sender, plain);
    expect(wire.length).toBe(plain.length + 4 + 10);
    expect(wire.subarray(plain.length, plain.length + 4)).toEqual(hex("00000001"));
    expect(receiver.unprotectRtp(wire).ok).toBe(true);
    const rtcpWire = protectRtcp(sender, rtcp());
    expect(rtcpWire.subarray(36, 40)).toEqual(hex("00000001"));
    expect(receiver.unprotectRtcp(rtcpWire).ok).toBe(true);
  });

  it("rejects an unknown MKI, for SRTP and SRTCP, and counts it", () => {
    const sender = new SrtpSender(policy(undefined, { mki: { value: 2, length: 4 } }));
    const receiver = new SrtpReceiver(policy(undefined, { mki: mki1 }));
    expect(receiver.unprotectRtp(protect(sender, rtp(1)))).toEqual({ ok: false, reason: "mki" });
    expect(receiver.unprotectRtcp(protectRtcp(sender, rtcp()))).toEqual({ ok: false, reason: "mki" });
    expect(receiver.stats.rtp.mki).toBe(1);
    expect(receiver.stats.rtcp.mki).toBe(1);
  });

  it("follows a re-key to another MKI without losing the ROC, then drops the old key", () => {
    const oldKey = policy(undefined, { mki: mki1 });
    const newKey: SrtpPolicy = {
      suite: "AES_CM_128_HMAC_SHA1_80",
      masterKey: Buffer.alloc(16, 7),
      masterSalt: Buffer.alloc(14, 9),
      mki: { value: 2n, length: 4 },
    };
    const sender = new SrtpSender(oldKey);
    const receiver = new SrtpReceiver(oldKey);
    const late = protect(sender, rtp(65534));
    expect(receiver.unprotectRtp(protect(sender, rtp(65535))).ok).toBe(true);
    receiver.addKey(newKey);
    sender.rekey(newKey);
    const wire = protect(sender, rtp(0));
    expect(wire.subarray(172, 176)).toEqual(hex("00000002"));
    expect(receiver.unprotectRtp(wire)).toMatchObject({ ok: true, index: 65536 });
    expect(receiver.unprotectRtp(late)).toMatchObject({ ok: true, index: 65534 });
    const rtcpWire = protectRtcp(sender, rtcp());
    expect(receiver.unprotectRtcp(rtcpWire)).toMatchObject({ ok: true, index: 0 });
    expect(receiver.removeKey(mki1)).toBe(true);
    const stale = new SrtpSender(oldKey);
    expect(receiver.unprotectRtp(protect(stale, rtp(1)))).toEqual({ ok: false, reason: "mki" });
  });
});

describe("configuration errors throw HandsetError with a code", () => {
  const code = (f: () => unknown) => {
    try {
      f();
    } catch (e) {
      return e instanceof HandsetError ? e.code : `not a HandsetError: ${String(e)}`;
    }
    return "no throw";
  };

  it("splits the 30-octet inline key and refuses any other length", () => {
    const inline = Buffer.concat([MASTER_KEY, MASTER_SALT]);
    expect(masterKeyFromInline(inline)).toEqual({ masterKey: MASTER_KEY, masterSalt: MASTER_SALT });
    expect(code(() => masterKeyFromInline(inline.subarray(0, 29)))).toBe("srtp-key-length");
    const { masterKey, masterSalt } = masterKeyFromInline(inline);
    const wire = protect(new SrtpSender({ suite: "AES_CM_128_HMAC_SHA1_80", masterKey, masterSalt }), rtp(3));
    expect(new SrtpReceiver(policy()).unprotectRtp(wire).ok).toBe(true);
  });

  it("refuses wrong key and salt lengths, unknown suites and bad MKIs", () => {
    expect(code(() => new SrtpSender({ ...policy(), masterKey: Buffer.alloc(15) }))).toBe("srtp-key-length");
    expect(code(() => new SrtpReceiver({ ...policy(), masterSalt: Buffer.alloc(16) }))).toBe(
      "srtp-key-length",
    );
    expect(code(() => new SrtpSender({ ...policy(), suite: "AES_CM_256_HMAC_SHA1_80" as SrtpSuite }))).toBe(
      "srtp-suite",
    );
    expect(code(() => new SrtpSender(policy(undefined, { mki: { value: 256, length: 1 } })))).toBe(
      "srtp-mki",
    );
    expect(code(() => new SrtpSender(policy(undefined, { mki: { value: 1, length: 0 } })))).toBe("srtp-mki");
    expect(
      code(
        () =>
          new SrtpReceiver([
            policy(undefined, { mki: mkiOf(1, 4) }),
            policy(undefined, { mki: mkiOf(1, 4) }),
          ]),
      ),
    ).toBe("srtp-mki");
    expect(
      code(
        () =>
          new SrtpReceiver([
            policy(undefined, { mki: mkiOf(1, 4) }),
            policy(undefined, { mki: mkiOf(2, 2) }),
          ]),
      ),
    ).toBe("srtp-mki");
    expect(code(() => new SrtpReceiver([]))).toBe("srtp-policy");
    expect(code(() => new SrtpSender(policy()).rekey(policy()))).toBe("srtp-mki");
    expect(code(() => new SrtpReceiver(policy()).addKey(policy()))).toBe("srtp-mki");
  });
});

function mkiOf(value: number, length: number) {
  return { value, length };
}
