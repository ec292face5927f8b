// Tensor parallelism end to end: a group of TP worker processes (shared-memory collectives) behind the router gives
// the same greedy ids as one worker for every golden prompt, unquantized and int4. At TP=4 the bundled model's
// o_proj has 64 input columns per rank, so int4 uses group size 64 there (128 would straddle a shard; see
// tp-failure.test.ts for the refusal) and is compared with TP=1 at group size 64.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { unary } from "../../services/common/client.js";
import type { EmbedResponse__Output } from "../../services/common/generated/tpserve/v1/EmbedResponse.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { startCluster } from "../helpers/cluster.js";
import { greedyGoldenIds, loadGolden } from "../helpers/golden.js";
import { startTpCluster, type TpCluster } from "../helpers/tp-cluster.js";

const golden = loadGolden().golden;
const MAX_TOKENS = 32;

const EMBED_TEXT = "The jury said it did find that many of the voters had been paid.";
const embed = (client: GenerationClient) =>
  unary<{ text: string }, EmbedResponse__Output>((r, cb) => client.Embed(r, cb), { text: EMBED_TEXT }).then(
    (r) => r.values,
  );

/** TP=1 int4 g64 ids (no golden file has them) and TP=1 embeddings of every configuration: in-process workers. */
let int4g64: number[][] = [];
const embeddings = new Map<string, number[]>();

beforeAll(async () => {
  for (const [quantization, groupSize] of [
    ["none", 128],
    ["int4", 128],
    ["int4", 64],
  ] as const) {
    const c = await startCluster({ quantization, groupSize, symmetric: true });
    try {
      if (quantization === "int4" && groupSize === 64) int4g64 = await greedyGoldenIds(c.client, MAX_TOKENS);
      embeddings.set(`${quantization}-${groupSize}`, await embed(c.client));
    } finally {
      await c.close();
    }
  }
}, 300_000);

const cases = [
  { tp: 2, quantization: "none" as const, groupSize: 128 as const, expected: () => golden.map((g) => g.greedy_ids) },
  { tp: 4, quantization: "none" as const, groupSize: 128 as const, expected: () => golden.map((g) => g.greedy_ids) },
  {
    tp: 2,
    quantization: "int4" as const,
    groupSize: 128 as const,
    expected: () => golden.map((g) => g.rtn_int4_g128_sym_greedy_ids),
  },
  { tp: 2, quantization: "int4" as const, groupSize: 64 as const, expected: () => int4g64 },
  { tp: 4, quantization: "int4" as const, groupSize: 64 as const, expected: () => int4g64 },
];

describe.each(cases)(
  "TP=$tp, quantization $quantization (group $groupSize)",
  ({ tp, quantization, groupSize, expected }) => {
    let c: TpCluster;
    beforeAll(async () => {
      c = await startTpCluster({ tp, quantization, groupSize, symmetric: true });
    }, 300_000);
    afterAll(async () => c?.close());

    it("gives the same greedy ids as TP=1 for every golden prompt", async () => {
      const want = expected();
      expect(want).toHaveLength(golden.length);
      for (const w of want) expect(w).toHaveLength(MAX_TOKENS);
      expect(await greedyGoldenIds(c.client, MAX_TOKENS)).toEqual(want);
    }, 300_000);

    it("embeds like TP=1 (final hidden states, no LM head)", async () => {
      const got = await embed(c.client);
      const embedding = embeddings.get(`${quantization}-${groupSize}`)!;
      expect(got).toHaveLength(256);
      let err = 0;
      for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - embedding[i]!));
      expect(err).toBeLessThan(1e-5);
    });

    it("is one group: the router sees rank 0 of a group of the right size, every rank answers", async () => {
      for (let r = 0; r < tp; r++) {
        const d = await c.describe(r);
        expect(d.tpRank).toBe(r);
        expect(d.tpSize).toBe(tp);
      }
      expect(c.ranks.map((r) => r.rank)).toEqual([...Array(tp).keys()]);
    });
  },
);
