// `tpserve eval ppl`: perplexity of a text file with the definition of the bundled model's golden file:
// per document (split on blank lines) BOS + ids + EOS, concatenated; non-overlapping windows of `window` predicted
// tokens (window i covers ids[window*i : window*i + window + 1]); float32 compute.
import { readFileSync } from "node:fs";
import type { Engine } from "../../native/index.js";
import type { TpTokenizer } from "../common/model/tokenizer.js";

export function encodeDocuments(text: string, tok: TpTokenizer, eos: number): number[] {
  const ids: number[] = [];
  for (const doc of text.split("\n\n")) {
    const d = doc.trim();
    if (d.length === 0) continue;
    for (const t of tok.encode(d, { addSpecialTokens: true })) ids.push(t);
    ids.push(eos);
  }
  return ids;
}

/** Negative log-likelihood of `target` under one row of logits, in float64. */
function nll(logits: Float32Array, offset: number, vocab: number, target: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i]! - max);
  return Math.log(sum) + max - logits[offset + target]!;
}

export interface PplResult {
  perplexity: number;
  tokens: number;
  windows: number;
  seconds: number;
}

export async function perplexity(
  engine: Engine,
  ids: number[],
  opts: { window: number; blockSize: number; vocab: number; onWindow?: (i: number, n: number) => void },
): Promise<PplResult> {
  const t0 = performance.now();
  const starts: number[] = [];
  for (let i = 0; i < ids.length - 1; i += opts.window) starts.push(i);
  const pages = Math.ceil(opts.window / opts.blockSize);
  const blockTables = new Int32Array(pages);
  for (let p = 0; p < pages; p++) blockTables[p] = p + 1;
  let total = 0;
  let count = 0;
  for (let w = 0; w < starts.length; w++) {
    const x = ids.slice(starts[w]!, starts[w]! + opts.window + 1);
    if (x.length < 2) break;
    const n = x.length - 1;
    const logits = await engine.forward({
      tokens: Int32Array.from(x.slice(0, n)),
      seqLens: Int32Array.of(n),
      contextLens: Int32Array.of(n),
      blockTables,
      maxBlocksPerSeq: pages,
      logits: "all",
    });
    for (let i = 0; i < n; i++) total += nll(logits, i * opts.vocab, opts.vocab, x[i + 1]!);
    count += n;
    opts.onWindow?.(w + 1, starts.length);
  }
  return {
    perplexity: Math.exp(total / count),
    tokens: count,
    windows: starts.length,
    seconds: (performance.now() - t0) / 1000,
  };
}

export function readText(file: string): string {
  return readFileSync(file, "utf8");
}
