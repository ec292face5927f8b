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
  const out: DecodeAheadCheck = { steps: 0, equalSteps: 0, firstDifference: null, hits: 0, misses: 0 };
  const both = async (what: string, batch: ForwardBatch, sampling?: RowSampling[]): Promise<number[]> => {
    const a = sampling ? await on.forwardSample(batch, sampling) : await on.forwardArgmax(batch);
    const b = sampling ? await off.forwardSample(batch, sampling) : await off.forwardArgmax(batch);
    out.steps++;
    if (a.every((v, i) => v === b[i])) out.equalSteps++;
    else out.firstDifference ??= `${what}: [${[...a].join(",")}] vs [${[...b].join(",")}]`;
    return [...a];
  };
  const steps = 12;
  const seqs = prompts.slice(0, 3).map((p, i) => {
    const n = Math.ceil((p.length + steps + 1) / 16);
    return { tokens: p, ctx: p.length, pages: Array.from({ length: n }, (_, k) => 1 + i * n + k), live: true };
  });
  const prefill = await both("prefill", batchOf(seqs));
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
      s === 8 || s === 9
        ? live.map((q) => ({ temperature: 0.8, topK: 0, topP: 0.95, minP: 0, seed: 7, position: q.ctx }))
        : undefined;
    const got = await both(`step ${s}`, batch, sampling);
    for (const [i, q] of live.entries()) last.set(q, got[i]!);
  }
  const info = on.info().decodeAhead;
  out.hits = info?.hits ?? 0;
  out.misses = info?.misses ?? 0;
  on.close();
  off.close();
  return out;
}
