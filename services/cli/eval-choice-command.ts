// `tpserve eval choice [--text FILE] [--items 300] [--seed 1]`: the multiple-choice next-word check
// (eval-choice.ts) with the model loaded in this process; prints the accuracy as JSON.
import { join } from "node:path";
import type { Flags } from "../common/flags.js";
import { loadTokenizer } from "../common/model/tokenizer.js";
import { packageRoot } from "../common/paths.js";
import { workerConfigFromFlags } from "../worker/config.js";
import { createEngine, quantizationLabel } from "../worker/server.js";
import { readText } from "./eval.js";
import { buildChoiceItems, scoreChoices } from "./eval-choice.js";
import { progressBar } from "./progress.js";

/** Longest candidate sequence (tokens); four of them run in one forward pass. */
export const CHOICE_CONTEXT = 128;

export async function choiceCommand(f: Flags): Promise<number> {
  const text = f.string("text", join(packageRoot(), "data", "brown", "brown.test.txt"));
  const n = f.int("items", 300, 1, 100_000);
  const seed = f.int("seed", 1, 0, 2 ** 31);
  const cfg = { ...workerConfigFromFlags(f), maxBatchTokens: 4 * CHOICE_CONTEXT };
  f.rejectUnknown();
  cfg.numPages = (4 * CHOICE_CONTEXT) / cfg.blockSize + 1;
  const bar = progressBar("loading");
  const { engine, model } = createEngine(cfg, (p) => bar(p.done, p.total, p.name));
  try {
    const items = buildChoiceItems(readText(text), n, seed);
    const itemBar = progressBar("items");
    const r = await scoreChoices(engine, loadTokenizer(cfg.model), items, {
      blockSize: cfg.blockSize,
      vocab: model.vocabSize,
      maxContext: CHOICE_CONTEXT,
      onItem: (i, total) => itemBar(i, total, ""),
    });
    console.log(
      JSON.stringify({
        accuracy: r.accuracy,
        items: r.items,
        mean_margin: r.meanMargin,
        seed,
        text,
        quantization: quantizationLabel(cfg),
        kv_cache_dtype: cfg.kvCacheDtype,
        seconds: r.seconds,
      }),
    );
    return 0;
  } finally {
    engine.close();
  }
}
