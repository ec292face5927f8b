// Quantized checkpoints on the GPU against the CPU engine on the same files (run on the GPU machine; also runs
// with --device cpu, where both sides are the CPU engine). Checkpoints of the bundled model written by the
// project's writer (test/helpers/quant-checkpoint.ts: RTN codes, group 64, asymmetric, fp16 scales):
//   - GPTQ with act-order (a permuted g_idx) in every linear layer: the GPU gathers each such weight's input into
//     the stored column order (cuda::permute_cols) before the matmul;
//   - plain GPTQ and AWQ.
// For each: the greedy ids of the six golden prompts one at a time (prefill, then one-token decode steps: the
// batch-1 kernels and CUDA graphs), the argmax of a teacher-forced pass over the CPU's ids at every position, and
// the perplexity of brown.test.txt (its first --ppl-tokens tokens), GPU against CPU. A greedy id may differ only where the CPU's top-2 logit margin
// is below --margin (numeric error); the perplexity must be within 0.5%. Exit 1 otherwise.
// Usage: node dist/bench/gpu-quant.js [--device cuda:0] [--out FILE] [--margin 1e-3] [--ppl-tokens 16384]
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../native/index.js";
import { encodeDocuments, perplexity, readText } from "../services/cli/eval.js";
import { Flags } from "../services/common/flags.js";
import { loadModelConfig } from "../services/common/model/config.js";
import { loadTokenizer } from "../services/common/model/tokenizer.js";
import { bundledModelDir, packageRoot } from "../services/common/paths.js";
import { workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine } from "../services/worker/server.js";
import { type QuantCheckpointOptions, writeQuantCheckpoint } from "../test/helpers/quant-checkpoint.js";
import { batchOf } from "./batch.js";
import { greedyOneByOne } from "./decode.js";

const f = new Flags(process.argv.slice(2), []);
const device = f.string("device", "cuda:0");
const out = f.string("out", join(packageRoot(), "bench", "results", "gpu-quant-latest.json"));
const margin = f.float("margin", 1e-3, 0, 1);
// Perplexity over the first N tokens of brown.test.txt (0: all of it; the CPU side takes minutes on 2 cores).
const pplTokens = f.int("ppl-tokens", 16384, 0, 1e9);
f.rejectUnknown();

const bundled = loadModelConfig(bundledModelDir());
const VOCAB = bundled.vocabSize;
const golden = (
  JSON.parse(readText(join(bundledModelDir(), "golden.public.json"))) as {
    golden: { prompt: string; prompt_ids: number[] }[];
  }
).golden;
const allLinears = Array.from({ length: bundled.numLayers }, (_, l) =>
  [
    "self_attn.q_proj",
    "self_attn.k_proj",
    "self_attn.v_proj",
    "self_attn.o_proj",
    "mlp.gate_proj",
    "mlp.up_proj",
    "mlp.down_proj",
  ].map((m) => `model.layers.${l}.${m}`),
).flat();
const checkpoints: { label: string; opts: QuantCheckpointOptions }[] = [
  { label: "gptq g64 act-order", opts: { format: "gptq", groupSize: 64, actOrder: allLinears } },
  { label: "gptq g64", opts: { format: "gptq", groupSize: 64 } },
  { label: "awq g64", opts: { format: "awq", groupSize: 64 } },
];

function open(model: string, dev: string): Engine {
  const cfg = { ...workerConfigFromFlags(new Flags([])), model, quantization: "none" as const, device: dev, port: 0 };
  return createEngine({ ...cfg, numPages: 64, maxBatchTokens: 512 }).engine;
}

/** Logits of every position of prompt + ids (teacher-forced, one pass). */
async function teacherForced(engine: Engine, prompt: number[], ids: number[]): Promise<Float32Array> {
  const tokens = [...prompt, ...ids.slice(0, -1)];
  const pages = Array.from({ length: Math.ceil(tokens.length / 16) }, (_, i) => i + 1);
  return engine.forward(batchOf([{ tokens, ctx: tokens.length, pages }], true));
}

function argmaxAt(logits: Float32Array, row: number): { best: number; margin: number } {
  const off = row * VOCAB;
  let best = 0;
  let second = -Infinity;
  for (let v = 1; v < VOCAB; v++) {
    const x = logits[off + v]!;
    if (x > logits[off + best]!) {
      second = logits[off + best]!;
      best = v;
    } else if (x > second) {
      second = x;
    }
  }
  return { best, margin: logits[off + best]! - second };
}

const tok = loadTokenizer(bundledModelDir());
const allDocs = encodeDocuments(readText(join(packageRoot(), "data", "brown", "brown.test.txt")), tok, 2);
const docs = pplTokens > 0 ? allDocs.slice(0, pplTokens) : allDocs;
const rows: Record<string, unknown>[] = [];
let failed = false;
for (const { label, opts } of checkpoints) {
  const dir = writeQuantCheckpoint(opts);
  try {
    const cpu = open(dir, "cpu");
    const refIds = await greedyOneByOne(cpu, golden);
    const refLogits = await Promise.all(golden.map((g, i) => teacherForced(cpu, g.prompt_ids, refIds[i]!)));
    const refPpl = await perplexity(cpu, docs, { window: 512, blockSize: 16, vocab: VOCAB });
    cpu.close();
    const gpu = open(dir, device);
    const ids = await greedyOneByOne(gpu, golden);
    let aloneEqual = 0;
    let forcedEqual = 0;
    const differences: string[] = [];
    for (let i = 0; i < golden.length; i++) {
      if (JSON.stringify(ids[i]) === JSON.stringify(refIds[i])) aloneEqual++;
      const logits = await teacherForced(gpu, golden[i]!.prompt_ids, refIds[i]!);
      let ok = true;
      for (let s = 0; s < refIds[i]!.length; s++) {
        const row = golden[i]!.prompt_ids.length - 1 + s;
        const got = argmaxAt(logits, row).best;
        const ref = argmaxAt(refLogits[i]!, row);
        if (got === ref.best) continue;
        ok = false;
        const why = `prompt ${i} step ${s}: ${got} vs ${ref.best} (CPU top-2 margin ${ref.margin.toExponential(2)})`;
        differences.push(why);
        if (ref.margin >= margin) failed = true;
      }
      if (ok) forcedEqual++;
    }
    const ppl = await perplexity(gpu, docs, { window: 512, blockSize: 16, vocab: VOCAB });
    gpu.close();
    const rel = Math.abs(ppl.perplexity - refPpl.perplexity) / refPpl.perplexity;
    if (rel > 0.005) failed = true;
    rows.push({
      checkpoint: label,
      pplTokens: docs.length,
      device,
      aloneGreedyEqual: `${aloneEqual}/${golden.length}`,
      teacherForcedEqual: `${forcedEqual}/${golden.length}`,
      differences,
      perplexity: ppl.perplexity,
      perplexityCpu: refPpl.perplexity,
      perplexityRelDiff: rel,
    });
    console.log(
      `${label} on ${device}: greedy one at a time ${aloneEqual}/${golden.length} equal to the CPU, teacher-forced ` +
        `${forcedEqual}/${golden.length}; ppl ${ppl.perplexity.toFixed(4)} (CPU ${refPpl.perplexity.toFixed(4)}, ` +
        `rel ${rel.toExponential(2)})${differences.length ? `; ${differences.join("; ")}` : ""}`,
    );
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
writeFileSync(
  out,
  `${JSON.stringify({ date: new Date().toISOString(), device, margin, checkpoints: rows }, null, 2)}\n`,
);
console.log(`wrote ${out}${failed ? " (FAILED)" : ""}`);
if (failed) process.exitCode = 1;
