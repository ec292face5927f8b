// Tensor-parallel loading: each rank gets exactly its slice of every tensor (checked against slices of the whole
// tensor), reads only about its share of the checkpoint's bytes, and int4 groups that would straddle a shard are
// refused with a group size that works.
import { describe, expect, it } from "vitest";
import type { WeightTensor } from "../../native/index.js";
import { ConfigError } from "../../services/common/errors.js";
import { loadModelConfig } from "../../services/common/model/config.js";
import { bundledModelDir } from "../../services/common/paths.js";
import { type LoadOptions, loadWeights } from "../../services/worker/load.js";
import { checkShardGroups, checkTpShape } from "../../services/worker/shard.js";
import { asStored } from "../helpers/load-options.js";
import { recorder } from "../helpers/recorder.js";

const MODEL = bundledModelDir();
const cfg = loadModelConfig(MODEL);

const base = asStored(cfg, { dir: MODEL });

function load(o: Partial<LoadOptions>) {
  const r = recorder();
  const summary = loadWeights(r.engine, { ...base, ...o });
  return { ...r, summary };
}

/** (rows, cols) bf16 bytes of a dense tensor, as a row-major array of 16-bit values. */
function values(t: WeightTensor | undefined): { rows: number; cols: number; v: Uint16Array } {
  if (t?.kind !== "dense") throw new Error("expected a dense tensor");
  const [rows, cols] = t.shape as [number, number];
  return {
    rows,
    cols,
    v: new Uint16Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength)),
  };
}

function slice(t: WeightTensor | undefined, dim: 0 | 1, begin: number, end: number): Uint16Array {
  const { rows, cols, v } = values(t);
  if (dim === 0) return v.slice(begin * cols, end * cols);
  const w = end - begin;
  const out = new Uint16Array(rows * w);
  for (let r = 0; r < rows; r++) out.set(v.subarray(r * cols + begin, r * cols + end), r * w);
  return out;
}

/** Byte-equal (vitest's deep equality walks typed arrays element by element: slow for the 1M-value embedding). */
const bytes = (a: Uint16Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const same = (a: Uint16Array, b: Uint16Array) => a.length === b.length && bytes(a).equals(bytes(b));

describe("sharded loading of the bundled model", () => {
  const whole = load({});

  it.each([2, 4])("tp %i: every rank holds its slice of every tensor", (world) => {
    const hd = cfg.headDim;
    for (let rank = 0; rank < world; rank++) {
      const { tensors } = load({ tp: { rank, world } });
      const get = (n: string) => values(tensors.get(n)).v;
      const full = (n: string) => whole.tensors.get(n);
      const rows = (n: string, total: number) =>
        slice(full(n), 0, (rank * total) / world, ((rank + 1) * total) / world);
      const cols = (n: string, total: number) =>
        slice(full(n), 1, (rank * total) / world, ((rank + 1) * total) / world);
      expect(same(get("embed"), rows("embed", cfg.vocabSize))).toBe(true);
      expect(same(get("layers.3.q"), rows("layers.3.q", cfg.numHeads * hd))).toBe(true);
      expect(same(get("layers.3.gate"), rows("layers.3.gate", cfg.intermediateSize))).toBe(true);
      expect(same(get("layers.3.up"), rows("layers.3.up", cfg.intermediateSize))).toBe(true);
      expect(same(get("layers.3.o"), cols("layers.3.o", cfg.numHeads * hd))).toBe(true);
      expect(same(get("layers.3.down"), cols("layers.3.down", cfg.intermediateSize))).toBe(true);
      // 2 KV heads: split at tp 2; at tp 4 ranks 0,1 share head 0 and ranks 2,3 share head 1.
      const kvHead = Math.floor((rank * cfg.numKvHeads) / world);
      const kv = slice(full("layers.3.k"), 0, kvHead * hd, (kvHead + 1) * hd);
      expect(same(get("layers.3.k"), kv)).toBe(true);
      expect(values(tensors.get("layers.3.v")).rows).toBe(hd);
      expect(tensors.get("final_norm")).toEqual(full("final_norm"));
      expect(tensors.get("layers.3.attn_norm")).toEqual(full("layers.3.attn_norm"));
    }
  });

  it("each rank reads only its share of the checkpoint (norms are the only bytes every rank reads)", () => {
    const total = whole.summary.bytesRead;
    expect(total).toBe(7344384 * 2);
    const norms = (cfg.numLayers * 2 + 1) * cfg.hiddenSize * 2;
    for (const world of [2, 4]) {
      for (let rank = 0; rank < world; rank++) {
        const { summary } = load({ tp: { rank, world } });
        // tp 4 replicates the 2 KV heads: each rank reads one of them whole (k and v of every layer).
        const kvExtra =
          world > cfg.numKvHeads
            ? cfg.numLayers * 2 * cfg.headDim * cfg.hiddenSize * 2 * (1 - cfg.numKvHeads / world)
            : 0;
        expect(summary.bytesRead).toBe((total - norms) / world + norms + kvExtra);
      }
    }
  });

  it("quantizes each shard: int4 shards at tp 2 are the rows/columns of the whole int4 tensor", () => {
    const q = load({ quantization: "int4", groupSize: 64 });
    const { tensors } = load({ quantization: "int4", groupSize: 64, tp: { rank: 1, world: 2 } });
    const whole = q.tensors.get("layers.2.down");
    const part = tensors.get("layers.2.down");
    if (whole?.kind !== "int4" || part?.kind !== "int4") throw new Error("expected int4");
    expect([part.rows, part.cols]).toEqual([cfg.hiddenSize, cfg.intermediateSize / 2]);
    const groups = whole.cols / 64;
    for (let r = 0; r < whole.rows; r++) {
      const s = whole.scales.subarray(r * groups + groups / 2, (r + 1) * groups);
      expect(part.scales.subarray(r * (groups / 2), (r + 1) * (groups / 2))).toEqual(s);
      const qb = whole.qweight.subarray((r * whole.cols + whole.cols / 2) / 2, ((r + 1) * whole.cols) / 2);
      expect(part.qweight.subarray((r * part.cols) / 2, ((r + 1) * part.cols) / 2)).toEqual(qb);
    }
  });
});

describe("tp checks", () => {
  it("int4 group 128 straddles at tp 4 (o_proj: 64 columns per rank) and the error names 64", () => {
    expect(() => checkShardGroups(cfg, 4, 128)).toThrow(ConfigError);
    expect(() => checkShardGroups(cfg, 4, 128)).toThrow(
      /o_proj has 256 input columns, 64 per rank .* use --group-size 64/,
    );
    expect(() => checkShardGroups(cfg, 4, 64)).not.toThrow();
    expect(() => checkShardGroups(cfg, 2, 128)).not.toThrow();
    expect(() => load({ quantization: "int4", groupSize: 128, tp: { rank: 0, world: 4 } })).toThrow(/straddle/);
  });

  it("refuses a tp that does not divide the heads or the vocabulary", () => {
    expect(() => checkTpShape(cfg, 3)).toThrow(/4 attention heads do not split over 3 ranks/);
    expect(() => checkTpShape(cfg, 8)).toThrow(/attention heads/);
    expect(() => checkTpShape(cfg, 4)).not.toThrow();
  });
});
