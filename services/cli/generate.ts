// `tpserve generate`: streams one completion from a running server to stdout.
import { Client } from "../client/index.js";
import type { Flags } from "../common/flags.js";

export async function generateCommand(f: Flags): Promise<number> {
  const address = f.string("address", "127.0.0.1:50051");
  const prompt = f.string("prompt");
  const json = f.bool("json");
  const apiKey = f.string("api-key") ?? process.env["TPSERVE_API_KEY"];
  const input = {
    prompt: prompt ?? "",
    maxTokens: f.int("max-tokens", 64, 0),
    temperature: f.float("temperature", 0, 0, 100),
    topK: f.int("top-k", 0, 0),
    topP: f.float("top-p", 1, 0, 1),
    minP: f.float("min-p", 0, 0, 1),
    ...(f.has("seed") ? { seed: f.int("seed", 0, 0) } : {}),
    stop: f.has("stop") ? [f.string("stop", "")] : [],
    ignoreEos: f.bool("ignore-eos"),
  };
  f.rejectUnknown();
  if (prompt === undefined) {
    console.error("tpserve generate: --prompt TEXT is required");
    return 1;
  }
  const client = new Client({ address, retries: 0, ...(apiKey ? { apiKey } : {}) });
  try {
    const ids: number[] = [];
    let text = "";
    let finish = "";
    let usage = { promptTokens: 0, completionTokens: 0, preemptions: 0 };
    for await (const c of client.generate(input)) {
      ids.push(...c.tokenIds);
      text += c.text;
      if (!json) process.stdout.write(c.text);
      if (c.finishReason) finish = c.finishReason;
      if (c.usage) usage = c.usage;
    }
    if (json) {
      console.log(
        JSON.stringify({
          ids,
          text,
          finish_reason: finish,
          usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens },
        }),
      );
    } else {
      process.stdout.write(`\n[${finish}, ${usage.completionTokens} tokens]\n`);
    }
    return 0;
  } finally {
    client.close();
  }
}
