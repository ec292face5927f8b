// Part of bench/gpu.ts (GPU machine only): the KV pool the worker sizes by default on a GPU, from
// --gpu-memory-utilization, and the device memory actually in use after steps that grow the lazily allocated
// workspaces, against the fraction's cap.
import { basename } from "node:path";
import type { WorkerConfig } from "../services/worker/config.js";
import { createEngine, kvBytesPerPage } from "../services/worker/server.js";
import { batchOf } from "./batch.js";

/**
 * The worker's default on a GPU: a dummy int4 model (c.model) with no pool size given, so the engine sizes its pool at
 * finalize from --gpu-memory-utilization 0.9 (numPages 0). Records the pool and the device's use (cudaMemGetInfo)
 * after loading and after steps that grow the lazily allocated workspaces: decode at every batch size and 8
 * sequences at the model's full context (4096), so the next GPU run shows whether the reserve held.
 */
export async function gpuMemoryPool(
  c: WorkerConfig,
  batches: number[],
  prompt: number,
): Promise<Record<string, unknown>> {
  const { engine, model, numPages, kvPool } = createEngine(c);
  const info = engine.info();
  const k = info.kvSizing;
  const mem = () => {
    const m = engine.info().deviceMemory;
    return m ? m.totalBytes - m.freeBytes : Number.NaN;
  };
  const kvPerToken = kvBytesPerPage(model, 1, "f16");
  const gib = (b: number) => (b / 2 ** 30).toFixed(2);
  const afterLoad = mem();
  console.log(`${basename(c.model)} with --gpu-memory-utilization ${c.gpuMemoryUtilization}: ${kvPool}`);
  const steps: { step: string; usedBytes: number }[] = [];
  let next = 1; // next free page
  const run = async (label: string, b: number, ctx: number) => {
    const perSeq = Math.ceil((ctx + 4) / c.blockSize);
    if (next + b * perSeq > numPages) {
      console.log(`    ${label}: skipped, ${b * perSeq} pages do not fit in the ${numPages - next} left`);
      steps.push({ step: `${label} (skipped: no room in the pool)`, usedBytes: Number.NaN });
      return;
    }
    const seqs = Array.from({ length: b }, (_, i) => ({
      pages: Array.from({ length: perSeq }, (_, p) => next + i * perSeq + p),
    }));
    next += b * perSeq;
    for (const q of seqs) {
      for (let done = 0; done < ctx; done += 4096) {
        const n = Math.min(4096, ctx - done);
        const tokens = Array.from({ length: n }, (_, j) => 3 + ((done + j) % 31000));
        await engine.forwardArgmax(batchOf([{ tokens, ctx: done + n, pages: q.pages }]));
      }
    }
    for (let s = 1; s <= 4; s++) {
      await engine.forwardArgmax(batchOf(seqs.map((q) => ({ tokens: [5 + s], ctx: ctx + s, pages: q.pages }))));
    }
    steps.push({ step: label, usedBytes: mem() });
  };
  // The longest prefill first: its attention workspace is the largest the reserve covers.
  await run(`decode batch 8 at context ${model.maxPositionEmbeddings - 8}`, 8, model.maxPositionEmbeddings - 8);
  for (const b of batches) await run(`decode batch ${b} at context ${prompt}`, b, prompt);
  const peak = Math.max(afterLoad, ...steps.map((s) => s.usedBytes).filter((u) => !Number.isNaN(u)));
  const cap = k ? k.fraction * k.totalBytes : Number.NaN;
  console.log(
    `  ${numPages} pages = ${(numPages - 1) * c.blockSize} KV tokens (${Math.floor(info.kvBytes / kvPerToken)} in the pool), ` +
      `weights ${gib(info.weightBytes)} GiB; device use after loading ${gib(afterLoad)} GiB, peak after the steps ` +
      `${gib(peak)} GiB of a cap of ${gib(cap)} GiB (reserve ${gib(k?.reserveBytes ?? Number.NaN)} GiB): ` +
      (peak <= cap ? "within" : "OVER"),
  );
  for (const s of steps) console.log(`    after ${s.step}: ${gib(s.usedBytes)} GiB in use`);
  engine.close();
  return {
    shape: basename(c.model),
    gpuMemoryUtilization: c.gpuMemoryUtilization,
    kvPool,
    numPages,
    kvTokens: (numPages - 1) * c.blockSize,
    kvBytes: info.kvBytes,
    weightBytes: info.weightBytes,
    sizing: k ?? null,
    usedAfterLoadBytes: afterLoad,
    usedAfterSteps: steps,
    peakUsedBytes: peak,
    capBytes: cap,
    withinCap: peak <= cap,
  };
}
