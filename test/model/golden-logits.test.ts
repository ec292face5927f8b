// The engine against the golden references, with teacher forcing: first-step logits of all six prompts within
// 1e-4 absolute (measured: under 1e-5, logits up to ~12), the top-5 logits of all 32 steps likewise, and the
// greedy choice of every step equal to the reference's, unquantized and int4 g128 symmetric.
import { afterAll, describe, expect, it } from "vitest";
import type { Engine } from "../../native/index.js";
import { Flags } from "../../services/common/flags.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import { createEngine } from "../../services/worker/server.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;
const TOLERANCE = 1e-4;
const VOCAB = 4096;

async function teacherForced(engine: Engine, ids: number[]): Promise<Float32Array> {
  const n = ids.length;
  const pages = Math.ceil(n / 16);
  return engine.forward({
    tokens: Int32Array.from(ids),
    seqLens: Int32Array.of(n),
    contextLens: Int32Array.of(n),
    blockTables: Int32Array.from({ length: pages }, (_, i) => i + 1),
    maxBlocksPerSeq: pages,
    logits: "all",
  });
}

function argmax(row: Float32Array, off: number): number {
  let best = 0;
  for (let v = 1; v < VOCAB; v++) if (row[off + v]! > row[off + best]!) best = v;
  return best;
}

describe.each(["none", "int4"] as const)("golden logits, quantization %s", (quantization) => {
  const engines: Engine[] = [];
  afterAll(() => {
    for (const e of engines) e.close();
  });

  it("matches the reference at every step of all six prompts", async () => {
    const { engine } = createEngine({
      ...workerConfigFromFlags(new Flags([])),
      quantization,
      groupSize: 128,
      numPages: 8,
      threads: 1,
    });
    engines.push(engine);
    let worst = 0;
    for (const g of golden) {
      const ref = quantization === "none" ? g.greedy_ids : g.rtn_int4_g128_sym_greedy_ids;
      const ids = [...g.prompt_ids, ...ref.slice(0, -1)];
      const logits = await teacherForced(engine, ids);
      for (let s = 0; s < ref.length; s++) {
        const off = (g.prompt_ids.length - 1 + s) * VOCAB;
        expect(argmax(logits, off), `prompt "${g.prompt}" step ${s}`).toBe(ref[s]);
        if (quantization !== "none") continue;
        const st = g.steps[s]!;
        for (let k = 0; k < 5; k++)
          worst = Math.max(worst, Math.abs(logits[off + st.top5_ids[k]!]! - st.top5_logits[k]!));
        if (s === 0) {
          for (let v = 0; v < VOCAB; v++) worst = Math.max(worst, Math.abs(logits[off + v]! - g.first_step_logits[v]!));
        }
      }
    }
    expect(worst).toBeLessThan(TOLERANCE);
  });
});
