// GPU check of decoding ahead (ForwardBatch.continues, docs/gpu.md "Decode ahead"): the same script of forward
// passes on two engines of one model, one decoding ahead and one with TPSERVE_DECODE_AHEAD=0, must return the same
// ids at every step. The script takes every path: steps taken as enqueued (hits), a forced token that the step
// decoded ahead did not have (a miss), a finished sequence dropped from the batch (a hit on a subset), sampled
// steps, and a last step that does not continue.
import type { Engine, ForwardBatch, RowSampling } from "../native/index.js";
import { batchOf } from "./batch.js";

export interface DecodeAheadCheck {
  steps: number;
  equalSteps: number;
  firstDifference: string | null;
  hits: number;
  misses: number;
}

/**
 * The script on one engine: the ids of each forward pass (a prefill of three prompts, then 12 decode steps).
 * sample: steps 8 and 9 sample (a tensor-parallel group does not decode ahead of sampled steps).
 */
export async function decodeAheadScript(engine: Engine, prompts: number[][], vocab: number, sample = true) {
  const out: number[][] = [];
  const step = async (batch: ForwardBatch, sampling?: RowSampling[]) => {
    const ids = [...(sampling ? await engine.forwardSample(batch, sampling) : await engine.forwardArgmax(batch))];
    out.push(ids);
    return ids;
  };
  const steps = 12;
  const seqs = prompts.slice(0, 3).map((p, i) => {
    const n = Math.ceil((p.length + steps + 1) / 16);
    return { tokens: p, ctx: p.length, pages: Array.from({ length: n }, (_, k) => 1 + i * n + k), live: true };
  });
  const prefill = await step(batchOf(seqs));
  const last = new Map(seqs.map((q, i) => [q, prefill[i]!]));
  for (let s = 0; s < steps; s++) {
    // Step 4 forces sequence 1's token; step 7 drops sequence 0; steps 8 and 9 sample.
    if (s === 7) seqs[0]!.live = false;
    const live = seqs.filter((q) => q.live);
    const tokens = live.map((q) => last.get(q)!);
    if (s === 4) tokens[1] = (tokens[1]! + 1) % vocab;
    const batch = batchOf(live.map((q, i) => ({ tokens: [tokens[i]!], ctx: ++q.ctx, pages: q.pages })));
    batch.continues = s + 1 < steps;
    const sampling =
      sample && (s === 8 || s === 9)
        ? live.map((q) => ({ temperature: 0.8, topK: 0, topP: 0.95, minP: 0, seed: 7, position: q.ctx }))
        : undefined;
    const got = await step(batch, sampling);
    for (const [i, q] of live.entries()) last.set(q, got[i]!);
  }
  return out;
}

/** Runs the script on `create()` twice (ahead on, then off); prompts: at least 3 token lists. */
export async function checkDecodeAhead(create: () => Engine, prompts: number[][], vocab: number) {
  const on = create();
  const saved = process.env["TPSERVE_DECODE_AHEAD"];
  process.env["TPSERVE_DECODE_AHEAD"] = "0";
  let off: Engine;
  try {
    off = create();
  } finally {
    if (saved === undefined) delete process.env["TPSERVE_DECODE_AHEAD"];
    else process.env["TPSERVE_DECODE_AHEAD"] = saved;
  }
  const a = await decodeAheadScript(on, prompts, vocab);
  const b = await decodeAheadScript(off, prompts, vocab);
  const names = a.map((_, i) => (i === 0 ? "prefill" : `step ${i - 1}`));
  const diff = a.findIndex((ids, i) => JSON.stringify(ids) !== JSON.stringify(b[i]));
  const info = on.info().decodeAhead;
  const out: DecodeAheadCheck = {
    steps: a.length,
    equalSteps: a.filter((ids, i) => JSON.stringify(ids) === JSON.stringify(b[i])).length,
    firstDifference: diff < 0 ? null : `${names[diff]}: [${a[diff]!.join(",")}] vs [${b[diff]!.join(",")}]`,
    hits: info?.hits ?? 0,
    misses: info?.misses ?? 0,
  };
  on.close();
  off.close();
  return out;
}
