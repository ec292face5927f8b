// Reruns the kernel and engine tests in child processes with TPSERVE_SIMD set to every level below the best one
// this CPU has, so each SIMD path (scalar, AVX2, AVX-512) is exercised on one machine.
import { spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";

const levels = ["scalar", "avx2", "avx512"];
const best = loadNative().buildInfo().simd;
const lower = levels.slice(0, levels.indexOf(best));
let root = import.meta.dirname;
while (!existsSync(join(root, "node_modules", "vitest", "vitest.mjs")) && dirname(root) !== root) root = dirname(root);

describe.skipIf(process.env["TPSERVE_SIMD"] !== undefined)(`other SIMD levels (best here: ${best})`, () => {
  for (const level of lower) {
    it(`kernel and engine tests pass with TPSERVE_SIMD=${level}`, () => {
      const r = spawnSync(
        process.execPath,
        [
          join(root, "node_modules", "vitest", "vitest.mjs"),
          "run",
          "test/native/kernels.test.ts",
          "test/native/engine.test.ts",
          "--reporter=verbose",
        ],
        {
          cwd: root,
          env: { ...process.env, TPSERVE_SIMD: level, CI: "1", NO_COLOR: "1", FORCE_COLOR: "0" },
          encoding: "utf8",
          timeout: 120_000,
        },
      );
      const out = `${r.stdout}\n${r.stderr}`;
      expect(out).toContain(`simd=${level}`);
      expect(r.status, out.slice(-3000)).toBe(0);
    }, 130_000);
  }
});
