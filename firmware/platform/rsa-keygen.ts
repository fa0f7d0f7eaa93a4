/** RSA key pairs for the phone's client certificate: Node's native generator, off the main thread. */
import { generateKeyPair } from "node:crypto";

export function generateRsaKeyPair(
  bits: 2048 = 2048,
): Promise<{ publicKeyPem: string; privateKeyPem: string }> {
  return new Promise((resolve, reject) => {
    generateKeyPair(
      "rsa",
      {
        modulusLength: bits,
        publicExponent: 0x10001,
        publicKeyEncoding: { type: "spki", format: "pem" },
        privateKeyEncoding: { type: "pkcs8", format: "pem" },
      },
      (err, publicKeyPem, privateKeyPem) => (err ? reject(err) : resolve({ publicKeyPem, privateKeyPem })),
    );
  });
}
