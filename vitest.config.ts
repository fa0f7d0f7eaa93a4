import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    // The image build and its emulated boots: `npm run test:image` (vitest.image.config.ts).
    exclude: ["test/image/**", "**/node_modules/**"],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    // Integration tests start servers on ephemeral loopback ports; two workers fit our 2 cores.
    pool: "forks",
    maxWorkers: 2,
  },
});
