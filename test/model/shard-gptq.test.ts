// Tensor-parallel loading of GPTQ and AWQ checkpoints: each rank's int4 tensors dequantize to exactly the
// rows (column-parallel q, k, v, gate, up) or columns (row-parallel o, down) of the TP=1 load, each rank reads
// well under the whole file, and the checkpoints that cannot split are refused with a message saying what works.
import { rmSync } from "node:fs";
import { afterAll, describe, expect, it } from "vitest";
import type { WeightTensor } from "../../native/index.js";
import { ConfigError } from "../../services/common/errors.js";
import { loadModelConfig } from "../../services/common/model/config.js";
import { bundledModelDir } from "../../services/common/paths.js";
import { loadWeights, tensorSpecs } from "../../services/worker/load.js";
import { checkCheckpointShards } from "../../services/worker/shard.js";
import { asStored } from "../helpers/load-options.js";
import { writeQuantCheckpoint } from "../helpers/quant-checkpoint.js";
import { recorder } from "../helpers/recorder.js";

const cfg = loadModelConfig(bundledModelDir());
const dirs: string[] = [];
const write = (...a: Parameters<typeof writeQuantCheckpoint>) => {
  const d = writeQuantCheckpoint(...a);
  dirs.push(d);
  return d;
};
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

function load(dir: string, tp?: { rank: number; world: number }) {
  const { engine, tensors } = recorder();
  const opts = asStored(cfg, { dir, ...(tp ? { tp } : {}) });
  const summary = loadWeights(engine, opts);
  return { tensors, summary };
}

/** The engine's int4 tensor dequantized to (rows, cols) float32 in the original column order (perm undone). */
function dequant(t: WeightTensor | undefined): { rows: number; cols: number; w: Float32Array } {
  if (t?.kind !== "int4") throw new Error(`expected an int4 tensor, got ${t?.kind}`);
  const { rows, cols, groupSize: G } = t;
  const groups = cols / G;
  const w = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    for (let i = 0; i < cols; i++) {
      const byte = t.qweight[(r * cols + i) >> 1]!;
      const q = i & 1 ? byte >> 4 : byte & 15;
      const k = r * groups + Math.floor(i / G);
      w[r * cols + (t.perm ? t.perm[i]! : i)] = (q - (t.zeros ? t.zeros[k]! : 8)) * t.scales[k]!;
    }
  }
  return { rows, cols, w };
}

function part(full: { rows: number; cols: number; w: Float32Array }, dim: 0 | 1, b: number, e: number): Float32Array {
  if (dim === 0) return full.w.slice(b * full.cols, e * full.cols);
  const out = new Float32Array(full.rows * (e - b));
  for (let r = 0; r < full.rows; r++) out.set(full.w.subarray(r * full.cols + b, r * full.cols + e), r * (e - b));
  return out;
}

const same = (a: Float32Array, b: Float32Array) =>
  a.length === b.length &&
  Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** The rows or columns [b, e) of every linear that rank `rank` of `world` holds (as shard.ts splits them). */
function expectedSlice(name: string, rank: number, world: number): { dim: 0 | 1; b: number; e: number } {
  const hd = cfg.headDim;
  const part = name.slice(name.lastIndexOf(".") + 1);
  const block = (n: number, dim: 0 | 1) => ({ dim, b: (rank * n) / world, e: ((rank + 1) * n) / world });
  if (part === "q") return block(cfg.numHeads * hd, 0);
  if (part === "gate" || part === "up") return block(cfg.intermediateSize, 0);
  if (part === "o") return block(cfg.numHeads * hd, 1);
  if (part === "down") return block(cfg.intermediateSize, 1);
  const head = Math.floor((rank * cfg.numKvHeads) / world); // k, v; tp 4 replicates the 2 KV heads
  return world > cfg.numKvHeads ? { dim: 0, b: head * hd, e: (head + 1) * hd } : block(cfg.numKvHeads * hd, 0);
}

describe.each(["gptq", "awq"] as const)("%s checkpoint, group 64", (format) => {
  const dir = write({ format, groupSize: 64 });
  const whole = load(dir);
  const linears = tensorSpecs(cfg).filter((s) => s.linear);
  const full = new Map(linears.map((s) => [s.name, dequant(whole.tensors.get(s.name))]));

  it.each([2, 4])("tp %i: every rank's linears dequantize to its slice of the TP=1 load", (world) => {
    for (let rank = 0; rank < world; rank++) {
      const { tensors, summary } = load(dir, { rank, world });
      expect(summary.quantization).toBe(format);
      for (const s of linears) {
        const { dim, b, e } = expectedSlice(s.name, rank, world);
        const got = dequant(tensors.get(s.name));
        expect([got.rows, got.cols]).toEqual(dim === 0 ? [e - b, s.shape[1]] : [s.shape[0], e - b]);
        if (!same(got.w, part(full.get(s.name)!, dim, b, e)))
          throw new Error(`${s.name} rank ${rank}/${world} differs`);
      }
      // Unquantized tensors (embedding, norms) follow the bf16 rules: embedding rows split, norms whole.
      const embed = tensors.get("embed");
      expect(embed?.kind === "dense" && embed.shape).toEqual([cfg.vocabSize / world, cfg.hiddenSize]);
      expect(tensors.get("final_norm")).toEqual(whole.tensors.get("final_norm"));
    }
  });

  it("each rank reads about its share of the file, never the whole", () => {
    const total = whole.summary.bytesRead;
    for (const world of [2, 4]) {
      for (let rank = 0; rank < world; rank++) {
        const read = load(dir, { rank, world }).summary.bytesRead;
        // Norms and g_idx are read whole by every rank; at tp 4 each rank reads one of the 2 KV heads whole.
        expect(read).toBeLessThan(total * (world === 2 ? 0.55 : 0.35));
        expect(read).toBeGreaterThan(total / world);
      }
    }
  });
});

describe("GPTQ act-order", () => {
  it("column-parallel layers split with a permuted g_idx (each rank keeps the whole permutation)", () => {
    const q = "model.layers.1.self_attn.q_proj";
    const gate = "model.layers.1.mlp.gate_proj";
    const dir = write({ format: "gptq", groupSize: 64, actOrder: [q, gate] });
    const whole = load(dir);
    const wq = whole.tensors.get("layers.1.q");
    expect(wq?.kind === "int4" && wq.perm !== undefined).toBe(true);
    for (let rank = 0; rank < 2; rank++) {
      const { tensors } = load(dir, { rank, world: 2 });
      for (const name of ["layers.1.q", "layers.1.gate"]) {
        const { dim, b, e } = expectedSlice(name, rank, 2);
        expect(same(dequant(tensors.get(name)).w, part(dequant(whole.tensors.get(name)), dim, b, e))).toBe(true);
      }
    }
  });

  it.each([2, 4])(
    "tp %i: a row-parallel act-order shard is a range of whole groups of the stored order; the ranks add up to the layer",
    (world) => {
      const o = "model.layers.2.self_attn.o_proj";
      const down = "model.layers.2.mlp.down_proj";
      const dir = write({ format: "gptq", groupSize: 64, actOrder: [o, down] });
      const whole = load(dir);
      for (const name of ["layers.2.o", "layers.2.down"]) {
        const full = whole.tensors.get(name);
        if (full?.kind !== "int4" || !full.perm) throw new Error(`${name}: expected an act-order int4 tensor at tp 1`);
        const K = full.cols;
        const sum = new Float32Array(full.rows * K);
        const seen = new Uint8Array(K);
        for (let rank = 0; rank < world; rank++) {
          const t = load(dir, { rank, world }).tensors.get(name);
          if (t?.kind !== "int4" || !t.perm) throw new Error(`${name} rank ${rank}: expected an act-order shard`);
          const b = (rank * K) / world;
          const e = ((rank + 1) * K) / world;
          // The stored columns [b, e) of the whole layer: the same codes, scales and perm entries.
          expect([t.rows, t.cols, t.permCols]).toEqual([full.rows, e - b, K]);
          expect(Array.from(t.perm)).toEqual(Array.from(full.perm.subarray(b, e)));
          for (const c of t.perm) seen[c]!++;
          const d = dequant({ ...t, perm: undefined });
          for (let r = 0; r < t.rows; r++)
            for (let i = 0; i < t.cols; i++) sum[r * K + t.perm[i]!]! += d.w[r * t.cols + i]!;
        }
        // Every input column on exactly one rank, and the shards' weights are exactly the layer's.
        expect(seen.every((v) => v === 1)).toBe(true);
        if (!same(sum, dequant(full).w)) throw new Error(`${name} at tp ${world}: the shards differ from the layer`);
      }
    },
  );
});

describe("checkpoints that cannot split", () => {
  it("group 128 straddles at tp 4 (o_proj: 64 input columns per rank): refused, naming the tp that works", () => {
    const dir = write({ format: "awq", groupSize: 128 });
    expect(() => load(dir, { rank: 0, world: 4 })).toThrow(ConfigError);
    expect(() => load(dir, { rank: 0, world: 4 })).toThrow(
      /group size 128 .* cannot be split over --tp 4: o_proj has 256 input columns, 64 per rank .*straddle.*use --tp 1 or 2 with this checkpoint/,
    );
    expect(load(dir, { rank: 1, world: 2 }).summary.quantization).toBe("awq");
  });

  it("group -1 (one group per row) only loads at tp 1", () => {
    expect(() => checkCheckpointShards(cfg, 2, -1, "x")).toThrow(/group size -1 .*--tp 2: o_proj .* use --tp 1 with/);
    expect(() => checkCheckpointShards(cfg, 1, -1, "x")).not.toThrow();
  });

  it("outputs per rank must fill whole int32 words of 8 (packed qzeros)", () => {
    const odd = { ...cfg, intermediateSize: 776 }; // 388 per rank at tp 2, 194 at tp 4
    expect(() => checkCheckpointShards(odd, 2, 8, "x")).toThrow(
      /gate_proj\/up_proj has 776 outputs, 388 per rank at --tp 2.*whole words; use --tp 1 with/,
    );
  });
});
