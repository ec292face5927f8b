import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import type { Engine, EngineInfo, ForwardBatch, WeightTensor } from "../../native/index.js";
import { ConfigError, ModelLoadError } from "../../services/common/errors.js";
import { loadModelConfig, type ModelConfig, modelConfigFromJson } from "../../services/common/model/config.js";
import { fromFloat32, openCheckpoint, toFloat32, writeSafetensors } from "../../services/common/model/safetensors.js";
import { loadWeights, tensorSpecs } from "../../services/worker/load.js";
import { dequantizeInt4, quantizeRtn } from "../../services/worker/quant/rtn.js";
import { asStored } from "../helpers/load-options.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");

class FakeEngine implements Engine {
  tensors = new Map<string, WeightTensor>();
  log: string[] = [];
  setTensor(name: string, tensor: WeightTensor): void {
    this.tensors.set(name, tensor);
    this.log.push(`set ${name}`);
  }
  finalize(): void {
    this.log.push("finalize");
  }
  forward(_batch: ForwardBatch): Promise<Float32Array> {
    return Promise.reject(new Error("fake"));
  }
  forwardArgmax(_batch: ForwardBatch): Promise<Int32Array> {
    return Promise.reject(new Error("fake"));
  }
  forwardSample(_batch: ForwardBatch): Promise<Int32Array> {
    return Promise.reject(new Error("fake"));
  }
  forwardSync(_batch: ForwardBatch): Float32Array {
    throw new Error("fake");
  }
  info(): EngineInfo {
    return { threads: 1, simd: "scalar", weightBytes: 0, kvBytes: 0, device: "cpu", numPages: 2 };
  }
  limitPages(_n: number): void {}
  close(): void {}
}

const shapeOf = (t: WeightTensor): number[] => (t.kind === "dense" ? t.shape : [t.rows, t.cols]);

const small = (extra: Record<string, unknown> = {}): ModelConfig =>
  modelConfigFromJson({
    vocab_size: 50,
    hidden_size: 64,
    intermediate_size: 128,
    num_hidden_layers: 2,
    num_attention_heads: 4,
    num_key_value_heads: 2,
    ...extra,
  });

/** Writes an F32 checkpoint for `cfg` with every tensor `tensorSpecs` names (minus `skip`, with `override`s). */
function writeCheckpoint(cfg: ModelConfig, skip?: string, override?: Record<string, number[]>): string {
  const dir = mkdtempSync(join(tmpdir(), "tpserve-load-"));
  const tensors: Parameters<typeof writeSafetensors>[1] = {};
  for (const s of tensorSpecs(cfg)) {
    if (s.hf === skip) continue;
    const shape = override?.[s.hf] ?? s.shape;
    const n = shape.reduce((a, b) => a * b, 1);
    tensors[s.hf] = {
      dtype: "F32",
      shape,
      data: fromFloat32(
        Array.from({ length: n }, (_, i) => Math.sin(i)),
        "F32",
      ),
    };
  }
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

describe("loadWeights", () => {
  const cfg = loadModelConfig(MODEL);

  it("loads the bundled model dense, tied (no lm_head), then finalizes", () => {
    const engine = new FakeEngine();
    const progress: number[] = [];
    const sum = loadWeights(engine, asStored(cfg, { dir: MODEL, onProgress: (d, t) => progress.push(d / t) }));
    expect(sum.tensors).toBe(2 + 8 * 9);
    expect(sum.bytes).toBe(7344384 * 2);
    expect(engine.log.at(-1)).toBe("finalize");
    expect(engine.log.filter((l) => l === "finalize")).toHaveLength(1);
    expect(engine.tensors.has("lm_head")).toBe(false);
    expect(progress.at(-1)).toBe(1);
    const expected: Record<string, number[]> = {
      embed: [4096, 256],
      final_norm: [256],
      "layers.7.attn_norm": [256],
      "layers.7.mlp_norm": [256],
      "layers.0.q": [256, 256],
      "layers.0.k": [128, 256],
      "layers.0.v": [128, 256],
      "layers.0.o": [256, 256],
      "layers.3.gate": [768, 256],
      "layers.3.up": [768, 256],
      "layers.3.down": [256, 768],
    };
    for (const [name, shape] of Object.entries(expected)) {
      const t = engine.tensors.get(name);
      expect(t?.kind, name).toBe("dense");
      expect(t && shapeOf(t), name).toEqual(shape);
      expect(t?.kind === "dense" && t.dtype).toBe("bf16");
    }
  });

  it("quantizes exactly the decoder linears with RTN", () => {
    for (const symmetric of [true, false]) {
      const engine = new FakeEngine();
      const sum = loadWeights(engine, asStored(cfg, { dir: MODEL, quantization: "int4", groupSize: 64, symmetric }));
      expect(sum.quantization).toBe("int4");
      for (const [name, t] of engine.tensors) {
        const linear = /^layers\.\d+\.(q|k|v|o|gate|up|down)$/.test(name);
        expect(t.kind, name).toBe(linear ? "int4" : "dense");
        if (t.kind === "int4") {
          expect(t.groupSize).toBe(64);
          expect(t.zeros === undefined).toBe(symmetric);
        }
      }
      const ck = openCheckpoint(MODEL);
      const raw = ck.read("model.layers.2.mlp.down_proj.weight");
      ck.close();
      const w = toFloat32(raw.data, raw.dtype);
      const ref = quantizeRtn(w, 256, 768, { groupSize: 64, symmetric });
      const got = engine.tensors.get("layers.2.down");
      expect(got).toEqual(ref);
      const d = dequantizeInt4(ref);
      let maxErr = 0;
      for (let i = 0; i < w.length; i++) maxErr = Math.max(maxErr, Math.abs(w[i]! - d[i]!));
      expect(maxErr).toBeLessThan(0.1);
    }
  });

  it("loads lm_head when untied and refuses a missing tensor, naming it and its shape", () => {
    const c = small();
    const engine = new FakeEngine();
    loadWeights(engine, asStored(c, { dir: writeCheckpoint(c), quantization: "int4", groupSize: 32 }));
    expect(shapeOf(engine.tensors.get("lm_head")!)).toEqual([50, 64]);
    expect(engine.tensors.size).toBe(3 + 2 * 9);

    const dir = writeCheckpoint(c, "model.layers.1.self_attn.k_proj.weight");
    const e2 = new FakeEngine();
    expect(() => loadWeights(e2, asStored(c, { dir }))).toThrow(ModelLoadError);
    expect(() => loadWeights(e2, asStored(c, { dir }))).toThrow(
      /missing tensor "model.layers.1.self_attn.k_proj.weight" \(expected shape \[32, 64\]\)/,
    );
    expect(e2.log).not.toContain("finalize");
    expect(() => loadWeights(new FakeEngine(), asStored(c, { dir: writeCheckpoint(c, "lm_head.weight") }))).toThrow(
      /lm_head.weight/,
    );
  });

  it("refuses a wrong shape, naming both", () => {
    const c = small();
    const dir = writeCheckpoint(c, undefined, { "model.layers.0.mlp.up_proj.weight": [128, 32] });
    expect(() => loadWeights(new FakeEngine(), asStored(c, { dir }))).toThrow(
      'tensor "model.layers.0.mlp.up_proj.weight" has shape [128, 32] but config.json implies [128, 64]',
    );
  });

  it("checks the group size before loading anything", () => {
    const c = small({ intermediate_size: 96 });
    const engine = new FakeEngine();
    expect(() =>
      loadWeights(engine, asStored(c, { loadFormat: "dummy", quantization: "int4", groupSize: 64 })),
    ).toThrow(ConfigError);
    expect(() =>
      loadWeights(engine, asStored(c, { loadFormat: "dummy", quantization: "int4", groupSize: 64 })),
    ).toThrow(/layer layers.0.down; group sizes that would work: 32/);
    expect(engine.log).toEqual([]);
  });

  it("makes seeded dummy weights (dense and int4)", () => {
    const c = small();
    const a = new FakeEngine();
    const b = new FakeEngine();
    loadWeights(a, asStored(c, { loadFormat: "dummy", seed: 7 }));
    loadWeights(b, asStored(c, { loadFormat: "dummy", seed: 7 }));
    expect(a.tensors).toEqual(b.tensors);
    expect(a.log.at(-1)).toBe("finalize");
    const norm = a.tensors.get("layers.1.mlp_norm");
    expect(norm?.kind === "dense" && norm.dtype).toBe("bf16");
    expect(norm?.kind === "dense" && Array.from(toFloat32(norm.data, "BF16"))).toEqual(new Array(64).fill(1));
    const embed = a.tensors.get("embed");
    if (embed?.kind !== "dense") throw new Error("embed not dense");
    const v = toFloat32(embed.data, "BF16");
    const std = Math.sqrt(v.reduce((s, x) => s + x * x, 0) / v.length);
    expect(std).toBeGreaterThan(0.015);
    expect(std).toBeLessThan(0.025);

    for (const symmetric of [true, false]) {
      const q = new FakeEngine();
      const sum = loadWeights(q, asStored(c, { loadFormat: "dummy", quantization: "int4", groupSize: 32, symmetric }));
      const t = q.tensors.get("layers.0.gate");
      if (t?.kind !== "int4") throw new Error("gate not int4");
      expect([t.rows, t.cols, t.groupSize, t.qweight.length, t.scales.length]).toEqual([128, 64, 32, 4096, 256]);
      expect(t.zeros === undefined).toBe(symmetric);
      expect(sum.tensors).toBe(3 + 2 * 9);
    }
  });

  it("gives dummy int4 decoder linears an act-order permutation when asked (benchmarks)", () => {
    const c = small();
    const q = new FakeEngine();
    loadWeights(q, asStored(c, { loadFormat: "dummy", quantization: "int4", groupSize: 32, dummyActOrder: true }));
    const perms = new Map<number, Int32Array>();
    for (const [name, t] of q.tensors) {
      if (t.kind !== "int4") continue;
      if (!name.startsWith("layers.")) {
        expect(t.perm, name).toBeUndefined();
        continue;
      }
      if (!t.perm) throw new Error(`${name} has no permutation`);
      expect(
        Array.from(t.perm).sort((a, b) => a - b),
        name,
      ).toEqual(Array.from({ length: t.cols }, (_, i) => i));
      expect(Array.from(t.perm), name).not.toEqual(Array.from({ length: t.cols }, (_, i) => i));
      // One order per input size: q/k/v (and gate/up), merged into one matmul on the GPU, must share it.
      const seen = perms.get(t.cols);
      if (seen) expect(Array.from(t.perm), name).toEqual(Array.from(seen));
      else perms.set(t.cols, t.perm);
    }
    expect(perms.size).toBe(2);
    const plain = new FakeEngine();
    loadWeights(plain, asStored(c, { loadFormat: "dummy", quantization: "int4", groupSize: 32 }));
    const t = plain.tensors.get("layers.0.q");
    expect(t?.kind === "int4" && t.perm).toBeFalsy();
  });

  it("at tp 2, dummy act-order o and down shards are ranges of the whole layer's permutation (permCols)", () => {
    const c = small();
    const perms = new Map<string, number[]>();
    for (const rank of [0, 1]) {
      const q = new FakeEngine();
      const opts = {
        loadFormat: "dummy",
        quantization: "int4",
        groupSize: 32,
        dummyActOrder: true,
        tp: { rank, world: 2 },
      } as const;
      loadWeights(q, asStored(c, opts));
      for (const [name, whole] of [
        ["layers.1.o", 64],
        ["layers.1.down", 128],
      ] as const) {
        const t = q.tensors.get(name);
        if (t?.kind !== "int4" || !t.perm) throw new Error(`${name}: expected an act-order int4 shard`);
        expect([t.cols, t.permCols]).toEqual([whole / 2, whole]);
        perms.set(name, [...(perms.get(name) ?? []), ...t.perm]);
      }
      const gate = q.tensors.get("layers.1.gate");
      expect(gate?.kind === "int4" && gate.permCols).toBeFalsy(); // column-parallel: the whole input on every rank
    }
    for (const [name, p] of perms) {
      expect(
        [...p].sort((a, b) => a - b),
        name,
      ).toEqual(Array.from({ length: p.length }, (_, i) => i));
    }
  });

  it("needs a directory for safetensors", () => {
    expect(() => loadWeights(new FakeEngine(), asStored(small(), {}))).toThrow(ConfigError);
  });
});
