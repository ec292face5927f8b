import { defineConfig } from "vitest/config";

export default defineConfig({
  test: {
    include: ["test/**/*.test.ts"],
    exclude: ["**/node_modules/**", "dist/**"],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // The native engine uses both cores; files in parallel would only slow each other down.
    fileParallelism: false,
  },
});
