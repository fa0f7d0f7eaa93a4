/**
 * SDP samples shared by the SDP codec and offer/answer tests: one Lync 2013 offer serves both.
 */

/** Lines joined as SDP is sent: CRLF after every line. */
export const crlf = (lines: string[]): string => `${lines.join("\r\n")}\r\n`;

/** The inline keys of the Lync offer's a=crypto:2 and a=crypto:3 (base64 of key || salt). */
export const LYNC_KEY_2 = "ZPslBVcUEyl4NkQI4ls0w01yOEVCDCb0X6H8cSQp";
export const LYNC_KEY_3 = "tqjBlJriNKNA1k6sDRPWnzEsDRgfwM2zOX9VNB5r";

/**
 * A Lync 2013 audio/video offer shaped after the client offer of MS-SDPEXT §4 ("SDP examples":
 * session-level x-mediabw and x-devicecaps, ICE candidates including TCP-PASS/TCP-ACT relays,
 * rtcp-fb x-message), completed with the lines that example elides the way the client writes
 * them: a=x-ssrc-range, a=label, a=cryptoscale and a=crypto (keys are ours), the RT-Audio,
 * SIREN, G.722 stereo and CN/16000 formats. The client ends each candidate line with a space and
 * the example's "a=ice-ufrag: 6nxO" has one after the colon: both must survive a round trip.
 */
export const LYNC_OFFER = crlf([
  "v=0",
  "o=- 0 0 IN IP4 172.24.32.152",
  "s=session",
  "c=IN IP4 172.24.32.152",
  "b=CT:99980",
  "t=0 0",
  "a=x-mediabw:main-video send=585;recv=1416",
  "a=x-devicecaps:audio:send,recv;video:send,recv",
  "m=audio 50005 RTP/AVP 117 114 9 111 112 115 116 8 0 97 13 118 101",
  "a=x-ssrc-range:2634960950-2634960950",
  "a=rtcp-fb:* x-message app send:dsh recv:dsh",
  "a=rtcp-rsize",
  "a=label:main-audio",
  "a=x-source:main-audio",
  "a=ice-ufrag: 6nxO",
  "a=ice-pwd: G6rUJNNaobz8IdDZrAbyFDoO",
  "a=candidate:1 1 UDP 2130706431 172.24.32.152 50005 typ host ",
  "a=candidate:1 2 UDP 2130705918 172.24.32.152 50009 typ host ",
  "a=candidate:2 1 TCP-PASS 6556159 172.29.105.171 53127 typ relay raddr 172.29.105.171 rport 53127 ",
  "a=candidate:2 2 TCP-PASS 6556158 172.29.105.171 53127 typ relay raddr 172.29.105.171 rport 53127 ",
  "a=candidate:3 1 UDP 16648703 172.29.105.171 59353 typ relay raddr 172.29.105.171 rport 59353 ",
  "a=candidate:3 2 UDP 16648702 172.29.105.171 59627 typ relay raddr 172.29.105.171 rport 59627 ",
  "a=candidate:4 1 TCP-ACT 7076863 172.29.105.171 53127 typ relay raddr 172.29.105.171 rport 53127 ",
  "a=candidate:4 2 TCP-ACT 7076350 172.29.105.171 53127 typ relay raddr 172.29.105.171 rport 53127 ",
  "a=candidate:5 1 TCP-ACT 1684797951 172.24.32.152 50004 typ srflx raddr 172.24.32.152 rport 50004 ",
  "a=x-candidate-ipv6:6 1 UDP 33553407 2001:db8::98 50012 typ host ",
  "a=cryptoscale:1 client AES_CM_128_HMAC_SHA1_80 inline:e+loCNO4Sae2hG1aPTImJA6YcvL8/t/I84v7I5Ex|2^31|1:1",
  `a=crypto:2 AES_CM_128_HMAC_SHA1_80 inline:${LYNC_KEY_2}|2^31|1:1`,
  `a=crypto:3 AES_CM_128_HMAC_SHA1_80 inline:${LYNC_KEY_3}|2^31`,
  "a=maxptime:200",
  "a=rtcp:50009",
  "a=rtpmap:117 G722/8000/2",
  "a=rtpmap:114 x-msrta/16000",
  "a=fmtp:114 bitrate=29000",
  "a=rtpmap:9 G722/8000",
  "a=rtpmap:111 SIREN/16000",
  "a=fmtp:111 bitrate=16000",
  "a=rtpmap:112 G7221/16000",
  "a=fmtp:112 bitrate=24000",
  "a=rtpmap:115 x-msrta/8000",
  "a=fmtp:115 bitrate=11800",
  "a=rtpmap:116 AAL2-G726-32/8000",
  "a=rtpmap:8 PCMA/8000",
  "a=rtpmap:0 PCMU/8000",
  "a=rtpmap:97 RED/8000",
  "a=rtpmap:13 CN/8000",
  "a=rtpmap:118 CN/16000",
  "a=rtpmap:101 telephone-event/8000",
  "a=fmtp:101 0-16",
  "a=ptime:20",
  "m=video 50010 RTP/AVP 122 121 123",
  "a=x-ssrc-range:2634960951-2634961050",
  "a=rtcp-fb:* x-message app send:src,x-pli recv:src,x-pli",
  "a=rtcp-rsize",
  "a=label:main-video",
  "a=x-source:main-video",
  "a=x-caps:121 263:1920:1080:30.0:2000000:1;4359:1280:720:30.0:1500000:1",
  "a=rtpmap:122 X-H264UC/90000",
  "a=fmtp:122 packetization-mode=1;mst-mode=NI-TC",
  "a=rtpmap:121 x-rtvc1/90000",
  "a=rtpmap:123 x-ulpfecuc/90000",
]);
