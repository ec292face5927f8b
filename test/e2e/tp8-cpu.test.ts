// TP=8 on CPU ranks (issue 9's equality check, the part a CPU can run). The bundled model (4 heads, 2 KV heads)
// does not split 8 ways, so the test writes a small random Llama with 8 heads and 8 KV heads and an untied LM
// head (hidden 256, head_dim 32, MLP 512, 2 layers, vocab 4096 for the bundled tokenizer). Eight worker
// processes (one per rank, as `tpserve serve --tp 8` starts them, one thread each) must give the same greedy ids
// as one worker on the same weights, unquantized and int4 g32 (o_proj has 32 input columns per rank at TP=8, so
// g64 would straddle a shard). A rank killed mid-generation fails the request with UNAVAILABLE.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { loadModelConfig } from "../../services/common/model/config.js";
import { loadWeights } from "../../services/worker/load.js";
import { checkShardGroups } from "../../services/worker/shard.js";
import { startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";
import { recorder } from "../helpers/recorder.js";
import { type TinyLlama, writeTinyLlama } from "../helpers/tiny-llama.js";
import { startTpCluster, type TpCluster } from "../helpers/tp-cluster.js";

const TP = 8;
const MAX_TOKENS = 32;
const prompts = loadGolden().golden.map((g) => g.prompt_ids);

let model: TinyLlama;
beforeAll(() => {
  model = writeTinyLlama({
    hidden: 256,
    heads: 8,
    kvHeads: 8,
    headDim: 32,
    intermediate: 512,
    layers: 2,
    vocab: 4096,
    tied: false,
  });
});
afterAll(() => model?.remove());

/** TP=1 ids per "quantization-groupSize". */
const tp1Ids = new Map<string, number[][]>();

/** Greedy ids of every prompt, sent together (they share steps). */
function greedyAll(client: GenerationClient): Promise<number[][]> {
  return Promise.all(
    prompts.map((ids) =>
      generate(client, { tokenIds: { ids }, maxTokens: MAX_TOKENS, ignoreEos: true }).then((o) => o.ids),
    ),
  );
}

describe("the TP=8 checkpoint", () => {
  it("splits 8 ways: int4 g32 fits every shard, g64 is refused with the size that works", () => {
    const cfg = loadModelConfig(model.dir);
    expect(cfg.numKvHeads).toBe(TP);
    expect(cfg.tieWordEmbeddings).toBe(false);
    expect(() => checkShardGroups(cfg, TP, 32)).not.toThrow();
    expect(() => checkShardGroups(cfg, TP, 64)).toThrow(/o_proj has 256 input columns, 32 per rank.*--group-size 32/);
  });

  it("each rank reads exactly its eighth of every matrix (incl. the separate LM head) plus the norms", () => {
    const cfg = loadModelConfig(model.dir);
    const { engine, tensors } = recorder();
    const opts = { dir: model.dir, config: cfg, quantization: "none", groupSize: 32, symmetric: true } as const;
    const whole = loadWeights(engine, { ...opts, loadFormat: "safetensors" }).bytesRead;
    expect(tensors.has("lm_head")).toBe(true);
    const h = cfg.hiddenSize;
    const norms = (2 * cfg.numLayers + 1) * h * 2; // bf16
    for (let rank = 0; rank < TP; rank++) {
      const got = loadWeights(engine, { ...opts, loadFormat: "safetensors", tp: { rank, world: TP } }).bytesRead;
      expect(got).toBe((whole - norms) / TP + norms);
    }
  });
});

describe.each([
  { quantization: "none" as const, groupSize: 128 as const },
  { quantization: "int4" as const, groupSize: 32 as const },
])("TP=8 against TP=1 on the same weights, quantization $quantization (group $groupSize)", (q) => {
  let want: number[][] = [];
  let c: TpCluster;
  const key = `${q.quantization}-${q.groupSize}`;
  beforeAll(async () => {
    const one = await startCluster({ model: model.dir, ...q, symmetric: true, threads: 1, kvCacheMiB: 16 });
    try {
      want = await greedyAll(one.client);
      tp1Ids.set(key, want);
    } finally {
      await one.close();
    }
    c = await startTpCluster({ tp: TP, model: model.dir, ...q, symmetric: true }, { decodeSteps: 1 });
  }, 120_000);
  afterAll(async () => c?.close());

  it("TP=1 ids are not degenerate (the check could fail)", () => {
    expect(want).toHaveLength(prompts.length);
    for (const ids of want) {
      expect(ids).toHaveLength(MAX_TOKENS);
      expect(new Set(ids).size).toBeGreaterThanOrEqual(4);
    }
    expect(new Set(want.map((ids) => ids.join(","))).size).toBe(prompts.length);
    // int4 really quantized: its ids part from the unquantized ones (the blocks run in order).
    if (q.quantization === "int4") expect(want).not.toEqual(tp1Ids.get("none-128"));
  });

  it("gives the same greedy ids as TP=1 for every prompt; every rank is one of the group", async () => {
    expect(await greedyAll(c.client)).toEqual(want);
    for (let r = 0; r < TP; r++) {
      const d = await c.describe(r);
      expect([d.tpRank, d.tpSize]).toEqual([r, TP]);
    }
  }, 120_000);

  // Once, on the last group (it ends that group).
  if (q.quantization === "int4") {
    it("a rank killed mid-generation ends the request with UNAVAILABLE; the others still answer", async () => {
      let chunks = 0;
      let killedAt = 0;
      const victim = c.ranks[5]!;
      const err = (await generate(c.client, { tokenIds: { ids: prompts[0]! }, maxTokens: 900, ignoreEos: true }, () => {
        if (++chunks === 3) {
          killedAt = performance.now();
          victim.child.kill("SIGKILL");
        }
      }).then(
        () => new Error("the generation finished although a rank was gone"),
        (e: grpc.ServiceError) => e,
      )) as grpc.ServiceError;
      const ms = performance.now() - killedAt;
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toMatch(/NATIVE_TP_(PEER_DEAD|FAILED).*rank 5 \(pid \d+\) exited/);
      expect(ms).toBeLessThan(5000); // the default --tp-timeout-ms is 10 s: a dead pid is seen well before
      for (const r of [0, 1, 7]) expect((await c.describe(r)).tpRank).toBe(r);
    }, 60_000);
  }
});
