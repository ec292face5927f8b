// `tpserve generate`: streams one completion from a running server to stdout.

import { generate, generationClient } from "../common/client.js";
import type { Flags } from "../common/flags.js";
import type { GenerateRequest } from "../common/generated/tpserve/v1/GenerateRequest.js";

export async function generateCommand(f: Flags): Promise<number> {
  const address = f.string("address", "127.0.0.1:50051");
  const prompt = f.string("prompt");
  const json = f.bool("json");
  const req: GenerateRequest = {
    text: prompt ?? "",
    sampling: {
      temperature: f.float("temperature", 0, 0, 100),
      topK: f.int("top-k", 0, 0),
      topP: f.float("top-p", 1, 0, 1),
      minP: f.float("min-p", 0, 0, 1),
      ...(f.has("seed") ? { seed: f.int("seed", 0, 0) } : {}),
    },
    stop: f.has("stop") ? [f.string("stop", "")] : [],
    ignoreEos: f.bool("ignore-eos"),
    ...(f.has("max-tokens") ? { maxTokens: f.int("max-tokens", 64, 0) } : { maxTokens: 64 }),
  };
  f.rejectUnknown();
  if (prompt === undefined) {
    console.error("tpserve generate: --prompt TEXT is required");
    return 1;
  }
  const client = generationClient(address);
  try {
    const out = await generate(client, req, (c) => {
      if (!json) process.stdout.write(c.text);
    });
    if (json) {
      console.log(
        JSON.stringify({
          ids: out.ids,
          text: out.text,
          finish_reason: out.finishReason,
          usage: { prompt_tokens: out.promptTokens, completion_tokens: out.completionTokens },
        }),
      );
    } else {
      process.stdout.write(
        `\n[${out.finishReason.replace("FINISH_REASON_", "").toLowerCase()}, ${out.completionTokens} tokens]\n`,
      );
    }
    return 0;
  } finally {
    client.close();
  }
}
