// The engine's decode step alone, on the GPU machine: dummy int4 g128 shapes, a few batch sizes, median over 40
// steps after a 128-token prefill (also timed: the batch's prompts, second of two runs). Small and quick so that
// scripts/gpu/run.sh can repeat it under different environment variables (TPSERVE_ABLATE, TPSERVE_ATTN_*, ...) in
// separate processes and compare the steps. Appends one JSON line per (shape, batch) to --out FILE with the --label
// given. Flags: --shapes a,b --batches 1,8,32 --prompt N --label TEXT --out FILE --bandwidth GB/s (for the fraction
// of the floor) --profile-prefill (per-op GPU times of one more prefill) --act-order (every decoder linear with an
// act-order input permutation, as GPTQ desc_act checkpoints load). A shape is a dummy model (models/dummy) or
// one rank's shard of one at tensor parallelism, run on one GPU (bench/shapes: e.g. llama-2-70b-tp4-rank has the
// per-rank matrices of Llama-2-70B at TP=4; the step leaves out the collectives).
import { appendFileSync, existsSync } from "node:fs";
import { join } from "node:path";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import { kvBytesPerPage } from "../services/worker/server.js";
import { median } from "./batch.js";
import { decodeSeqs, dummyInt4Engine, floorBytes, prefillSeqs, timeDecodeSteps } from "./decode.js";

const f = new Flags(process.argv.slice(2), ["profile-prefill", "act-order"]);
const shapes = f.string("shapes", "llama-2-7b").split(",");
const batches = f
  .string("batches", "1,8,32")
  .split(",")
  .map((b) => Number.parseInt(b, 10));
const prompt = f.int("prompt", 128, 1, 100000);
const label = f.string("label", "");
const profilePrefill = f.bool("profile-prefill");
// Act-order int4 (a permuted input order) in every decoder linear, as GPTQ desc_act checkpoints load.
const actOrder = f.bool("act-order");
const out = f.string("out", join(packageRoot(), "bench", "results", "gpu-step.jsonl"));
const bandwidth = f.float("bandwidth", 0, 0, 1e5);
f.rejectUnknown();

const STEPS = 40;
for (const shape of shapes) {
  const maxB = Math.max(...batches);
  const pagesPerSeq = Math.ceil((prompt + STEPS + 1) / 16);
  const dummy = join(packageRoot(), "models", "dummy", shape);
  const dir = existsSync(dummy) ? dummy : join(packageRoot(), "bench", "shapes", shape);
  const { engine, model } = dummyInt4Engine(dir, maxB * pagesPerSeq + 1, "cuda:0", actOrder);
  const line: string[] = [];
  for (const b of batches) {
    const seqs = decodeSeqs(b, prompt, pagesPerSeq, model.vocabSize);
    // The prefill twice: the second is timed (all the batch's prompts, up to 4096 tokens a forward pass), the first
    // takes the first-use costs (workspaces sized for the shape). It writes the same KV entries again.
    const perForward = Math.max(1, Math.floor(4096 / prompt));
    await prefillSeqs(engine, seqs, perForward);
    const p0 = performance.now();
    await prefillSeqs(engine, seqs, perForward);
    const prefillMs = performance.now() - p0;
    let prefillProfile = "";
    if (profilePrefill && engine.setProfiling && engine.profile && engine.resetProfile) {
      // A third prefill with per-op GPU time (CUDA events between the ops).
      engine.setProfiling(true);
      engine.resetProfile();
      await prefillSeqs(engine, seqs, perForward);
      const prof = engine.profile();
      engine.setProfiling(false);
      prefillProfile = Object.entries(prof)
        .sort((x, y) => y[1].ms - x[1].ms)
        .map(([op, v]) => `${op} ${v.ms.toFixed(1)}`)
        .join(", ");
      console.log(`  ${shape} b${b} prefill profile, ms: ${prefillProfile}`);
    }
    const { times } = await timeDecodeSteps(engine, seqs, prompt, STEPS);
    const ms = median(times.slice(4));
    // The floor at the mean context of the timed steps.
    const bytes = floorBytes(
      engine,
      model.vocabSize,
      model.hiddenSize,
      kvBytesPerPage(model, 1, "f16"),
      b * (prompt + STEPS / 2),
    );
    const floor = bandwidth > 0 ? bytes / (bandwidth * 1e6) / ms : Number.NaN;
    const { decodeAhead: ahead, device } = engine.info(); // ahead: counts so far on this engine
    line.push(
      `b${b} ${ms.toFixed(3)} ms${bandwidth > 0 ? ` (${(100 * floor).toFixed(0)}%)` : ""} [ahead ${ahead?.hits ?? 0}]` +
        ` prefill ${prefillMs.toFixed(1)} ms`,
    );
    const prefillTokPerS = (b * prompt) / (prefillMs / 1000);
    const row = { label, shape, batch: b, prompt, stepMs: ms, floorBytes: bytes, floorFraction: floor, ahead };
    const prefill = { prefillMs, prefillTokPerS, prefillProfile };
    appendFileSync(out, `${JSON.stringify({ ...row, ...prefill, device })}\n`);
  }
  console.log(`${label.padEnd(24)} ${shape}: ${line.join(", ")}`);
  engine.close();
}
