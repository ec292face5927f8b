// GPU tensor-parallel check and benchmark, run on a machine with 2+ GPUs (scripts/gpu/run.sh tp). Every rank is
// its own process on its own GPU, as `tpserve serve --tp N` runs them.
//  1. Equality: greedy ids of the golden prompts (32 tokens, prefill then decode steps through the CUDA graphs)
//     on the bundled model at TP=1, 2, 4, unquantized (also against the golden ids) and int4 g64; with 8 GPUs also
//     TP=8 against TP=1 on a seeded random Llama with 8 KV heads (test/helpers/tiny-llama.ts).
//  2. Decode speed with dummy int4 g128 weights: Llama-2-7B at TP=1/2/4 and Llama-2-70B at TP=2/4/8 (each with the
//     p2p all-reduce and with NCCL only), and Llama-3-70B at TP=4/8 when --models names it, batch 1 and 32: step
//     time, all-reduce time per step (profile), fraction of the floor (per-GPU weight bytes / copy bandwidth + the
//     measured collective time).
//  3. End to end: Llama-2-7B int4 at TP=2 through the router (`serve --tp 2` layout), batch 1 and 32.
//  4. Failure on the GPUs: a follower killed (SIGKILL) or hung (SIGSTOP) in the middle of a generation: the request
//     ends with UNAVAILABLE within the bound and the leader process still answers.
// Flags: --bandwidth GBPS (per GPU), --out FILE, --quick (skips the 70B NCCL-only run and the end-to-end part),
// --tps 1,2 (default: 1, 2, 4, 8 up to the GPUs visible), --parts equality,decode,e2e,failure (default all),
// --models llama-2-7b,llama-2-70b,llama-3-70b (the decode runs; default the first two), --paths auto,nccl,skip
// (the decode runs' collectives: p2p and NCCL above its cap, NCCL alone, skipped; default all), --batches 1,32,
// --variants (below), --act-order (the decode runs' dummy decoder linears act-order: column-parallel ones with a
// permutation of their input, o's and down's shards with their range of the whole layer's, their input gathered from
// every rank first, as act-order GPTQ checkpoints load), --shared-gpu (every rank on GPU 0, for the equality part of
// groups larger than the machine's GPUs; needs MPS; below), --equality-only NAMES (the equality part's models).
import { fork } from "node:child_process";
import { randomBytes } from "node:crypto";
import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type { Engine } from "../native/index.js";
import { loadNative } from "../native/index.js";
import { stopWorkerGroup } from "../services/cli/tp-group.js";
import { generate } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import { bundledModelDir, packageRoot } from "../services/common/paths.js";
import { type WorkerConfig, workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine, kvBytesPerPage } from "../services/worker/server.js";
import { tpLoadedBarrier } from "../services/worker/tp.js";
import { writeQuantCheckpoint } from "../test/helpers/quant-checkpoint.js";
import { writeTinyLlama } from "../test/helpers/tiny-llama.js";
import { batchOf, median } from "./batch.js";
import { decodeSeqs, greedyOneByOne, prefillSeqs, timeDecodeSteps } from "./decode.js";
import { decodeAheadScript } from "./decode-ahead.js";
import { golden, type RankResult, type RankSpec } from "./gpu-tp-common.js";
import { failureRow, groupBehindRouter } from "./gpu-tp-group.js";

const childArg = process.argv.find((a) => a.startsWith("--rank-spec="));
if (childArg) {
  await runRank(JSON.parse(childArg.slice("--rank-spec=".length)) as RankSpec);
  process.exit(0);
}

const f = new Flags(process.argv.slice(2), ["act-order", "quick", "shared-gpu"]);
const bandwidth = f.float("bandwidth", 0, 0, 1e5);
const out = f.string("out", join(packageRoot(), "bench", "results", "gpu-tp-latest.json"));
const quick = f.bool("quick");
const tpsFlag = f.string("tps", "");
const failureModel = f.string("failure-model", "");
const shapeDir = f.string("shape-dir", ""); // trying the script on a small machine: every decode run uses this config // default: dummy Llama-2-7B (a folder: its weights as stored)
const parts = new Set(f.string("parts", "equality,decode,e2e,failure").split(","));
const models = new Set(f.string("models", "llama-2-7b,llama-2-70b").split(","));
// Which decode runs: auto (p2p up to its cap, NCCL above), nccl (NCCL alone), skip (collectives skipped).
const pathsFlag = new Set(f.string("paths", "auto,nccl,skip").split(","));
// A/B settings: "label:ENV=v,ENV2=v;label2:..." runs Llama-2-7B at each TP of --tps (TP=1 too) again under each
// setting (after the runs above, in the same process); --variant-models llama-2-7b,llama-2-70b,llama-3-70b also the
// 70B shapes at the TPs they run at (those --models names too).
const variantsFlag = f.string("variants", "");
const variantModels = new Set(f.string("variant-models", "llama-2-7b").split(","));
const batches = f.string("batches", "1,32").split(",").map(Number);
const actOrder = f.bool("act-order");
// --shared-gpu: every rank of a group on GPU 0 (TPSERVE_TP_SHARED_GPU=1, inherited by the ranks' processes), so that
// --tps can name groups larger than the machine's GPUs. Only the equality part means something there (the ranks
// share one GPU's bandwidth). It needs MPS (nvidia-cuda-mps-control -d) for the ranks' kernels to run at once, takes
// the p2p paths only (NCCL refuses two ranks on one GPU), and turns programmatic dependent launch off (TPSERVE_PDL=0):
// with it a rank's next kernel becomes resident while the one before waits for a peer, and its blocks (the int4
// GEMM's large ones) can hold the SMs that the peer's kernels need, so int4 groups hung at random (2026-11-29, one
// H200, docs/tensor-parallel.md). There the "p2p" path sends 64 KiB a call, not 2 MiB (GpuComm's shared-GPU cap).
const sharedGpu = f.bool("shared-gpu");
// --equality-only bundled,gptq-g64-act-order,tiny-8kv: the equality part's models to run (default these three).
// llama-70b-layer, llama-3-70b-layer (only when named, at --tps with 8): one decoder layer at Llama-2-70B's widths
// (with Llama-3-70B's vocabulary), TP=8 against TP=1.
const equalityOnly = new Set(f.string("equality-only", "bundled,gptq-g64-act-order,tiny-8kv").split(","));
if (sharedGpu)
  Object.assign(process.env, { TPSERVE_TP_SHARED_GPU: "1", TPSERVE_PDL: process.env["TPSERVE_PDL"] ?? "0" });
f.rejectUnknown();

function baseCfg(over: Partial<WorkerConfig>): WorkerConfig {
  return { ...workerConfigFromFlags(new Flags([])), device: "auto", ...over, port: 0, logLevel: "warn" };
}

/** One rank: joins the group, loads its shard, then the leader measures and the followers follow. */
async function runRank(spec: RankSpec): Promise<void> {
  process.env["TPSERVE_ALLREDUCE"] = spec.allreduce;
  Object.assign(process.env, spec.env ?? {});
  const native = loadNative();
  const group =
    spec.tp > 1
      ? new native.TpGroup({
          name: spec.group,
          rank: spec.rank,
          world: spec.tp,
          timeoutMs: 20_000,
          joinTimeoutMs: 300_000,
        })
      : undefined;
  await group?.join();
  const cfg = baseCfg({ ...spec.cfg, tp: spec.tp, tpRank: spec.rank, tpGroup: spec.group });
  const t0 = performance.now();
  const { engine, model } = createEngine(cfg, undefined, () => 0, group);
  const loadS = (performance.now() - t0) / 1000;
  if (group) await tpLoadedBarrier(group);
  if (spec.rank > 0) {
    // As the worker's Follower: the steps back to back in the addon. TPSERVE_BENCH_FOLLOW=step: one follow() call
    // per step (the worker before followLoop), for A/B runs.
    if (process.env["TPSERVE_BENCH_FOLLOW"] === "step") while (await engine.follow!()) {}
    else await engine.followLoop!();
    engine.close();
    return;
  }
  const info = engine.info();
  const result: RankResult = { device: info.device, weightBytes: info.weightBytes, loadS, rows: [] };
  if (spec.mode === "greedy") {
    result.greedy = await greedyOneByOne(engine, golden().golden);
    // Every decode-ahead path in the group (hits, a miss, a subset): the ranks must decide alike or they hang.
    const prompts = golden().golden.map((g) => g.prompt_ids);
    result.script = await decodeAheadScript(engine, prompts, model.vocabSize, false);
  } else result.rows = await decodeRows(engine, spec, model.vocabSize, model.hiddenSize, model.numLayers);
  result.decodeAhead = engine.info().decodeAhead;
  process.send!(result);
  engine.close();
  group?.close();
}

async function decodeRows(engine: Engine, spec: RankSpec, vocab: number, hidden: number, layers: number) {
  const PROMPT = 128;
  const steps = 24;
  const rows: RankResult["rows"] = [];
  const pagesPerSeq = Math.ceil((PROMPT + steps + 8) / 16);
  for (const b of spec.batches) {
    const seqs = decodeSeqs(b, PROMPT, pagesPerSeq, vocab);
    await prefillSeqs(engine, seqs, 16);
    // Fed their own ids and decoding ahead, timed from result to result (bench/decode.ts).
    const run = await timeDecodeSteps(engine, seqs, PROMPT, steps);
    const times = run.times;
    let ctx = run.ctx;
    // Profile (graphs off, CUDA events): time in the collectives per step, waiting for the slowest rank included.
    engine.setProfiling!(true);
    engine.resetProfile!();
    for (let s = 0; s < 4; s++) {
      ctx++;
      await engine.forwardArgmax(batchOf(seqs.map((q) => ({ tokens: [9 + s], ctx, pages: q.pages }))));
    }
    const prof = engine.profile!();
    engine.setProfiling!(false);
    const comm = prof["tp_comm"] ?? { ms: 0, calls: 0 };
    const kvPerToken = kvBytesPerPage(
      { numLayers: layers, numKvHeads: spec.kvHeadsLocal, headDim: spec.headDim },
      1,
      "f16",
    );
    rows.push({
      batch: b,
      stepMs: median(times.slice(2)),
      commMsPerStep: comm.ms / 4,
      collectivesPerStep: comm.calls / 4,
      // Bytes one decode step reads on one GPU: its weights but the embedding shard, plus its KV cache.
      bytesPerGpu: engine.info().weightBytes - (vocab / spec.tp) * hidden * 4 + kvPerToken * b * ctx,
    });
  }
  return rows;
}

/** Runs every rank of one configuration as its own process; resolves with the leader's result. */
function runGroup(spec: Omit<RankSpec, "rank" | "group">): Promise<RankResult> {
  const group = `bench-${process.pid}-${randomBytes(3).toString("hex")}`;
  const script = process.argv[1]!;
  const children = Array.from({ length: spec.tp }, (_, rank) =>
    fork(script, [`--rank-spec=${JSON.stringify({ ...spec, rank, group })}`], { stdio: "inherit" }),
  );
  const exits = children.map((c) => new Promise<number | null>((r) => c.once("exit", r)));
  return new Promise((resolve, reject) => {
    children[0]!.once("message", (m) => resolve(m as RankResult));
    void Promise.all(exits).then((codes) => {
      if (codes.some((c) => c !== 0)) reject(new Error(`a rank exited with ${codes.join(", ")}`));
      reject(new Error("the leader exited without a result"));
    });
  }).then(async (r) => {
    await Promise.all(exits);
    return r as RankResult;
  });
}

const results: Record<string, unknown> = { date: new Date().toISOString(), bandwidthGBps: bandwidth };
const gpus = loadNative().buildInfo().cudaDevices;
const tps = tpsFlag ? tpsFlag.split(",").map(Number) : [1, 2, 4, 8].filter((t) => t <= gpus);
// The bundled model has 4 heads and Llama-2-7B's MLP shard at TP=8 (1376 columns) fits no int4 group the tiled
// layout takes: both stop at TP=4; the 70B shapes go to TP=8.
const tpsSmall = tps.filter((t) => t <= 4);
console.log(`GPUs visible: ${gpus}`);

// 1. Equality on the bundled model.
const bundled = bundledModelDir();
const eq: Record<string, unknown>[] = [];
// Every path: p2p (the default for these small messages), NCCL alone, and p2p with a 4096-float buffer, which sends
// the prefill's and the logits' larger messages in pieces and takes the unfused all-reduce + RMSNorm.
type EqPath = { allreduce: "auto" | "nccl" | "p2p"; env?: Record<string, string>; label: string };
const pieces: EqPath = { allreduce: "p2p", env: { TPSERVE_P2P_MAX_FLOATS: "4096" }, label: "p2p 16 KiB pieces" };
const paths: EqPath[] = sharedGpu
  ? [{ allreduce: "p2p", label: "p2p" }, pieces]
  : [{ allreduce: "auto", label: "auto" }, { allreduce: "nccl", label: "nccl" }, pieces];
async function equality(
  model: string,
  name: string,
  tpList: number[],
  groupSize: 64 | 128,
  withGolden: boolean,
  quantizations: readonly ("none" | "int4")[] = ["none", "int4"],
  groupPaths: readonly EqPath[] = paths,
) {
  if (!equalityOnly.has(name)) return;
  for (const quantization of quantizations) {
    const ref: number[][] = [];
    const refScript: number[][] = [];
    for (const [tp, path] of tpList.flatMap((t) =>
      t === 1 ? [[t, groupPaths[0]!] as const] : groupPaths.map((p) => [t, p] as const),
    )) {
      // A group that fails (a rank exits, a collective times out) is recorded and the next one runs.
      const r = await runGroup({
        tp,
        mode: "greedy",
        allreduce: path.allreduce,
        ...(path.env ? { env: path.env } : {}),
        batches: [],
        kvHeadsLocal: 0,
        headDim: 0,
        cfg: { model, quantization, groupSize, numPages: 64, maxBatchTokens: 512 },
      }).catch((e: unknown) => (e instanceof Error ? e : new Error(String(e))));
      if (r instanceof Error) {
        eq.push({ model: name, quantization, tp, path: path.label, error: r.message });
        console.log(`greedy ${name} ${quantization} tp ${tp} ${path.label}: FAILED: ${r.message}`);
        process.exitCode = 1; // the run goes on, and still ends in failure
        continue;
      }
      const ids = r.greedy!;
      if (tp === 1) {
        ref.push(...ids);
        refScript.push(...r.script!);
      }
      const equalTp1 = ids.filter((x, i) => JSON.stringify(x) === JSON.stringify(ref[i])).length;
      const scriptEqual = r.script!.filter((x, i) => JSON.stringify(x) === JSON.stringify(refScript[i])).length;
      const ah = r.decodeAhead;
      const equalGolden =
        withGolden && quantization === "none"
          ? ids.filter((x, i) => JSON.stringify(x) === JSON.stringify(golden().golden[i]!.greedy_ids)).length
          : null;
      eq.push({
        model: name,
        quantization,
        tp,
        path: path.label,
        equalTp1: `${equalTp1}/6`,
        equalGolden: equalGolden === null ? null : `${equalGolden}/6`,
        decodeAheadScriptEqualTp1: `${scriptEqual}/${r.script!.length}`,
        decodeAhead: ah,
        device: r.device,
      });
      console.log(
        `greedy ${name} ${quantization} tp ${tp} ${path.label}: ${equalTp1}/6 equal to tp 1${equalGolden === null ? "" : `, ${equalGolden}/6 equal to golden`}; ` +
          `decode-ahead script ${scriptEqual}/${r.script!.length} steps equal to tp 1 (${ah?.hits ?? 0} hits, ${ah?.misses ?? 0} misses) (${r.device})`,
      );
    }
  }
}
if (parts.has("equality")) {
  await equality(bundled, "bundled", tpsSmall, 64, true);
  // A GPTQ checkpoint of the bundled model with act-order in every linear: o's and down's shards are ranges of whole
  // groups of the stored order, their input gathered from every rank (docs/quantization.md).
  const layers = Array.from({ length: 8 }, (_, l) => l);
  const attn = ["q_proj", "k_proj", "v_proj", "o_proj"].map((m) => `self_attn.${m}`);
  const mlp = ["gate_proj", "up_proj", "down_proj"].map((m) => `mlp.${m}`);
  const allLinears = layers.flatMap((l) => [...attn, ...mlp].map((m) => `model.layers.${l}.${m}`));
  const actOrder = writeQuantCheckpoint({ format: "gptq", groupSize: 64, actOrder: allLinears });
  try {
    await equality(actOrder, "gptq-g64-act-order", tpsSmall, 64, false, ["none"]);
  } finally {
    rmSync(actOrder, { recursive: true, force: true });
  }
  // TP=8 (issue 9): the bundled model's 4 heads do not split 8 ways, so a seeded random Llama with 8 KV heads of
  // 128 (hidden 1024, MLP 4096: every int4 shard takes group 128 in the tiled layout), TP=8 against TP=1 on the
  // same weights.
  if (tps.includes(8)) {
    const tiny = writeTinyLlama({
      hidden: 1024,
      heads: 8,
      kvHeads: 8,
      headDim: 128,
      intermediate: 4096,
      layers: 2,
      vocab: 4096,
      tied: false,
    });
    try {
      await equality(tiny.dir, "tiny-8kv", [1, 8], 128, false);
    } finally {
      tiny.remove();
    }
  }
  // The TP=8 shard shapes of Llama-2-70B (8 of its 64 heads and 1 of its 8 KV heads a rank, MLP 3,584 rows, o and
  // down 1,024 and 3,584 columns), one layer of them (the checkpoint is written in each run: 2.8 GB, a minute), on
  // the first path only; llama-3-70b-layer the same with Llama-3-70B's vocabulary (16,032 rows of the embedding and
  // the LM head a rank; tied, to keep the file at 3.8 GB), int4 only.
  const layers70: [string, number, boolean, ("none" | "int4")[]][] = [
    ["llama-70b-layer", 32000, false, ["none", "int4"]],
    ["llama-3-70b-layer", 128256, true, ["int4"]],
  ];
  for (const [name, vocab, tied, quantizations] of layers70) {
    if (!tps.includes(8) || !equalityOnly.has(name)) continue;
    const w = writeTinyLlama({
      hidden: 8192,
      heads: 64,
      kvHeads: 8,
      headDim: 128,
      intermediate: 28672,
      layers: 1,
      vocab,
      tied,
    });
    try {
      await equality(w.dir, name, [1, 8], 128, false, quantizations, paths.slice(0, 1));
    } finally {
      w.remove();
    }
  }
}
results["equality"] = eq;
save();

// 2. Decode speed.
const dummy = (name: string) => join(packageRoot(), "models", "dummy", name);
// Group size 128 everywhere but Llama-2-7B at TP=4: 11008 / 4 = 2752 columns of down_proj per rank is not a
// multiple of 128 (the loader refuses a straddling group and names 64).
const runs: {
  model: string;
  kvHeads: number;
  tp: number;
  allreduce: "auto" | "nccl";
  groupSize: 64 | 128;
  env?: Record<string, string>;
  label?: string;
}[] = [];
const g7 = (tp: number) => (tp === 4 ? 64 : 128);
for (const tp of tpsSmall) runs.push({ model: "llama-2-7b", kvHeads: 32, tp, allreduce: "auto", groupSize: g7(tp) });
if (tps.includes(4)) runs.push({ model: "llama-2-7b", kvHeads: 32, tp: 1, allreduce: "auto", groupSize: 64 });
// The same steps with every collective skipped (wrong results, timing only): step time minus this is what the
// collectives cost inside the step, the term the floor adds to the weight reads.
for (const [model, kvHeads, tp] of [
  ["llama-2-7b", 32, 2],
  ["llama-2-70b", 8, 4],
  ["llama-2-70b", 8, 8],
  ["llama-3-70b", 8, 4],
  ["llama-3-70b", 8, 8],
] as const)
  if (tps.includes(tp))
    runs.push({
      model,
      kvHeads,
      tp,
      allreduce: "auto",
      groupSize: 128,
      env: { TPSERVE_TP_SKIP_COLLECTIVES: "1" },
      label: "no collectives",
    });
for (const tp of tpsSmall.filter((t) => t > 1))
  runs.push({ model: "llama-2-7b", kvHeads: 32, tp, allreduce: "nccl", groupSize: g7(tp) });
for (const tp of tps.filter((t) => t > 1))
  runs.push({ model: "llama-2-70b", kvHeads: 8, tp, allreduce: "auto", groupSize: 128 });
// Llama-3-70B (vocab 128256; issue 9's second shape) at TP=4 and TP=8: only when --models names it.
for (const tp of tps.filter((t) => t >= 4))
  runs.push({ model: "llama-3-70b", kvHeads: 8, tp, allreduce: "auto", groupSize: 128 });
if (!quick && tps.includes(4))
  runs.push({ model: "llama-2-70b", kvHeads: 8, tp: 4, allreduce: "nccl", groupSize: 128 });
for (const v of variantsFlag ? variantsFlag.split(";") : []) {
  const [label, envs = ""] = v.split(/:(.*)/s);
  const env = Object.fromEntries(
    envs
      .split(",")
      .filter(Boolean)
      .map((kv) => kv.split(/=(.*)/s).slice(0, 2)),
  );
  if (variantModels.has("llama-2-7b"))
    for (const tp of tpsSmall)
      runs.push({ model: "llama-2-7b", kvHeads: 32, tp, allreduce: "auto", groupSize: g7(tp), env, label: label! });
  for (const model of ["llama-2-70b", "llama-3-70b"] as const) {
    if (!variantModels.has(model)) continue;
    for (const tp of tps.filter((t) => t >= (model === "llama-2-70b" ? 2 : 4)))
      runs.push({ model, kvHeads: 8, tp, allreduce: "auto", groupSize: 128, env, label: label! });
  }
}
const speed: Record<string, unknown>[] = [];
const pathOf = (r: (typeof runs)[number]) =>
  r.label === "no collectives" ? "skip" : r.label ? "variant" : r.allreduce;
for (const run of parts.has("decode")
  ? runs.filter((r) => models.has(r.model) && (pathOf(r) === "variant" || pathsFlag.has(pathOf(r))))
  : []) {
  const r = await runGroup({
    tp: run.tp,
    mode: "decode",
    allreduce: run.allreduce,
    ...(run.env ? { env: run.env } : {}),
    batches,
    kvHeadsLocal: Math.max(1, run.kvHeads / run.tp),
    headDim: 128,
    cfg: {
      model: shapeDir || dummy(run.model),
      loadFormat: "dummy",
      quantization: "int4",
      groupSize: run.groupSize,
      numPages: 32 * 10 + 2,
      maxBatchTokens: 2048,
      ...(actOrder ? { dummyActOrder: true } : {}),
    },
  });
  for (const row of r.rows) {
    const floorMs = bandwidth > 0 ? (row.bytesPerGpu / (bandwidth * 1e9)) * 1e3 : Number.NaN;
    const rec = {
      model: run.model,
      tp: run.tp,
      groupSize: run.groupSize,
      allreduce: run.tp === 1 ? "-" : run.allreduce,
      label: run.label ?? "",
      ...row,
      tokPerSeq: 1000 / row.stepMs,
      tokTotal: (1000 * row.batch) / row.stepMs,
      // The floor with the collectives' cost inside the step is in `floors` (against the step without them).
      memoryFloorMs: floorMs,
      memoryFloorFraction: floorMs / row.stepMs,
      weightBytesPerGpu: r.weightBytes,
      loadS: r.loadS,
      device: r.device,
    };
    speed.push(rec);
    results["decode"] = speed;
    save();
    console.log(
      `${run.model} g${run.groupSize} tp ${run.tp} ${rec.allreduce.padEnd(4)}${run.label ? ` [${run.label}]` : ""} batch ${String(row.batch).padStart(2)}: step ${row.stepMs.toFixed(3)} ms (${rec.tokPerSeq.toFixed(0)} tok/s/seq, ${rec.tokTotal.toFixed(0)} tok/s), ` +
        `collectives ${row.commMsPerStep.toFixed(3)} ms/step in the eager profile (${row.collectivesPerStep} calls), ` +
        `weight reads ${floorMs.toFixed(3)} ms = ${(rec.memoryFloorFraction * 100).toFixed(0)}% of the step`,
    );
  }
}
results["decode"] = speed;

// Collective cost inside the step (step minus the same step without collectives) and the floor it implies.
type SpeedRow = {
  model: string;
  tp: number;
  batch: number;
  allreduce: string;
  label: string;
  stepMs: number;
  memoryFloorMs: number;
};
const floors: Record<string, unknown>[] = [];
for (const s of speed as SpeedRow[]) {
  if (s.label !== "no collectives") continue;
  const full = (speed as SpeedRow[]).find(
    (x) => x.model === s.model && x.tp === s.tp && x.batch === s.batch && x.allreduce === "auto" && x.label === "",
  );
  if (!full) continue;
  const commMs = full.stepMs - s.stepMs;
  const floorMs = full.memoryFloorMs + commMs;
  const rec = {
    model: s.model,
    tp: s.tp,
    batch: s.batch,
    stepMs: full.stepMs,
    commMs,
    floorMs,
    floorFraction: floorMs / full.stepMs,
  };
  floors.push(rec);
  console.log(
    `${s.model} tp ${s.tp} batch ${s.batch}: collectives cost ${commMs.toFixed(3)} ms of the ${full.stepMs.toFixed(3)} ms step; floor ${full.memoryFloorMs.toFixed(3)} + ${commMs.toFixed(3)} ms = ${((floorMs / full.stepMs) * 100).toFixed(0)}%`,
  );
}
results["floors"] = floors;
save();

// 3. End to end through the router, the `serve --tp 2` layout.
if (!quick && parts.has("e2e") && tps.includes(2)) {
  const cfg = baseCfg({
    model: dummy("llama-2-7b"),
    loadFormat: "dummy",
    quantization: "int4",
    numPages: 32 * 14 + 8,
    maxBatchTokens: 4096,
    tp: 2,
  });
  const { ranks, router, client } = await groupBehindRouter(cfg, { maxRunning: 32, maxBatchTokens: 4096 }, bundled);
  const e2e: Record<string, unknown>[] = [];
  try {
    // Warm-up, untimed: the first requests pay for the decode graphs' capture and the first launches of the prefill's
    // kernels, which would land in batch 1's TTFT (as bench/gpu.ts: prompts of the measured length, 32 at once).
    await Promise.all(
      Array.from({ length: 32 }, (_, i) =>
        generate(client, {
          tokenIds: { ids: Array.from({ length: 128 }, (_, j) => 5 + ((i * 13 + j * 7) % 31000)) },
          maxTokens: 4,
          ignoreEos: true,
        }),
      ),
    );
    for (const b of [1, 32]) {
      const per = await Promise.all(
        Array.from({ length: b }, async (_, i) => {
          const ids = Array.from({ length: 128 }, (_, j) => 3 + ((i * 31 + j * 17) % 31000));
          const start = performance.now();
          const stamps: number[] = [];
          await generate(client, { tokenIds: { ids }, maxTokens: 64, ignoreEos: true }, (c) => {
            if (c.tokenIds.length > 0) stamps.push(performance.now());
          });
          return { ttft: stamps[0]! - start, gaps: stamps.slice(1).map((t, k) => t - stamps[k]!) };
        }),
      );
      const gaps = per.flatMap((p) => p.gaps);
      const row = {
        model: "llama-2-7b",
        tp: 2,
        batch: b,
        ttftP50: median(per.map((p) => p.ttft)),
        itlP50: median(gaps),
      };
      e2e.push(row);
      console.log(
        `e2e llama-2-7b tp 2 batch ${b}: TTFT ${row.ttftP50.toFixed(1)} ms, ITL p50 ${row.itlP50.toFixed(2)} ms`,
      );
    }
  } finally {
    client.close();
    await router.close(1000);
    await stopWorkerGroup(ranks);
  }
  results["endToEnd"] = e2e;
}
if (parts.has("failure") && tps.includes(2)) {
  const rows: Record<string, unknown>[] = [];
  for (const signal of ["SIGKILL", "SIGSTOP"] as const) rows.push(await failure(signal));
  results["failure"] = rows;
}
save();
console.log(`wrote ${out}`);

/** A TP=2 group on GPUs 0-1 behind a router; rank 1 gets `signal` once a long generation has streamed 3 tokens. */
function failure(signal: "SIGKILL" | "SIGSTOP"): Promise<Record<string, unknown>> {
  const cfg = baseCfg({
    model: failureModel || dummy("llama-2-7b"),
    loadFormat: failureModel ? "safetensors" : "dummy",
    quantization: "int4",
    groupSize: 64,
    maxBatchTokens: 2048,
    tp: 2,
    tpTimeoutMs: 3000,
    // No pool size: each rank sizes its KV pool from --gpu-memory-utilization, and the group agrees on the smallest.
  });
  return failureRow(signal, cfg, bundled);
}

/** Written after every part, so a run cut short keeps what it measured. */
function save(): void {
  writeFileSync(out, JSON.stringify(results, null, 1));
}
