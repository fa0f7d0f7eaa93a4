/** Credentials for store tests: a lab CA issues a few client certificates, once per file. */
import { LabCa, newRsaKey } from "../lab/ca.ts";

export interface TestPair {
  uri: string;
  certPem: string;
  keyPem: string;
  serial: string;
  notBefore: number;
  notAfter: number;
}

export async function makePairs(
  n: number,
): Promise<{ caPem: string; pairs: TestPair[]; strayKeyPem: string }> {
  const ca = await LabCa.create("Store Test CA");
  const pairs: TestPair[] = [];
  for (let i = 0; i < n; i++) {
    const uri = `sip:47${10 + i}@lab.test`;
    const issued = await ca.issueClient(uri.slice(4));
    pairs.push({
      uri,
      certPem: issued.cert,
      keyPem: issued.key,
      serial: issued.serial,
      notBefore: issued.notAfter.getTime() - 180 * 86_400_000,
      notAfter: issued.notAfter.getTime(),
    });
  }
  const stray = await newRsaKey();
  return { caPem: ca.cert, pairs, strayKeyPem: stray.privateKey };
}
