/**
 * Issue 9 §4, the storm with primary AND backup: 1 000 phone cores (the real registrar policy,
 * a stand-in mechanism; test/scenarios/storm-failover.ts) homed on a primary that dies. No second
 * at the backup may hold more than 5 % of the arrivals; while the primary is back but refuses
 * REGISTER (503 after the TLS connect) no phone leaves the backup; once it answers, every phone
 * fails back through its side registration, leaving no binding on the backup.
 */
import { describe, expect, it } from "vitest";
import { failoverStorm } from "../scenarios/storm-failover.ts";

describe("failover storm: 1 000 phones, primary and backup", () => {
  for (const [death, seed] of [
    ["reset", 42],
    ["reset", 7],
    ["silent", 42],
  ] as const) {
    it(`primary dies (${death}, seed ${seed}): ≤ 5 % of arrivals in any second at the backup, no flap while it refuses, failback after a successful REGISTER`, async () => {
      const r = await failoverStorm({ phones: 1000, death, seed });
      expect(r.registered_on_primary_before).toBe(1000);
      expect(r.backup_arrivals).toBe(1000);
      expect(r.registered_on_backup_after_death).toBe(1000);
      expect(r.backup_worst_second_share).toBeLessThanOrEqual(0.05);
      // While the primary refuses: it is probed (a side flow, a REGISTER refused) but nobody flaps.
      expect(r.failback_probes_while_refusing).toBeGreaterThan(1000);
      expect(r.refused_registers_while_refusing).toBe(r.failback_probes_while_refusing);
      expect(r.flaps_while_refusing).toBe(0);
      expect(r.registered_on_backup_while_primary_refuses).toBe(1000);
      // Back: all home, spread by the probe jitter, nothing left bound on the backup.
      expect(r.registered_on_primary_after_return).toBe(1000);
      expect(r.bindings_left_on_backup).toBe(0);
      expect(r.failback_worst_second_share).toBeLessThanOrEqual(0.05);
    });
  }
});
