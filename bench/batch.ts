// Shared by the engine benchmarks: a forward batch of whole sequences, each on its own pages, and a median.
import type { ForwardBatch } from "../native/index.js";

/** Sequences (their new tokens, context after the step, pages) as one batch; logits of each last row, or all. */
export function batchOf(seqs: { tokens: number[]; ctx: number; pages: number[] }[], all = false): ForwardBatch {
  const maxB = Math.max(...seqs.map((s) => s.pages.length));
  const bt = new Int32Array(seqs.length * maxB);
  for (const [i, s] of seqs.entries()) bt.set(s.pages, i * maxB);
  return {
    tokens: Int32Array.from(seqs.flatMap((s) => s.tokens)),
    seqLens: Int32Array.from(seqs.map((s) => s.tokens.length)),
    contextLens: Int32Array.from(seqs.map((s) => s.ctx)),
    blockTables: bt,
    maxBlocksPerSeq: maxB,
    logits: all ? "all" : "last",
  };
}

export const median = (a: number[]) => [...a].sort((x, y) => x - y)[a.length >> 1] ?? 0;
