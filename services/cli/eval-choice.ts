// `tpserve eval choice`: a multiple-choice next-word check built from the Brown test split, to show what
// perplexity does not. Each item is a context (the previous sentence and the start of a sentence) and four
// candidate next words: the true one and three others drawn from the words of the surrounding 30 lines (on
// topic, so harder than random words); the model picks the
// candidate with the highest total log-probability of its tokens. Items are a fixed function of the text and seed.
import type { Engine } from "../../native/index.js";
import type { TpTokenizer } from "../common/model/tokenizer.js";

export interface ChoiceItem {
  context: string;
  choices: string[];
  answer: number;
}

function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s / 2 ** 32;
  };
}

const WORD = /^[a-z]{3,}$/;

/** `n` items from sentences (lines) of at least 10 words, spread evenly over the text. */
export function buildChoiceItems(text: string, n: number, seed: number): ChoiceItem[] {
  const lines = text
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l.length > 0);
  const pool = [...new Set(lines.flatMap((l) => l.split(/\s+/)).filter((w) => WORD.test(w)))].sort();
  const r = rng(seed);
  const candidates: number[] = [];
  for (let i = 1; i < lines.length; i++) if (lines[i]!.split(/\s+/).length >= 10) candidates.push(i);
  const items: ChoiceItem[] = [];
  for (let k = 0; k < n && k < candidates.length; k++) {
    const li = candidates[Math.floor((k * candidates.length) / n)]!;
    const words = lines[li]!.split(/\s+/);
    const positions = words.map((w, i) => (i >= 4 && WORD.test(w) ? i : -1)).filter((i) => i >= 0);
    if (positions.length === 0) continue;
    const p = positions[Math.floor(r() * positions.length)]!;
    const answerWord = words[p]!;
    // Distractors from the surrounding text (same document region, so on topic), else from the whole split.
    const near = [
      ...new Set(
        lines
          .slice(Math.max(0, li - 15), li + 15)
          .flatMap((l) => l.split(/\s+/))
          .filter((w) => WORD.test(w) && w !== answerWord),
      ),
    ].sort();
    const choices = [answerWord];
    for (let tries = 0; choices.length < 4; tries++) {
      const from = near.length >= 3 && tries < 50 ? near : pool;
      const w = from[Math.floor(r() * from.length)]!;
      if (!choices.includes(w)) choices.push(w);
    }
    // Shuffle with the same generator; remember where the answer went.
    for (let i = choices.length - 1; i > 0; i--) {
      const j = Math.floor(r() * (i + 1));
      [choices[i], choices[j]] = [choices[j]!, choices[i]!];
    }
    items.push({
      context: `${lines[li - 1]} ${words.slice(0, p).join(" ")}`,
      choices,
      answer: choices.indexOf(answerWord),
    });
  }
  return items;
}

function logSoftmaxAt(logits: Float32Array, offset: number, vocab: number, target: number): number {
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vocab; i++) max = Math.max(max, logits[offset + i]!);
  let sum = 0;
  for (let i = 0; i < vocab; i++) sum += Math.exp(logits[offset + i]! - max);
  return logits[offset + target]! - max - Math.log(sum);
}

export interface ChoiceResult {
  accuracy: number;
  items: number;
  /** Mean log-probability margin of the true word over the best other candidate. */
  meanMargin: number;
  seconds: number;
}

/** Scores every item: one forward pass per item with the four candidates as four sequences. */
export async function scoreChoices(
  engine: Engine,
  tok: TpTokenizer,
  items: ChoiceItem[],
  opts: { blockSize: number; vocab: number; maxContext: number; onItem?: (i: number, n: number) => void },
): Promise<ChoiceResult> {
  const t0 = performance.now();
  let correct = 0;
  let margin = 0;
  const pagesPer = Math.ceil(opts.maxContext / opts.blockSize);
  for (let it = 0; it < items.length; it++) {
    const item = items[it]!;
    let ctx = tok.encode(item.context, { addSpecialTokens: true });
    const seqs = item.choices.map((c) => tok.encode(`${item.context} ${c}`, { addSpecialTokens: true }));
    // Left-truncate so that every sequence fits maxContext; candidate tokens follow the common prefix.
    const longest = Math.max(...seqs.map((s) => s.length));
    const cut = Math.max(0, longest - opts.maxContext);
    ctx = ctx.slice(cut);
    const trimmed = seqs.map((s) => s.slice(cut));
    const starts = trimmed.map((s) => {
      let i = 0;
      while (i < ctx.length && i < s.length - 1 && s[i] === ctx[i]) i++;
      return Math.max(1, i);
    });
    const tokens = Int32Array.from(trimmed.flat());
    const blockTables = new Int32Array(trimmed.length * pagesPer);
    for (let s = 0; s < trimmed.length; s++)
      for (let p = 0; p < pagesPer; p++) blockTables[s * pagesPer + p] = 1 + s * pagesPer + p;
    const logits = await engine.forward({
      tokens,
      seqLens: Int32Array.from(trimmed.map((s) => s.length)),
      contextLens: Int32Array.from(trimmed.map((s) => s.length)),
      blockTables,
      maxBlocksPerSeq: pagesPer,
      logits: "all",
    });
    const scores: number[] = [];
    let row = 0;
    for (let s = 0; s < trimmed.length; s++) {
      const seq = trimmed[s]!;
      let lp = 0;
      for (let i = starts[s]!; i < seq.length; i++)
        lp += logSoftmaxAt(logits, (row + i - 1) * opts.vocab, opts.vocab, seq[i]!);
      scores.push(lp);
      row += seq.length;
    }
    const best = scores.indexOf(Math.max(...scores));
    if (best === item.answer) correct++;
    const others = scores.filter((_, i) => i !== item.answer);
    margin += scores[item.answer]! - Math.max(...others);
    opts.onItem?.(it + 1, items.length);
  }
  return {
    accuracy: items.length ? correct / items.length : 0,
    items: items.length,
    meanMargin: items.length ? margin / items.length : 0,
    seconds: (performance.now() - t0) / 1000,
  };
}
