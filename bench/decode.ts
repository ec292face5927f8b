// Shared by the GPU decode benchmarks (gpu.ts, gpu-step.ts, gpu-tp.ts): the dummy int4 engine, the sequences a
// decode measurement runs, their prefill, and the timed decode steps.
import type { Engine } from "../native/index.js";
import { Flags } from "../services/common/flags.js";
import { workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine } from "../services/worker/server.js";
import { batchOf } from "./batch.js";

/** An engine on `device` with the dummy weights of the config in `model`, in int4 g128 (4096 batch tokens). */
export function dummyInt4Engine(model: string, numPages: number, device: string, actOrder = false) {
  return createEngine({
    ...workerConfigFromFlags(new Flags([])),
    dummyActOrder: actOrder,
    model,
    loadFormat: "dummy",
    quantization: "int4",
    groupSize: 128,
    numPages,
    maxBatchTokens: 4096,
    device,
    port: 0,
  });
}

/**
 * Bytes a decode step must read: the weights without the embedding table (fp32 on the GPU; a step reads one row
 * of it) and the KV cache of every sequence.
 */
export function floorBytes(engine: Engine, vocab: number, hidden: number, kvBytesPerToken: number, ctxTotal: number) {
  return engine.info().weightBytes - vocab * hidden * 4 + kvBytesPerToken * ctxTotal;
}

export interface DecodeSeq {
  tokens: number[];
  ctx: number;
  pages: number[];
}

/** b sequences of `prompt` pseudo-random token ids below `vocab`, sequence i on pages 1 + i * pagesPerSeq ... */
export function decodeSeqs(b: number, prompt: number, pagesPerSeq: number, vocab: number): DecodeSeq[] {
  return Array.from({ length: b }, (_, i) => ({
    tokens: Array.from({ length: prompt }, (_, j) => 3 + ((i * 7919 + j * 104729) % (vocab - 3))),
    ctx: prompt,
    pages: Array.from({ length: pagesPerSeq }, (_, p) => 1 + i * pagesPerSeq + p),
  }));
}

/** Prefills the sequences' prompts, `perForward` sequences per forward pass. */
export async function prefillSeqs(engine: Engine, seqs: DecodeSeq[], perForward: number): Promise<void> {
  for (let i = 0; i < seqs.length; i += perForward) await engine.forwardArgmax(batchOf(seqs.slice(i, i + perForward)));
}

/**
 * `steps` decode steps of every sequence from context `ctx`, each fed the ids of the step before (the first one token
 * 5), as a serving loop runs them: every step but the last says that the next one continues (the engine may decode
 * ahead). times[i] is the wall time from step i - 1's result to step i's (from the start for step 0), so it counts
 * building the batch, and the step's GPU time even where it started before the call. Also the context after the
 * last step.
 */
export async function timeDecodeSteps(
  engine: Engine,
  seqs: DecodeSeq[],
  ctx: number,
  steps: number,
): Promise<{ times: number[]; ctx: number }> {
  const times: number[] = [];
  let tokens = seqs.map(() => 5);
  let t = performance.now();
  for (let s = 0; s < steps; s++) {
    ctx++;
    const step = batchOf(seqs.map((q, i) => ({ tokens: [tokens[i]!], ctx, pages: q.pages })));
    step.continues = s + 1 < steps;
    tokens = Array.from(await engine.forwardArgmax(step));
    const now = performance.now();
    times.push(now - t);
    t = now;
  }
  return { times, ctx };
}

/**
 * Greedy ids of each prompt alone: the prefill, then `steps - 1` decode steps of one token (the batch-1 paths:
 * CUDA graphs of one sequence, the one-token GEMVs).
 */
export async function greedyOneByOne(engine: Engine, prompts: { prompt_ids: number[] }[], steps = 32) {
  const all: number[][] = [];
  for (const g of prompts) {
    const pages = Array.from({ length: Math.ceil((g.prompt_ids.length + steps + 1) / 16) }, (_, i) => i + 1);
    const ids: number[] = [];
    let next = (await engine.forwardArgmax(batchOf([{ tokens: g.prompt_ids, ctx: g.prompt_ids.length, pages }])))[0]!;
    for (let s = 0; s < steps; s++) {
      ids.push(next);
      if (s === steps - 1) break;
      const ctx = g.prompt_ids.length + s + 1;
      const step = batchOf([{ tokens: [next], ctx, pages }]);
      step.continues = s < steps - 2;
      next = (await engine.forwardArgmax(step))[0]!;
    }
    all.push(ids);
  }
  return all;
}
