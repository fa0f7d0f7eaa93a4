/**
 * Child process for the power-loss test: saves identity records in a loop with the real
 * nodeFileSystem until it is killed. Each record carries a sequence number (lastGoodTime) and
 * one of the pre-made credentials (seq mod n). Prints "ready <seq>" once loaded, then
 * "saved <seq> <ms>" after every save() resolves (stdout to a pipe is synchronous on Linux, so an
 * acknowledged number is in the pipe before the next write starts). "boot" comes first, once
 * the modules are loaded and before the store is touched.
 *
 *   node --import tsx test/store/power-loss-writer.ts <store-dir> <pairs.json>
 */
import { readFileSync } from "node:fs";
import { nodeFileSystem } from "../../firmware/platform/file-system.ts";
import { IdentityStore } from "../../firmware/store/identity-store.ts";
import type { TestPair } from "./fixtures.ts";

const [dir, pairsFile] = process.argv.slice(2);
if (!dir || !pairsFile) {
  process.stderr.write("usage: power-loss-writer <store-dir> <pairs.json>\n");
  process.exit(2);
}
const pairs = JSON.parse(readFileSync(pairsFile, "utf8")) as TestPair[];
const store = new IdentityStore(nodeFileSystem, dir);
process.stdout.write("boot\n");
const start = await store.loadOrCreate();
let seq = start.lastGoodTime ?? 0;
process.stdout.write(`ready ${seq}\n`);
for (;;) {
  seq++;
  const { serial, uri, certPem, keyPem, notBefore, notAfter } = pairs[seq % pairs.length]!;
  const n = seq;
  const t0 = performance.now();
  await store.update((r) => ({
    ...r,
    lastGoodTime: n,
    credential: { uri, certPem, keyPem, notBefore, notAfter, serial },
    registrars: { ...r.registrars, primary: `pool${n % 7}.lab.test:5061`, updatedAt: n },
  }));
  process.stdout.write(`saved ${seq} ${(performance.now() - t0).toFixed(1)}\n`);
}
