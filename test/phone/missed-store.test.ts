/**
 * Missed calls kept across a restart (issue 12): the list in flash (firmware/phone/missed-store.ts)
 * and the phone restoring it at power-on, saving when the user looks at it, emptying it at
 * sign-out. A MemoryFileSystem is the flash; the phone is fakes.ts's rig.
 */
import { describe, expect, it } from "vitest";
import type { MissedCall } from "../../firmware/phone/calls.ts";
import { MISSED_FILE, MISSED_KEPT_MAX, missedCallFile } from "../../firmware/phone/missed-store.ts";
import { MemoryFileSystem } from "../store/memory-file-system.ts";
import { flush, phoneRigs } from "./fakes.ts";

const started = phoneRigs();
const AT = Date.UTC(2026, 0, 1, 8, 30);
const call = (n: number, o: Partial<MissedCall> = {}): MissedCall => ({
  name: `Caller ${n}`,
  number: String(4700 + n),
  uri: `sip:${4700 + n}@lab.test`,
  at: AT - n * 60_000,
  busy: false,
  ...o,
});

describe("the missed-calls file", () => {
  it("round trip, only the five fields of each entry, bounded in entries and unseen", async () => {
    const fs = new MemoryFileSystem();
    const store = missedCallFile(fs, "/store", { max: 3 });
    const extra = { ...call(1), pin: "1234" } as MissedCall;
    await store.save({ v: 1, missed: [extra, call(2), call(3), call(4)], unseen: 9 });
    const back = await store.load();
    expect(back).toEqual({ v: 1, missed: [call(1), call(2), call(3)], unseen: 3 });
    const raw = JSON.parse((await fs.readFile(`/store/${MISSED_FILE}`))!.toString("utf8"));
    expect(raw.missed[0]).not.toHaveProperty("pin");
  });

  it("a damaged or foreign file is no list (and says why), never an error", async () => {
    const fs = new MemoryFileSystem();
    const reasons: string[] = [];
    const store = missedCallFile(fs, "/store", { onDamaged: (r) => reasons.push(r) });
    await fs.mkdirp("/store", 0o700);
    await fs.writeFileAtomic(`/store/${MISSED_FILE}`, Buffer.from("{not json"), 0o600);
    expect(await store.load()).toBeUndefined();
    const tooMany = Array.from({ length: MISSED_KEPT_MAX + 1 }, (_, i) => call(i));
    await fs.writeFileAtomic(
      `/store/${MISSED_FILE}`,
      Buffer.from(JSON.stringify({ v: 1, missed: tooMany, unseen: 0 })),
      0o600,
    );
    expect(await store.load()).toBeUndefined();
    await fs.writeFileAtomic(
      `/store/${MISSED_FILE}`,
      Buffer.from(JSON.stringify({ v: 1, missed: [{ ...call(1), name: "x".repeat(300) }], unseen: 0 })),
      0o600,
    );
    expect(await store.load()).toBeUndefined();
    expect(reasons).toEqual([
      `${MISSED_FILE}: not JSON`,
      `${MISSED_FILE}: unexpected content`,
      `${MISSED_FILE}: unexpected content`,
    ]);
  });
});

describe("the phone keeps its missed calls across a restart", () => {
  it("restores them at power-on (unseen still counted), saves when seen, empties them at sign-out", async () => {
    const fs = new MemoryFileSystem();
    const store = missedCallFile(fs, "/store");
    await store.save({ v: 1, missed: [call(1), call(2, { busy: true })], unseen: 1 });

    const r = started();
    r.services.missedCalls = store;
    await r.bootToRegistered();
    await flush();
    expect(r.phone.calls.missed).toEqual([call(1), call(2, { busy: true })]);
    expect(r.phone.calls.unseenMissed).toBe(1);
    expect(r.phone.view().calls?.unseenMissed).toBe(1);

    // The missed list screen from idle marks them seen: in flash too.
    r.keys.press("soft4");
    await flush();
    expect(r.phone.uiMode).toBe("missed");
    await expect.poll(async () => (await store.load())?.unseen).toBe(0);
    expect((await store.load())?.missed).toHaveLength(2);

    r.keys.press("soft1"); // Back
    await r.phone.requestSignOut();
    await flush();
    expect(r.phone.calls.missed).toEqual([]);
    await expect.poll(async () => (await store.load())?.missed).toEqual([]);
  });

  it("a file that cannot be read leaves the phone starting with an empty list", async () => {
    const r = started();
    r.services.missedCalls = {
      load: () => Promise.reject(new Error("flash read failed")),
      save: () => Promise.resolve(),
    };
    await r.bootToRegistered();
    await flush();
    expect(r.phone.state).toBe("registered");
    expect(r.phone.calls.missed).toEqual([]);
  });
});
