/**
 * Which protocol a datagram on a shared media socket belongs to. With ICE, DTLS-SRTP and
 * rtcp-mux, STUN checks, the DTLS handshake, RTP and RTCP all arrive on one 5-tuple; RFC 7983
 * §7 tells them apart by the first byte alone, because each protocol's first byte falls in its
 * own range:
 *
 *   0–3     STUN           (message type's top two bits are 0, RFC 5389 §6)
 *   16–19   ZRTP
 *   20–63   DTLS           (the record's content type: 20 change_cipher_spec … 23 application_data)
 *   64–79   TURN channel   (channel numbers 0x4000–0x4FFF, RFC 8656)
 *   128–191 RTP or RTCP    (version 2 in the top two bits)
 *   anything else          drop
 *
 * RTP and RTCP are then told apart by the second byte (RFC 5761 §4): RTCP packet types
 * 192–223 (SR 200, RR 201, SDES 202, BYE 203, APP 204, RTPFB 205, PSFB 206, XR 207 …) sit where
 * an RTP packet's M bit and payload type 64–95 would be, which is why RTP with rtcp-mux must
 * not use payload types 64–95.
 *
 * Only the ranges are judged here; each protocol's own parser checks the rest. RFC 9443 later
 * widened the ranges for QUIC multiplexing; we carry no QUIC, so the RFC 7983 table stands.
 */

export type PacketKind = "stun" | "zrtp" | "dtls" | "turn-channel" | "rtp" | "rtcp" | "unknown";

/** Classifies a datagram by its first bytes; never throws, whatever the bytes. */
export function classifyPacket(bytes: Uint8Array): PacketKind {
  const b0 = bytes[0];
  if (b0 === undefined) return "unknown";
  if (b0 <= 3) return "stun";
  if (b0 >= 16 && b0 <= 19) return "zrtp";
  if (b0 >= 20 && b0 <= 63) return "dtls";
  if (b0 >= 64 && b0 <= 79) return "turn-channel";
  if (b0 >= 128 && b0 <= 191) {
    const b1 = bytes[1];
    // One byte with V=2 could be either; without the second byte there is nothing to decide on.
    if (b1 === undefined) return "unknown";
    return isRtcpPacketType(b1) ? "rtcp" : "rtp";
  }
  return "unknown";
}

/** RFC 5761 §4: an RTCP packet type as the second byte of a muxed packet. */
export function isRtcpPacketType(secondByte: number): boolean {
  return secondByte >= 192 && secondByte <= 223;
}

/**
 * An RTP payload type that must not be used on a muxed session because, with the M bit set, it
 * would read as an RTCP packet type (RFC 5761 §4). SDP negotiation uses this to refuse them.
 */
export function payloadTypeCollidesWithRtcp(payloadType: number): boolean {
  return payloadType >= 64 && payloadType <= 95;
}
