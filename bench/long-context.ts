// GPU check of decode at long contexts (bench/gpu.ts --golden-only): the golden prompts are short, so on the GPU
// they take the one-pass decode attention; contexts past 256 tokens take the split path (partitions, then the
// merge kernel, in groups of threads above 8 partitions: docs/gpu-runs.md run 89), which otherwise only check_ops
// covers. Here the bundled model decodes three sequences of the corpus at 300-900 tokens of context, first on the
// CPU engine (greedy, its own ids fed back), then on the engine under test with the CPU's ids fed in (teacher-forced),
// as one batch of three and each alone. Every step's greedy id must equal the CPU's, except where the CPU's two best
// logits are closer than `margin` (the fp16 KV cache's rounding can swap them); reported as explained.
import type { Engine } from "../native/index.js";
import { batchOf } from "./batch.js";

export interface LongContextCheck {
  contexts: number[];
  steps: number;
  equal: number;
  explained: number;
  unexplained: string[];
  maxAbsDiff: number;
}

/** Top id and the gap to the runner-up in row `r` of logits (rows of `vocab`). */
function top2(logits: Float32Array, r: number, vocab: number): { id: number; gap: number } {
  let a = -Infinity;
  let b = -Infinity;
  let id = 0;
  for (let v = 0; v < vocab; v++) {
    const x = logits[r * vocab + v]!;
    if (x > a) {
      b = a;
      a = x;
      id = v;
    } else if (x > b) b = x;
  }
  return { id, gap: a - b };
}

interface Seq {
  prompt: number[];
  pages: number[];
}

/**
 * Logits of the prefill (each sequence alone, rows side by side) and of `steps` decode steps of `seqs` (batched), step
 * s feeding sequence i the token feed(i, s, logits of the pass before).
 */
async function run(
  engine: Engine,
  seqs: Seq[],
  steps: number,
  vocab: number,
  feed: (i: number, s: number, prev: Float32Array) => number,
) {
  const rows: Float32Array[] = [];
  for (const q of seqs)
    rows.push(await engine.forward(batchOf([{ tokens: q.prompt, ctx: q.prompt.length, pages: q.pages }])));
  const out: Float32Array[] = [Float32Array.from(rows.flatMap((r) => [...r]))];
  for (let s = 0; s < steps; s++) {
    const prev = out[s]!;
    const batch = batchOf(
      seqs.map((q, i) => ({ tokens: [feed(i, s, prev)], ctx: q.prompt.length + s + 1, pages: q.pages })),
    );
    out.push(await engine.forward(batch));
  }
  if (out.some((l) => l.length !== seqs.length * vocab)) throw new Error("long-context check: unexpected logits size");
  return out;
}

/**
 * The check on `engine` against `cpu` (the reference engine, same model and quantization). tokens: a token stream
 * to cut the prompts from (at least 900 + steps long).
 */
export async function checkLongContext(
  engine: Engine,
  cpu: Engine,
  tokens: number[],
  vocab: number,
  margin: number,
  steps = 24,
): Promise<LongContextCheck> {
  const contexts = [900, 600, 300];
  let start = 0;
  let page = 1;
  const seqs: Seq[] = contexts.map((n) => {
    const prompt = tokens.slice(start, start + n);
    const pages = Array.from({ length: Math.ceil((n + steps + 1) / 16) }, () => page++);
    start += n;
    return { prompt, pages };
  });
  if (seqs.some((q, i) => q.prompt.length !== contexts[i]))
    throw new Error("long-context check: token stream too short");
  // The CPU's greedy run, its own ids fed back; idOf(i, s): sequence i's greedy id after pass s (0: the prefill).
  const refLogits = await run(cpu, seqs, steps, vocab, (i, _s, prev) => top2(prev, i, vocab).id);
  const idOf = (i: number, s: number) => top2(refLogits[s]!, i, vocab).id;
  const result: LongContextCheck = { contexts, steps: 0, equal: 0, explained: 0, unexplained: [], maxAbsDiff: 0 };
  const compare = (got: Float32Array[], which: number[], label: string) => {
    for (let s = 0; s < got.length; s++) {
      for (const [r, i] of which.entries()) {
        result.steps++;
        const ref = top2(refLogits[s]!, i, vocab);
        for (let v = 0; v < vocab; v++)
          result.maxAbsDiff = Math.max(
            result.maxAbsDiff,
            Math.abs(got[s]![r * vocab + v]! - refLogits[s]![i * vocab + v]!),
          );
        const id = top2(got[s]!, r, vocab).id;
        if (id === ref.id) result.equal++;
        else if (ref.gap < margin) result.explained++;
        else
          result.unexplained.push(
            `${label} seq ${i} (context ${contexts[i]! + s}) step ${s}: ${id} vs ${ref.id}, gap ${ref.gap.toExponential(2)}`,
          );
      }
    }
  };
  compare(await run(engine, seqs, steps, vocab, idOf), [0, 1, 2], "batch of 3");
  for (const [i, q] of seqs.entries())
    compare(await run(engine, [q], steps, vocab, (_, s) => idOf(i, s)), [i], "alone");
  return result;
}
