// The engine's decode step alone, on the GPU machine: dummy int4 g128 shapes, a few batch sizes, median over 40
// steps after a 128-token prefill. Small and quick so that scripts/gpu/run.sh can repeat it under different
// environment variables (TPSERVE_ABLATE, TPSERVE_ATTN_*, ...) in separate processes and compare the steps.
// Appends one JSON line per (shape, batch) to --out FILE with the --label given. Flags: --shapes a,b --batches
// 1,8,32 --prompt N --label TEXT --out FILE.
import { appendFileSync } from "node:fs";
import { join } from "node:path";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import { workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine } from "../services/worker/server.js";
import { batchOf, median } from "./batch.js";

const f = new Flags(process.argv.slice(2));
const shapes = f.string("shapes", "llama-2-7b").split(",");
const batches = f
  .string("batches", "1,8,32")
  .split(",")
  .map((b) => Number.parseInt(b, 10));
const prompt = f.int("prompt", 128, 1, 100000);
const label = f.string("label", "");
const out = f.string("out", join(packageRoot(), "bench", "results", "gpu-step.jsonl"));
f.rejectUnknown();

const STEPS = 40;
for (const shape of shapes) {
  const maxB = Math.max(...batches);
  const pagesPerSeq = Math.ceil((prompt + STEPS + 1) / 16);
  const { engine, model } = createEngine({
    ...workerConfigFromFlags(new Flags([])),
    model: join(packageRoot(), "models", "dummy", shape),
    loadFormat: "dummy",
    quantization: "int4",
    groupSize: 128,
    numPages: maxB * pagesPerSeq + 1,
    maxBatchTokens: 4096,
    device: "cuda:0",
    port: 0,
  });
  const line: string[] = [];
  for (const b of batches) {
    const seqs = Array.from({ length: b }, (_, i) => ({
      tokens: Array.from({ length: prompt }, (_, j) => 3 + ((i * 7919 + j * 104729) % (model.vocabSize - 3))),
      ctx: prompt,
      pages: Array.from({ length: pagesPerSeq }, (_, p) => 1 + i * pagesPerSeq + p),
    }));
    const per = Math.max(1, Math.floor(4096 / prompt));
    for (let i = 0; i < b; i += per) await engine.forwardArgmax(batchOf(seqs.slice(i, i + per)));
    const times: number[] = [];
    for (let s = 0; s < STEPS; s++) {
      const step = batchOf(seqs.map((q) => ({ tokens: [5 + s], ctx: prompt + s + 1, pages: q.pages })));
      const t = performance.now();
      await engine.forwardArgmax(step);
      times.push(performance.now() - t);
    }
    const ms = median(times.slice(4));
    line.push(`b${b} ${ms.toFixed(3)} ms`);
    appendFileSync(
      out,
      `${JSON.stringify({ label, shape, batch: b, prompt, stepMs: ms, device: engine.info().device })}\n`,
    );
  }
  console.log(`${label.padEnd(24)} ${shape}: ${line.join(", ")}`);
  engine.close();
}
