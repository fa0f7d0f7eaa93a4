/**
 * Published test vectors for the lab's NTLM (test/lab/ntlm.ts), as data.
 *
 * [MS-NLMP] §4.2 (Microsoft Open Specifications, "NT LAN Manager (NTLM) Authentication Protocol",
 * learn.microsoft.com/openspecs/windows_protocols/ms-nlmp, §4.2.1 common values, §4.2.2 NTLM v1,
 * §4.2.4 NTLMv2). The byte strings were read as quoted, with their section numbers, by independent
 * public test suites (gss-ntlmssp's tests/ntlmssptest.c "Test Data as per para 4.2 of MS-NLMP", and
 * several NTLM libraries' §4.2.4.1.1/§4.2.4.1.2/§4.2.4.2.2 tests, which agree byte for byte); the
 * §4.2.4 page itself shows the challenge flags 33 82 8a e2 and the AV pairs Server / Domain used
 * here. The tests also recompute every derived value from the §4.2.1 inputs, so a mistyped byte
 * cannot pass.
 *
 * MD4: RFC 1320 appendix A.5 ("MD4 test suite"). RC4: RFC 6229 §2, 128-bit key
 * 0x0102…0f10, keystream at offset 0.
 */

// §4.2.1 Common values.
export const USER = "User";
export const DOMAIN = "Domain";
export const PASSWORD = "Password";
export const SERVER_NAME = "Server";
export const WORKSTATION = "COMPUTER";
export const RANDOM_SESSION_KEY = Buffer.alloc(16, 0x55);
export const TIME = Buffer.alloc(8); // 0
export const CLIENT_CHALLENGE = Buffer.alloc(8, 0xaa);
export const SERVER_CHALLENGE = Buffer.from("0123456789abcdef", "hex");

/** §4.2.2.1.2 NTOWFv1("Password"). */
export const NTOWFV1 = Buffer.from("a4f49c406510bdcab6824ee7c30fd852", "hex");

/** §4.2.4: the challenge flags (33 82 8a e2) and AV pairs of the NTLMv2 example. */
export const V2_CHALLENGE_FLAGS = 0xe28a8233;
/** MsvAvNbDomainName "Domain", MsvAvNbComputerName "Server", MsvAvEOL. */
export const V2_TARGET_INFO = Buffer.from(
  "02000c0044006f006d00610069006e00" + "01000c00530065007200760065007200" + "00000000",
  "hex",
);
/** §4.2.4.1.1 NTOWFv2("Password", "User", "Domain") = ResponseKeyNT (and ResponseKeyLM). */
export const NTOWFV2 = Buffer.from("0c868a403bfd7a93a3001ef22ef02e3f", "hex");
/** §4.2.4.1.2 Session Base Key. */
export const V2_SESSION_BASE_KEY = Buffer.from("8de40ccadbc14a82f15cb0ad0de95ca3", "hex");
/** §4.2.4.2.1 LMv2 Response (16 bytes, then the client challenge). */
export const LMV2_RESPONSE = Buffer.from("86c35097ac9cec102554764a57cccc19", "hex");
/** §4.2.4.2.2 NTLMv2 Response: NTProofStr (the NT response's first 16 bytes). */
export const NT_PROOF_STR = Buffer.from("68cd0ab851e51c96aabc927bebef6a1c", "hex");
/** §4.2.4.2.3 Encrypted Session Key: RC4(SessionBaseKey, RandomSessionKey). */
export const V2_ENCRYPTED_SESSION_KEY = Buffer.from("c5dad2544fc9799094ce1ce90bc9d03e", "hex");

/** §4.2.4.3 CHALLENGE_MESSAGE (0x68 bytes). */
export const V2_CHALLENGE_MESSAGE = Buffer.from(
  "4e544c4d53535000020000000c000c003800000033828ae20123456789abcdef" +
    "00000000000000002400240044000000060070170000000f5300650072007600" +
    "6500720002000c0044006f006d00610069006e0001000c005300650072007600" +
    "6500720000000000",
  "hex",
);

/** §4.2.4.3 AUTHENTICATE_MESSAGE (0xE8 bytes): Domain\User from COMPUTER, NTLMv2, no MIC. */
export const V2_AUTHENTICATE_MESSAGE = Buffer.from(
  "4e544c4d5353500003000000180018006c00000054005400840000000c000c00" +
    "480000000800080054000000100010005c00000010001000d8000000358288e2" +
    "0501280a0000000f44006f006d00610069006e00550073006500720043004f00" +
    "4d005000550054004500520086c35097ac9cec102554764a57cccc19aaaaaaaa" +
    "aaaaaaaa68cd0ab851e51c96aabc927bebef6a1c010100000000000000000000" +
    "00000000aaaaaaaaaaaaaaaa0000000002000c0044006f006d00610069006e00" +
    "01000c005300650072007600650072000000000000000000c5dad2544fc97990" +
    "94ce1ce90bc9d03e",
  "hex",
);
/** The §4.2.4.3 AUTHENTICATE_MESSAGE's flags and VERSION. */
export const V2_AUTHENTICATE_FLAGS = 0xe2888235;
export const V2_AUTHENTICATE_VERSION = Buffer.from("0501280a0000000f", "hex");

/** §4.2.2.3 AUTHENTICATE_MESSAGE of the NTLM v1 example (0xAC bytes): a 24-byte NT response. */
export const V1_AUTHENTICATE_MESSAGE = Buffer.from(
  "4e544c4d5353500003000000180018006c00000018001800840000000c000c00" +
    "480000000800080054000000100010005c000000100010009c000000358280e2" +
    "0501280a0000000f44006f006d00610069006e00550073006500720043004f00" +
    "4d005000550054004500520098def7b87f88aa5dafe2df779688a172def11c7d" +
    "5ccdef1367c43011f30298a2ad35ece64f16331c44bdbed927841f94518822b1" +
    "b3f350c8958682ecbb3e3cb7",
  "hex",
);

/** RFC 1320 A.5. */
export const MD4_SUITE: Array<[string, string]> = [
  ["", "31d6cfe0d16ae931b73c59d7e0c089c0"],
  ["a", "bde52cb31de33e46245e05fbdbd6fb24"],
  ["abc", "a448017aaf21d8525fc10ae87aa6729d"],
  ["message digest", "d9130a8164549fe818874806e1c7014b"],
  ["abcdefghijklmnopqrstuvwxyz", "d79e1c308aa5bbcdeea8ed63df412da9"],
  ["ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", "043f8582f241db351ce627e153e7f0e4"],
  ["1234567890".repeat(8), "e33b4ddc9c38f2199c3e7b164fcc0536"],
];

/** RFC 6229 §2, key 0x0102030405060708090a0b0c0d0e0f10, keystream bytes 0–15. */
export const RC4_KEY = Buffer.from("0102030405060708090a0b0c0d0e0f10", "hex");
export const RC4_STREAM_0 = Buffer.from("9ac7cc9a609d1ef7b2932899cde41b97", "hex");
