// `tpserve eval ppl --text FILE`: loads the model in this process and prints the perplexity as JSON.
import { join } from "node:path";
import type { Flags } from "../common/flags.js";
import { loadTokenizer } from "../common/model/tokenizer.js";
import { packageRoot } from "../common/paths.js";
import { workerConfigFromFlags } from "../worker/config.js";
import { createEngine, quantizationLabel } from "../worker/server.js";
import { encodeDocuments, perplexity, readText } from "./eval.js";
import { choiceCommand } from "./eval-choice-command.js";
import { progressBar } from "./progress.js";

export async function evalCommand(f: Flags): Promise<number> {
  const what = f.positional[0];
  if (what === "choice") return await choiceCommand(f);
  if (what !== "ppl") {
    console.error('tpserve eval: evaluations are "ppl" (tpserve eval ppl --text FILE) and "choice"');
    return 1;
  }
  const window = f.int("window", 512, 1, 1 << 16);
  const text = f.string("text", join(packageRoot(), "data", "brown", "brown.test.txt"));
  const cfg = { ...workerConfigFromFlags(f), maxBatchTokens: window };
  f.rejectUnknown();
  const blocks = Math.ceil(window / cfg.blockSize);
  cfg.numPages = blocks + 1;
  const bar = progressBar("loading");
  const t0 = performance.now();
  const { engine, model } = createEngine(cfg, (p) => bar(p.done, p.total, p.name));
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const tok = loadTokenizer(cfg.model);
    const ids = encodeDocuments(readText(text), tok, model.eosTokenIds[0] ?? 2);
    const evalBar = progressBar("windows");
    const r = await perplexity(engine, ids, {
      window,
      blockSize: cfg.blockSize,
      vocab: model.vocabSize,
      onWindow: (i, n) => evalBar(i, n, ""),
    });
    console.log(
      JSON.stringify({
        perplexity: r.perplexity,
        tokens: r.tokens,
        windows: r.windows,
        window,
        text,
        quantization: quantizationLabel(cfg),
        kv_cache_dtype: cfg.kvCacheDtype,
        weight_bytes: engine.info().weightBytes,
        load_seconds: loadSeconds,
        eval_seconds: r.seconds,
      }),
    );
    return 0;
  } finally {
    engine.close();
  }
}
