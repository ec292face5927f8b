// bench/shapes holds one tensor-parallel rank's matrices as a model of its own (bench/gpu-step.ts times them on one
// GPU). Each must have exactly the tensor shapes that rank 0 of its group holds of the full dummy model.
import { readdirSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadModelConfig } from "../../services/common/model/config.js";
import { packageRoot } from "../../services/common/paths.js";
import { tensorSpecs } from "../../services/worker/load.js";
import { checkTpShape, shardSlice, sliceShape } from "../../services/worker/shard.js";

const dir = join(packageRoot(), "bench", "shapes");
const names = readdirSync(dir).filter((n) => /-tp\d+-rank$/.test(n));

describe("bench/shapes", () => {
  it("has rank shapes", () => {
    expect(names.length).toBeGreaterThan(0);
  });
  for (const name of names) {
    it(`${name} is rank 0's shard of its model`, () => {
      const m = /^(.*)-tp(\d+)-rank$/.exec(name);
      const full = loadModelConfig(join(packageRoot(), "models", "dummy", m?.[1] ?? ""));
      const world = Number(m?.[2]);
      checkTpShape(full, world);
      const rank = loadModelConfig(join(dir, name));
      const want = new Map(
        tensorSpecs(full).map((s) => [s.name, sliceShape(s, shardSlice(s, full, { rank: 0, world }))]),
      );
      const got = new Map(tensorSpecs(rank).map((s) => [s.name, s.shape]));
      expect([...got.keys()].sort()).toEqual([...want.keys()].sort());
      for (const [n, shape] of want) expect(got.get(n), n).toEqual(shape);
    });
  }
});
