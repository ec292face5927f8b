// Tensor parallelism on GPTQ and AWQ checkpoints end to end: a group of TP worker processes loading a checkpoint
// written by the project's writer (RTN codes, group 64, so TP=4's 64 o_proj input columns per rank hold whole
// groups) gives the same greedy ids over gRPC as one worker loading the same checkpoint, for every golden prompt;
// also GPTQ with act-order in every linear (o and down shards: ranges of whole groups of the stored order, their
// input gathered from every rank); checkpoints that cannot split make the group fail to start with the reason.
import { rmSync } from "node:fs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startCluster } from "../helpers/cluster.js";
import { greedyGoldenIds, loadGolden } from "../helpers/golden.js";
import { type QuantCheckpointOptions, writeQuantCheckpoint } from "../helpers/quant-checkpoint.js";
import { startTpCluster } from "../helpers/tp-cluster.js";

const golden = loadGolden().golden;
const MAX_TOKENS = 32;

const allLinears = Array.from({ length: 8 }, (_, l) =>
  ["q_proj", "k_proj", "v_proj", "o_proj"]
    .map((m) => `model.layers.${l}.self_attn.${m}`)
    .concat(["gate_proj", "up_proj", "down_proj"].map((m) => `model.layers.${l}.mlp.${m}`)),
).flat();
const checkpoints: { label: string; opts: QuantCheckpointOptions }[] = [
  { label: "gptq", opts: { format: "gptq", groupSize: 64 } },
  { label: "awq", opts: { format: "awq", groupSize: 64 } },
  { label: "gptq with act-order in every linear", opts: { format: "gptq", groupSize: 64, actOrder: allLinears } },
];

describe.each(checkpoints)("$label checkpoint, group 64", ({ opts }) => {
  let dir = "";
  let tp1: number[][] = [];
  beforeAll(async () => {
    dir = writeQuantCheckpoint(opts);
    const c = await startCluster({ model: dir, quantization: "none" });
    try {
      tp1 = await greedyGoldenIds(c.client, MAX_TOKENS);
    } finally {
      await c.close();
    }
  }, 120_000);
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it.each([2, 4])(
    "TP=%i gives the same greedy ids as TP=1 on the same checkpoint",
    async (tp) => {
      expect(tp1).toHaveLength(golden.length);
      for (const ids of tp1) expect(ids).toHaveLength(MAX_TOKENS);
      // The checkpoint's int4 weights are what runs: they change some of the unquantized model's continuations.
      expect(tp1).not.toEqual(golden.map((g) => g.greedy_ids));
      const c = await startTpCluster({ tp, model: dir, quantization: "none" });
      try {
        expect(await greedyGoldenIds(c.client, MAX_TOKENS)).toEqual(tp1);
      } finally {
        await c.close();
      }
    },
    120_000,
  );
});

describe("a group refuses a checkpoint that cannot split, at start and with the reason", () => {
  it.each([
    {
      what: "AWQ group 128 at TP=4",
      ckpt: { format: "awq" as const, groupSize: 128 },
      tp: 4,
      message: /group size 128 .* cannot be split over --tp 4: o_proj .* use --tp 1 or 2 with this checkpoint/,
    },
  ])(
    "$what",
    async ({ ckpt, tp, message }) => {
      const dir = writeQuantCheckpoint(ckpt);
      try {
        await expect(startTpCluster({ tp, model: dir, quantization: "none" })).rejects.toThrow(message);
      } finally {
        rmSync(dir, { recursive: true, force: true });
      }
    },
    60_000,
  );
});
