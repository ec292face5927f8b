// GPU check and benchmark, run on the GPU machine (scripts/gpu/run.sh): the bundled model on the GPU against the
// golden references (teacher-forced logits, greedy ids over gRPC, perplexity), then dummy Llama-2-7B and
// Llama-3-8B in int4: engine decode speed at several batch sizes as a fraction of the memory floor, the KV pool
// sized from --gpu-memory-utilization 0.9 (and the device's use after steps), and end to end through the router.
// Prints tables; writes JSON to --out FILE. Flags: --bandwidth GBPS (copy bandwidth measured in the same run; the
// floor needs it), --quick, --skip-golden, --skip-e2e, --golden-only.
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { encodeDocuments, perplexity, readText } from "../services/cli/eval.js";
import { startWorkerProcess } from "../services/cli/serve.js";
import { generate, generationClient, unary } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import type { WorkerClient } from "../services/common/generated/tpserve/worker/v1/Worker.js";
import type { WorkerStats__Output } from "../services/common/generated/tpserve/worker/v1/WorkerStats.js";
import type { WorkerStatsRequest } from "../services/common/generated/tpserve/worker/v1/WorkerStatsRequest.js";
import { loadTokenizer } from "../services/common/model/tokenizer.js";
import { bundledModelDir, packageRoot } from "../services/common/paths.js";
import { protos } from "../services/common/proto.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine, kvBytesPerPage, startWorker } from "../services/worker/server.js";
import { batchOf, median } from "./batch.js";
import { decodeSeqs, dummyInt4Engine, floorBytes, greedyOneByOne, prefillSeqs, timeDecodeSteps } from "./decode.js";
import { checkDecodeAhead } from "./decode-ahead.js";
import { gpuMemoryPool } from "./gpu-memory.js";
import { checkLongContext } from "./long-context.js";

const f = new Flags(process.argv.slice(2), ["quick", "skip-golden", "skip-e2e", "golden-only"]);
const bandwidth = f.float("bandwidth", 0, 0, 1e5); // GB/s
const quick = f.bool("quick");
const out = f.string("out", join(packageRoot(), "bench", "results", "gpu-latest.json"));
const skipGolden = f.bool("skip-golden");
const skipE2e = f.bool("skip-e2e");
const goldenOnly = f.bool("golden-only");
const device = f.string("device", "cuda:0");
f.rejectUnknown();

interface GoldenPrompt {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  first_step_logits: number[];
  rtn_int4_g128_sym_greedy_ids: number[];
}
const goldenFile = JSON.parse(readText(join(bundledModelDir(), "golden.public.json"))) as {
  ppl: Record<string, number>;
  golden: GoldenPrompt[];
};
const results: Record<string, unknown> = { date: new Date().toISOString(), device };
const pct = (a: number[], p: number) =>
  [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(p * a.length))] ?? 0;

// A long-context step's greedy id may differ from the CPU's where the CPU's two best logits are closer than this:
// three times the golden prompts' first-step max |diff| on the GPU (1.6e-2, fp16 KV cache).
const LONG_MARGIN = 0.05;

/** The greedy ids a golden prompt must give: the golden ones unquantized, the CPU int4 path's in int4. */
function refIds(g: GoldenPrompt, quantization: "none" | "int4"): number[] {
  return quantization === "none" ? g.greedy_ids : g.rtn_int4_g128_sym_greedy_ids;
}

function cfg(over: Partial<WorkerConfig>): WorkerConfig {
  return { ...workerConfigFromFlags(new Flags([])), device, ...over, port: 0 };
}

async function golden(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  for (const quantization of ["none", "int4"] as const) {
    const { engine } = createEngine(cfg({ quantization, groupSize: 128, numPages: 64, maxBatchTokens: 512 }));
    let worst = 0;
    let equal = 0;
    const diverged: string[] = [];
    for (const g of goldenFile.golden) {
      const ref = refIds(g, quantization);
      const ids = [...g.prompt_ids, ...ref.slice(0, -1)];
      const pages = Array.from({ length: Math.ceil(ids.length / 16) }, (_, i) => i + 1);
      const logits = await engine.forward(batchOf([{ tokens: ids, ctx: ids.length, pages }], true));
      let ok = true;
      for (let s = 0; s < ref.length; s++) {
        const off = (g.prompt_ids.length - 1 + s) * 4096;
        let best = 0;
        for (let v = 1; v < 4096; v++) if (logits[off + v]! > logits[off + best]!) best = v;
        if (best !== ref[s]) {
          ok = false;
          diverged.push(`"${g.prompt}" step ${s}: ${best} vs ${ref[s]}`);
          break;
        }
        if (s === 0 && quantization === "none")
          for (let v = 0; v < 4096; v++) worst = Math.max(worst, Math.abs(logits[off + v]! - g.first_step_logits[v]!));
      }
      if (ok) equal++;
    }
    // Free-running, one prompt at a time: every decode step is one token of one sequence (the batch-1 kernels).
    const alone = await greedyOneByOne(engine, goldenFile.golden);
    const aloneEqual = alone.filter(
      (ids, i) => JSON.stringify(ids) === JSON.stringify(refIds(goldenFile.golden[i]!, quantization)),
    ).length;
    const aloneAhead = engine.info().decodeAhead;
    // Decoding ahead against the same engine without it, on a script that takes every path (bench/decode-ahead.ts).
    const ahead = await checkDecodeAhead(
      () => createEngine(cfg({ quantization, groupSize: 128, numPages: 64, maxBatchTokens: 512 })).engine,
      goldenFile.golden.map((g) => g.prompt_ids),
      4096,
    );
    const tok = loadTokenizer(bundledModelDir());
    const testIds = encodeDocuments(readText(join(packageRoot(), "data", "brown", "brown.test.txt")), tok, 2);
    const ppl = await perplexity(engine, testIds, { window: 512, blockSize: 16, vocab: 4096 });
    // Decode at 300-900 tokens of context (the split attention path) against the CPU engine (bench/long-context.ts).
    const longCfg: Partial<WorkerConfig> = { quantization, groupSize: 128, numPages: 200, maxBatchTokens: 1024 };
    const longGpu = createEngine(cfg(longCfg)).engine;
    const longCpu = createEngine(cfg({ ...longCfg, device: "cpu" })).engine;
    const long = await checkLongContext(longGpu, longCpu, testIds, 4096, LONG_MARGIN);
    longGpu.close();
    longCpu.close();
    const ref = quantization === "none" ? goldenFile.ppl["float32"]! : goldenFile.ppl["rtn_int4_g128_sym"]!;
    engine.close();
    rows.push({
      quantization,
      promptsEqual: `${equal}/6`,
      aloneGreedyEqual: `${aloneEqual}/6`,
      aloneDecodeAhead: aloneAhead,
      decodeAheadCheck: ahead,
      longContextCheck: long,
      diverged,
      firstStepMaxAbsDiff: quantization === "none" ? worst : null,
      perplexity: ppl.perplexity,
      perplexityRef: ref,
      perplexityRelDiff: Math.abs(ppl.perplexity - ref) / ref,
      pplSeconds: ppl.seconds,
    });
    console.log(
      `golden ${quantization}: teacher-forced greedy ${equal}/6 prompts equal, one at a time ${aloneEqual}/6${quantization === "none" ? `, first-step max |diff| ${worst.toExponential(2)}` : ""}; ` +
        `ppl ${ppl.perplexity.toFixed(4)} (ref ${ref.toFixed(4)}) in ${ppl.seconds.toFixed(1)} s ${diverged.join("; ")}`,
    );
    console.log(
      `decode ahead ${quantization}: one at a time ${aloneAhead?.hits ?? 0} hits, ${aloneAhead?.misses ?? 0} misses; ` +
        `script ${ahead.equalSteps}/${ahead.steps} steps equal to TPSERVE_DECODE_AHEAD=0 (${ahead.hits} hits, ` +
        `${ahead.misses} misses)${ahead.firstDifference ? `; first difference ${ahead.firstDifference}` : ""}`,
    );
    console.log(
      `long context ${quantization}: contexts ${long.contexts.join("/")} as a batch and alone, ${long.equal}/${long.steps} ` +
        `greedy ids equal to the CPU engine's, ${long.explained} within a top-2 gap of ${LONG_MARGIN}, ` +
        `${long.unexplained.length} not; max |diff| ${long.maxAbsDiff.toExponential(2)}${long.unexplained.length ? `: ${long.unexplained.slice(0, 3).join("; ")}` : ""}`,
    );
  }
  // Greedy ids over gRPC with the worker on the GPU: unquantized against the golden ids, int4 against the CPU
  // int4 path's (free-running decode steps, which teacher-forced passes do not exercise).
  for (const quantization of ["none", "int4"] as const) {
    const w = await startWorker(cfg({ quantization, groupSize: 128, kvCacheMiB: 64 }));
    const r = await startRouter({
      ...routerConfigFromFlags(new Flags([]), [w.address]),
      httpPort: null,
      logLevel: "silent",
      port: 0,
    });
    const client = generationClient(r.address);
    const outs = await Promise.all(
      goldenFile.golden.map((g) => generate(client, { text: g.prompt, maxTokens: 32, ignoreEos: true })),
    );
    const refs = goldenFile.golden.map((g) => refIds(g, quantization));
    const firstDiff = outs.map((o, i) => o.ids.findIndex((id, s) => id !== refs[i]![s]));
    const grpcEqual = firstDiff.filter((d, i) => d < 0 && outs[i]!.ids.length === refs[i]!.length).length;
    console.log(
      `golden ${quantization} over gRPC on ${w.describe.backendReason}: ${grpcEqual}/6 prompts equal` +
        (grpcEqual < 6 ? ` (first differing step per prompt: ${firstDiff.join(", ")})` : ""),
    );
    rows.push({ quantization, grpcGreedyEqual: `${grpcEqual}/6`, firstDiff, backend: w.describe.backendReason });
    client.close();
    await r.close();
    await w.close();
  }
  results["golden"] = rows;
}

const SHAPES = [
  { name: "llama-2-7b", dir: join(packageRoot(), "models", "dummy", "llama-2-7b") },
  { name: "llama-3-8b", dir: join(packageRoot(), "models", "dummy", "llama-3-8b") },
];
const BATCHES = quick ? [1, 32] : [1, 8, 32, 128];
const PROMPT = 128;

async function engineDecode(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  const runs = [
    ...SHAPES.map((shape) => ({ shape, graphs: true })),
    { shape: SHAPES[0]!, graphs: false }, // the same step without CUDA graphs: what launch gaps cost
  ];
  for (const { shape, graphs } of runs) {
    process.env["TPSERVE_CUDA_GRAPHS"] = graphs ? "1" : "0";
    const maxB = Math.max(...BATCHES);
    const steps = quick ? 16 : 32;
    const pagesPerSeq = Math.ceil((PROMPT + steps + 1) / 16);
    const t0 = performance.now();
    const { engine, model } = dummyInt4Engine(shape.dir, maxB * pagesPerSeq + 1, device);
    const loadS = (performance.now() - t0) / 1000;
    const info = engine.info();
    const kvPerToken = kvBytesPerPage(model, 1, "f16");
    console.log(
      `${shape.name}: loaded in ${loadS.toFixed(1)} s; weights ${(info.weightBytes / 1e9).toFixed(2)} GB, KV pool ${(info.kvBytes / 1e9).toFixed(2)} GB (${Math.floor(info.kvBytes / kvPerToken)} tokens) on ${info.device}`,
    );
    for (const b of BATCHES) {
      const seqs = decodeSeqs(b, PROMPT, pagesPerSeq, model.vocabSize);
      await prefillSeqs(engine, seqs, Math.max(1, Math.floor(4096 / PROMPT))); // chunks of the batch-token budget
      const run = await timeDecodeSteps(engine, seqs, PROMPT, steps);
      let ctx = run.ctx;
      const ms = median(run.times.slice(2));
      if (graphs && (b === 1 || b === 32) && engine.setProfiling && engine.profile && engine.resetProfile) {
        // Per-op GPU time (CUDA events, graphs off while profiling) over a few more steps.
        engine.setProfiling(true);
        engine.resetProfile();
        for (let s = 0; s < 4; s++) {
          ctx++;
          await engine.forwardArgmax(batchOf(seqs.map((q) => ({ tokens: [9 + s], ctx, pages: q.pages }))));
        }
        const prof = engine.profile();
        engine.setProfiling(false);
        const fwd = prof["forward"]?.ms ?? 0;
        const ops = Object.entries(prof)
          .filter(([op]) => op !== "forward")
          .map(([op, v]) => ({ op, msPerStep: v.ms / 4, pct: fwd > 0 ? v.ms / fwd : 0 }))
          .sort((x, y) => y.msPerStep - x.msPerStep);
        rows.push({ shape: shape.name, batch: b, profile: ops, forwardMsPerStep: fwd / 4 });
        console.log(
          `  profile batch ${b} (${(fwd / 4).toFixed(3)} ms per step without graphs): ` +
            ops.map((o) => `${o.op} ${o.msPerStep.toFixed(3)} ms`).join(", "),
        );
      }
      const bytes = floorBytes(engine, model.vocabSize, model.hiddenSize, kvPerToken, b * ctx);
      const ah = engine.info().decodeAhead; // counts so far on this engine
      const floorMs = bandwidth > 0 ? (bytes / (bandwidth * 1e9)) * 1e3 : Number.NaN;
      rows.push({
        shape: shape.name,
        batch: b,
        stepMs: ms,
        tokPerSeq: 1000 / ms,
        tokTotal: (1000 * b) / ms,
        floorMs,
        floorFraction: floorMs / ms,
        bytesPerStep: bytes,
        decodeAhead: ah,
      });
      console.log(
        `  batch ${b}: step ${ms.toFixed(3)} ms, ${(1000 / ms).toFixed(1)} tok/s/seq, ${((1000 * b) / ms).toFixed(0)} tok/s, floor ${floorMs.toFixed(3)} ms (${((floorMs / ms) * 100).toFixed(0)}%)` +
          (ah ? `; decode ahead ${ah.enabled ? "on" : "off"}, ${ah.hits} hits / ${ah.misses} misses so far` : ""),
      );
    }
    rows.push({
      shape: shape.name,
      weightBytes: info.weightBytes,
      kvBytes: info.kvBytes,
      kvTokens: Math.floor(info.kvBytes / kvPerToken),
      loadSeconds: loadS,
    });
    engine.close();
  }
  process.env["TPSERVE_CUDA_GRAPHS"] = "1";
  results["engineDecode"] = rows;
}

/** Engine decode step (ms) measured by engineDecode for this shape and batch (its first run). */
function engineStep(shape: string, batch: number): number {
  const rows = (results["engineDecode"] ?? []) as { shape: string; batch: number; stepMs?: number }[];
  return rows.find((r) => r.shape === shape && r.batch === batch && r.stepMs !== undefined)?.stepMs ?? Number.NaN;
}

async function endToEnd(): Promise<void> {
  const rows: Record<string, unknown>[] = [];
  for (const shape of SHAPES) {
    const maxB = Math.max(...BATCHES);
    const gen = quick ? 32 : 64;
    const pagesPerSeq = Math.ceil((PROMPT + gen + 8) / 16);
    // The worker runs in its own process, as `tpserve serve` runs it: the router and the clients here do not share
    // its event loop. Its forward time comes from its Stats RPC.
    const { child, ready } = await startWorkerProcess(
      cfg({
        model: shape.dir,
        loadFormat: "dummy",
        quantization: "int4",
        numPages: maxB * pagesPerSeq + 8,
        maxBatchTokens: 4096,
        logLevel: "warn",
      }),
    );
    const wc = new (protos().worker.tpserve.worker.v1.Worker)(
      ready.address,
      grpc.credentials.createInsecure(),
    ) as unknown as WorkerClient;
    const workerStats = () => unary<WorkerStatsRequest, WorkerStats__Output>(wc.Stats.bind(wc), {});
    const r = await startRouter({
      ...routerConfigFromFlags(new Flags([]), [ready.address]),
      httpPort: null,
      logLevel: "silent",
      model: bundledModelDir(),
      maxRunning: maxB,
      maxBatchTokens: 4096,
      port: 0,
    });
    const client = generationClient(r.address);
    // Warm-up: the first request of a fresh worker also pays for first launches and graph captures, which would
    // land in batch 1's TTFT. One request of each batch size's prompt and a few tokens, untimed.
    await Promise.all(
      Array.from({ length: maxB }, (_, i) =>
        generate(client, {
          tokenIds: { ids: Array.from({ length: PROMPT }, (_, j) => 5 + ((i * 13 + j * 7) % 31000)) },
          maxTokens: 4,
          ignoreEos: true,
        }),
      ),
    );
    await generate(client, { tokenIds: { ids: [5, 6, 7] }, maxTokens: 4, ignoreEos: true });
    for (const b of BATCHES) {
      const before = await workerStats();
      const t0 = performance.now();
      const per = await Promise.all(
        Array.from({ length: b }, async (_, i) => {
          const ids = Array.from({ length: PROMPT }, (_, j) => 3 + ((i * 31 + j * 17) % 31000));
          const start = performance.now();
          const stamps: number[] = [];
          await generate(client, { tokenIds: { ids }, maxTokens: gen, ignoreEos: true }, (c) => {
            if (c.tokenIds.length > 0) stamps.push(performance.now());
          });
          const gaps = stamps.slice(1).map((t, k) => t - stamps[k]!);
          return { ttft: stamps[0]! - start, gaps, total: performance.now() - start, n: stamps.length };
        }),
      );
      const wall = performance.now() - t0;
      const after = await workerStats();
      const gaps = per.flatMap((p) => p.gaps);
      const fwdMs = after.forwardMsTotal - before.forwardMsTotal;
      const row = {
        shape: shape.name,
        batch: b,
        ttftP50: median(per.map((p) => p.ttft)),
        itlP50: median(gaps),
        itlP99: pct(gaps, 0.99),
        tokPerSeq: median(per.map((p) => (p.n - 1) / ((p.total - p.ttft) / 1000))),
        tokTotal: per.reduce((a, p) => a + p.n, 0) / (wall / 1000),
        routerOverhead: 1 - fwdMs / wall,
        // Per decode step: the share of the inter-token latency outside the engine's forward pass (engine step
        // from engineDecode, same shape and batch): what the worker loop, gRPC and the router add to a token.
        engineStepMs: engineStep(shape.name, b),
        stepOverhead: 1 - engineStep(shape.name, b) / median(gaps),
        // The same against the mean gap, which also carries the plan boundaries (router round trips).
        itlMean: gaps.reduce((a, g) => a + g, 0) / gaps.length,
        stepOverheadMean: 1 - (engineStep(shape.name, b) * gaps.length) / gaps.reduce((a, g) => a + g, 0),
      };
      rows.push(row);
      console.log(
        `  e2e ${shape.name} batch ${b}: TTFT ${row.ttftP50.toFixed(1)} ms, ITL p50 ${row.itlP50.toFixed(2)} p99 ${row.itlP99.toFixed(2)} ms, ${row.tokPerSeq.toFixed(1)} tok/s/seq, ${row.tokTotal.toFixed(0)} tok/s, outside forward ${(row.routerOverhead * 100).toFixed(1)}% of wall, ${(row.stepOverhead * 100).toFixed(1)}% of ITL p50 (${(row.stepOverheadMean * 100).toFixed(1)}% of the mean, ${row.itlMean.toFixed(2)} ms) vs engine step ${row.engineStepMs.toFixed(2)} ms`,
      );
    }
    client.close();
    wc.close();
    await r.close();
    const exited = new Promise((resolve) => child.once("exit", resolve));
    child.kill("SIGTERM");
    await exited;
  }
  results["endToEnd"] = rows;
}

if (!skipGolden) await golden();
if (goldenOnly) {
  writeFileSync(out, JSON.stringify(results, null, 1));
  process.exit(0);
}
await engineDecode();
// Both shapes, as the worker sizes its pool by default (--gpu-memory-utilization 0.9).
const pools: Record<string, unknown>[] = [];
results["gpuMemoryPool"] = pools;
for (const shape of SHAPES) {
  pools.push(
    await gpuMemoryPool(
      cfg({ model: shape.dir, loadFormat: "dummy", quantization: "int4", groupSize: 128, maxBatchTokens: 4096 }),
      BATCHES,
      PROMPT,
    ),
  );
}
if (!skipE2e) await endToEnd();
results["bandwidthGBps"] = bandwidth;
writeFileSync(out, JSON.stringify(results, null, 1));
console.log(`wrote ${out}`);
