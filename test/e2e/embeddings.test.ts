// Embeddings over gRPC and /v1/embeddings (the official openai client): deterministic, normalized, and a
// paraphrase ranks above an unrelated sentence for a small set built from Brown-corpus sentences.
import * as grpc from "@grpc/grpc-js";
import OpenAI from "openai";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unary } from "../../services/common/client.js";
import type { EmbedResponse__Output } from "../../services/common/generated/tpserve/v1/EmbedResponse.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";

const cosine = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i]!, 0);

// (sentence, paraphrase, unrelated): the sentences and the unrelated ones are taken from data/brown/brown.test.txt;
// the paraphrases are written for this test.
const TRIPLES: [string, string, string][] = [
  [
    "The trial had packed the large courtroom for more than a week.",
    "For over a week the trial had filled the large courtroom.",
    "Then spread a generous amount of glue on the four pieces and bend them into place on the jig.",
  ],
  [
    "Implementation of Georgia's automobile title law was also recommended by the outgoing jury.",
    "The outgoing jury also recommended that Georgia's automobile title law be implemented.",
    "By that, one feels that magnetic forces are as general as electrical forces.",
  ],
  [
    "Then spread a generous amount of glue on the four pieces and bend them into place on the jig.",
    "Next, spread plenty of glue on the four pieces and bend them into place on the jig.",
    "The trial had packed the large courtroom for more than a week.",
  ],
  [
    "In the United Nations Charter, the right of self-determination is also an essential principle.",
    "The right of self-determination is also an essential principle of the United Nations Charter.",
    "For added strength, I also fastened a small block on each side of every frame and batten joint.",
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
