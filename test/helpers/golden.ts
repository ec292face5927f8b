// The bundled model's golden references (Hugging Face float32 from the bf16 weights).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { generate } from "../../services/common/client.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { bundledModelDir } from "../../services/common/paths.js";

export interface GoldenPrompt {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
  steps: { top5_ids: number[]; top5_logits: number[] }[];
  first_step_logits: number[];
  rtn_int4_g128_sym_greedy_ids: number[];
  text: string;
}

export interface Golden {
  ppl: Record<string, number | string>;
  golden: GoldenPrompt[];
}

export function loadGolden(): Golden {
  return JSON.parse(readFileSync(join(bundledModelDir(), "golden.public.json"), "utf8")) as Golden;
}

/** Greedy ids of every golden prompt (32 tokens, EOS ignored), sent together so that they share steps. */
export function greedyGoldenIds(client: GenerationClient, maxTokens = 32): Promise<number[][]> {
  return Promise.all(
    loadGolden().golden.map((g) =>
      generate(client, { tokenIds: { ids: g.prompt_ids }, maxTokens, ignoreEos: true }).then((o) => o.ids),
    ),
  );
}
