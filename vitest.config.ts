import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start servers on ephemeral loopback ports; two workers fit our 2 cores.
    pool: "forks",
    maxWorkers: 2,
  },
});
