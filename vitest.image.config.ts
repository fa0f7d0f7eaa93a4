import { defineConfig } from "vitest/config";

// `npm run test:image`: the image build and its emulated boots (test/image/), apart from
// `npm test` because they take minutes and need root and Debian's qemu/mmdebstrap (.ci/run
// installs them and runs this after `npm test`).
export default defineConfig({
  test: {
    include: ["test/image/**/*.test.ts"],
    testTimeout: 30 * 60_000,
    hookTimeout: 40 * 60_000,
    pool: "forks",
    maxWorkers: 1,
    fileParallelism: false,
  },
});
