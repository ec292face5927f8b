// Embeddings over gRPC and /v1/embeddings (the official openai client): deterministic, normalized, and a
// paraphrase ranks above an unrelated sentence for a small set built from Brown-corpus sentences.
import * as grpc from "@grpc/grpc-js";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unary } from "../../services/common/client.js";
import type { EmbedResponse__Output } from "../../services/common/generated/tpserve/v1/EmbedResponse.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";

const cosine = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);

// (sentence, paraphrase, unrelated): sentences in the style of the Brown corpus (news, fiction, science).
const TRIPLES: [string, string, string][] = [
  [
    "The committee said that the city schools needed more money next year.",
    "According to the committee, the schools of the city will need more money next year.",
    "She looked at the door and smiled at the old man in the garden.",
  ],
  [
    "The President told the Senate that the United States would support the plan.",
    "The United States will support the plan, the President told the Senate.",
    "The temperature of the water was measured every hour during the experiment.",
  ],
  [
    "The results of the experiment show that the temperature of the water rose quickly.",
    "The experiment's results showed a quick rise in the water temperature.",
    "In the morning the old man walked to the church with his wife.",
  ],
  [
    "She walked slowly down the street and looked at the houses.",
    "Slowly she walked along the street, looking at the houses.",
    "The state government approved a new tax on the sale of property.",
  ],
];

describe("embeddings", () => {
  let c: Cluster;
  let openai: OpenAI;
  beforeAll(async () => {
    c = await startCluster();
    openai = new OpenAI({ apiKey: "unused", baseURL: `http://127.0.0.1:${c.router.httpPort}/v1`, maxRetries: 0 });
  });
  afterAll(async () => c?.close());

  const embed = (text: string) =>
    unary<{ text: string }, EmbedResponse__Output>((r, cb) => c.client.Embed(r, cb), { text }).then((r) => r.values);

  it("gRPC Embed: the same text gives the same unit vector of the model's hidden size", async () => {
    const a = await embed(TRIPLES[0]![0]);
    const b = await embed(TRIPLES[0]![0]);
    expect(a).toEqual(b);
    expect(a).toHaveLength(256);
    expect(Math.abs(cosine(a, a) - 1)).toBeLessThan(1e-5);
    const err = await embed("").catch((e: grpc.ServiceError) => e);
    expect((err as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);
  });

  it("/v1/embeddings ranks each paraphrase above the unrelated sentence", async () => {
    const r = await openai.embeddings.create({
      model: "tinyllama-brown",
      input: TRIPLES.flat(),
      encoding_format: "float",
    });
    expect(r.data).toHaveLength(TRIPLES.length * 3);
    expect(r.usage.prompt_tokens).toBeGreaterThan(TRIPLES.length * 3 * 8);
    const v = r.data.map((d) => d.embedding as number[]);
    for (const [i, t] of TRIPLES.entries()) {
      const [s, p, u] = [v[3 * i]!, v[3 * i + 1]!, v[3 * i + 2]!];
      expect(
        cosine(s, p),
        `"${t[0]}": paraphrase ${cosine(s, p).toFixed(3)}, unrelated ${cosine(s, u).toFixed(3)}`,
      ).toBeGreaterThan(cosine(s, u));
    }
    expect(await embed(TRIPLES[1]![0])).toEqual(v[3]!.map((x) => Math.fround(x)));
  });
});
