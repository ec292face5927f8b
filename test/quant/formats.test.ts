// GPTQ and AWQ checkpoint layouts: tensor sets built by hand from the public format descriptions (bit arithmetic
// written out here, independent of the packers) must dequantize to the expected values; pack/unpack round trips;
// bad files fail naming the tensor and what was expected.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { ModelLoadError } from "../../services/common/errors.js";
import {
  fromFloat32,
  openCheckpoint,
  type WriteTensor,
  writeSafetensors,
} from "../../services/common/model/safetensors.js";
import { type QuantConfig, readQuantConfig, readQuantLinear } from "../../services/worker/quant/checkpoint.js";
import { packAwq, unpackAwq } from "../../services/worker/quant/formats/awq-format.js";
import { packGptq, unpackGptq } from "../../services/worker/quant/formats/gptq-format.js";
import { dense } from "../../services/worker/quant/hessian.js";
import { dequantQLinear, type QLinear, toInt4Tensor } from "../../services/worker/quant/qlinear.js";

const OUT = 16; // output features
const IN = 32; // input features
const G = 8; // group size
const NG = IN / G;

// Codes, zero points and scales of the hand-built layer (scales exact in float16).
const code = (o: number, i: number): number => (3 * i + 5 * o + ((i * o) % 7)) % 16;
const zero = (o: number, g: number): number => ((o + 2 * g) % 15) + 1; // 1..15, so GPTQ v1 can store zero - 1
const scale = (o: number, g: number): number => (1 + ((o + g) % 4)) / 64;

function i32(values: number[], shape: number[]): WriteTensor {
  const a = Int32Array.from(values.map((v) => v | 0));
  return { dtype: "I32", shape, data: new Uint8Array(a.buffer) };
}
const f16 = (values: number[], shape: number[]): WriteTensor => ({
  dtype: "F16",
  shape,
  data: fromFloat32(values, "F16"),
});

function dirWith(tensors: Record<string, WriteTensor>): string {
  const dir = mkdtempSync(join(tmpdir(), "tpserve-qfmt-"));
  writeSafetensors(join(dir, "model.safetensors"), tensors);
  return dir;
}

const GPTQ: QuantConfig = {
  method: "gptq",
  bits: 4,
  groupSize: G,
  descAct: false,
  sym: false,
  v2: false,
  source: "test",
};
const AWQ: QuantConfig = { ...GPTQ, method: "awq" };

/** GPTQ per the AutoGPTQ description: qweight (in/8, out) packs 8 consecutive input rows, low nibble first. */
function handGptq(gIdx: number[]): Record<string, WriteTensor> {
  const qweight: number[] = [];
  for (let r = 0; r < IN / 8; r++) {
    for (let o = 0; o < OUT; o++) {
      let word = 0;
      for (let k = 0; k < 8; k++) word += code(o, 8 * r + k) * 2 ** (4 * k);
      qweight.push(word > 0x7fffffff ? word - 2 ** 32 : word);
    }
  }
  const qzeros: number[] = [];
  const scales: number[] = [];
  for (let g = 0; g < NG; g++) {
    for (let j = 0; j < OUT / 8; j++) {
      let word = 0;
      for (let k = 0; k < 8; k++) word += (zero(8 * j + k, g) - 1) * 2 ** (4 * k); // v1: zero - 1
      qzeros.push(word > 0x7fffffff ? word - 2 ** 32 : word);
    }
    for (let o = 0; o < OUT; o++) scales.push(scale(o, g));
  }
  return {
    "layer.qweight": i32(qweight, [IN / 8, OUT]),
    "layer.qzeros": i32(qzeros, [NG, OUT / 8]),
    "layer.scales": f16(scales, [NG, OUT]),
    "layer.g_idx": i32(gIdx, [IN]),
  };
}

/** AWQ gemm: qweight (in, out/8); nibble k of a word holds output 8j + [0,2,4,6,1,3,5,7][k]. */
function handAwq(): Record<string, WriteTensor> {
  const NIBBLE_OF_COLUMN = [0, 4, 1, 5, 2, 6, 3, 7]; // column c within a word sits in nibble NIBBLE_OF_COLUMN[c]
  const pack = (f: (c: number) => number): number => {
    let word = 0;
    for (let c = 0; c < 8; c++) word += f(c) * 2 ** (4 * NIBBLE_OF_COLUMN[c]!);
    return word > 0x7fffffff ? word - 2 ** 32 : word;
  };
  const qweight: number[] = [];
  for (let i = 0; i < IN; i++) for (let j = 0; j < OUT / 8; j++) qweight.push(pack((c) => code(8 * j + c, i)));
  const qzeros: number[] = [];
  const scales: number[] = [];
  for (let g = 0; g < NG; g++) {
    for (let j = 0; j < OUT / 8; j++) qzeros.push(pack((c) => zero(8 * j + c, g))); // the zero itself
    for (let o = 0; o < OUT; o++) scales.push(scale(o, g));
  }
  return {
    "layer.qweight": i32(qweight, [IN, OUT / 8]),
    "layer.qzeros": i32(qzeros, [NG, OUT / 8]),
    "layer.scales": f16(scales, [NG, OUT]),
  };
}

function expected(groupOf: (i: number) => number): Float32Array {
  const w = new Float32Array(OUT * IN);
  for (let o = 0; o < OUT; o++) {
    for (let i = 0; i < IN; i++) w[o * IN + i] = scale(o, groupOf(i)) * (code(o, i) - zero(o, groupOf(i)));
  }
  return w;
}

const read = (dir: string, qc: QuantConfig): QLinear => {
  const ck = openCheckpoint(dir);
  try {
    return readQuantLinear(ck, "layer", OUT, IN, qc);
  } finally {
    ck.close();
  }
};

describe("GPTQ layout", () => {
  it("a hand-built tensor set dequantizes to scale * (q - (qzero + 1))", () => {
    const gIdx = Array.from({ length: IN }, (_, i) => Math.floor(i / G));
    const t = read(dirWith(handGptq(gIdx)), GPTQ);
    expect(Array.from(dequantQLinear(t))).toEqual(Array.from(expected((i) => Math.floor(i / G))));
  });

  it("act-order: g_idx picks each input row's group; the engine's permuted int4 matmul agrees", () => {
    // A permutation of groups: every group still has G rows, scattered.
    const gIdx = Array.from({ length: IN }, (_, i) => (i * 3) % NG);
    const t = read(dirWith(handGptq(gIdx)), { ...GPTQ, descAct: true });
    const want = expected((i) => gIdx[i]!);
    expect(Array.from(dequantQLinear(t))).toEqual(Array.from(want));
    const int4 = toInt4Tensor(t, "layer");
    expect(int4.perm).toBeDefined();
    const { kernels } = loadNative();
    const x = Float32Array.from({ length: 3 * IN }, (_, i) => Math.sin(i * 0.7));
    const got = kernels.matmul(x, 3, int4);
    const ref = kernels.matmul(x, 3, dense(want, [OUT, IN]));
    for (let i = 0; i < ref.length; i++) expect(got[i]).toBeCloseTo(ref[i]!, 4);
  });

  it("act-order shard: a range of whole stored groups reads its columns from the whole input (permCols)", () => {
    const gIdx = Array.from({ length: IN }, (_, i) => (i * 3) % NG);
    const t = read(dirWith(handGptq(gIdx)), { ...GPTQ, descAct: true });
    const want = expected((i) => gIdx[i]!);
    const { kernels } = loadNative();
    const x = Float32Array.from({ length: 3 * IN }, (_, i) => Math.cos(i * 0.3));
    const sum = new Float32Array(3 * OUT);
    for (const [b, e] of [
      [0, IN / 2],
      [IN / 2, IN],
    ] as const) {
      const shard = toInt4Tensor(t, "layer", { begin: b, end: e });
      expect([shard.cols, shard.permCols, shard.perm?.length]).toEqual([e - b, IN, e - b]);
      // The shard is the layer with the columns of its groups only (the others zero).
      const mine = new Set(shard.perm);
      const masked = want.map((v, k) => (mine.has(k % IN) ? v : 0));
      const got = kernels.matmul(x, 3, shard);
      const ref = kernels.matmul(x, 3, dense(masked, [OUT, IN]));
      for (let i = 0; i < ref.length; i++) expect(got[i]).toBeCloseTo(ref[i]!, 4);
      for (let i = 0; i < ref.length; i++) sum[i]! += got[i]!;
    }
    const whole = kernels.matmul(x, 3, dense(want, [OUT, IN]));
    for (let i = 0; i < whole.length; i++) expect(sum[i]).toBeCloseTo(whole[i]!, 4);
    expect(() => toInt4Tensor(t, "layer", { begin: 1, end: IN / 2 })).toThrow(/not whole groups/);
  });

  it("gptq_v2 stores the zero itself", () => {
    const gIdx = Array.from({ length: IN }, (_, i) => Math.floor(i / G));
    const t = read(dirWith(handGptq(gIdx)), { ...GPTQ, v2: true });
    // Read as v2, every stored (zero - 1) is taken as the zero: one step lower.
    expect(t.zeros[0]).toBe(zero(0, 0) - 1);
  });

  it("pack then unpack gives back the layer", () => {
    const q = randomQLinear(1);
    const p = packGptq(q);
    const back = unpackGptq(
      {
        qweight: new Int32Array(p.qweight.data.buffer.slice(0)),
        qzeros: new Int32Array(p.qzeros.data.buffer.slice(0)),
        scales: transposeScales(q),
        gIdx: q.gIdx,
      },
      OUT,
      IN,
      G,
      false,
    );
    expect(back.q).toEqual(q.q);
    expect(back.zeros).toEqual(q.zeros);
    expect(back.scales).toEqual(q.scales);
  });
});

describe("AWQ layout", () => {
  it("a hand-built tensor set (interleaved nibble order) dequantizes to scale * (q - qzero)", () => {
    const t = read(dirWith(handAwq()), AWQ);
    expect(Array.from(dequantQLinear(t))).toEqual(Array.from(expected((i) => Math.floor(i / G))));
  });

  it("pack then unpack gives back the layer, and the packed words match the hand-built ones", () => {
    const q = read(dirWith(handAwq()), AWQ);
    const p = packAwq(q);
    expect(Array.from(new Int32Array(p.qweight.data.buffer.slice(0)))).toEqual(
      Array.from(new Int32Array(handAwq()["layer.qweight"]!.data.buffer.slice(0))),
    );
    const r = randomQLinear(2);
    const pr = packAwq(r);
    const back = unpackAwq(
      {
        qweight: new Int32Array(pr.qweight.data.buffer.slice(0)),
        qzeros: new Int32Array(pr.qzeros.data.buffer.slice(0)),
        scales: transposeScales(r),
      },
      OUT,
      IN,
      G,
    );
    expect(back.q).toEqual(r.q);
    expect(back.zeros).toEqual(r.zeros);
  });
});

describe("bad quantized checkpoints", () => {
  const gIdx = Array.from({ length: IN }, (_, i) => Math.floor(i / G));
  it("a missing tensor is named with its expected dtype and shape", () => {
    const t = handGptq(gIdx);
    delete t["layer.qzeros"];
    expect(() => read(dirWith(t), GPTQ)).toThrow(ModelLoadError);
    expect(() => read(dirWith(t), GPTQ)).toThrow(/missing tensor "layer.qzeros" \(expected I32 \[4, 2\]/);
  });
  it("a wrong shape names the tensor, its shape and the expected one", () => {
    const t = handGptq(gIdx);
    t["layer.scales"] = f16(new Array(2 * NG * OUT).fill(1), [2 * NG, OUT]);
    expect(() => read(dirWith(t), GPTQ)).toThrow(/tensor "layer.scales" has shape \[8, 16\], expected \[4, 16\]/);
  });
  it("a group size that does not divide the layer names the layer", () => {
    expect(() => read(dirWith(handGptq(gIdx)), { ...GPTQ, groupSize: 12 })).toThrow(
      /layer: group_size 12 .* does not divide the input size 32/,
    );
  });
  it("g_idx with uneven groups is refused at load", () => {
    const bad = gIdx.map((g, i) => (i === 0 ? 1 : g));
    expect(() => toInt4Tensor(read(dirWith(handGptq(bad)), GPTQ), "layer")).toThrow(
      /g_idx puts 7 input columns in group 0, expected group_size 8/,
    );
  });
  it("unknown bits and methods in the config are refused with what is supported", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpserve-qcfg-"));
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ quantization_config: { quant_method: "gptq", bits: 3, group_size: 128 } }),
    );
    expect(() => readQuantConfig(dir)).toThrow(/bits 3 is not supported, expected 4/);
    writeFileSync(join(dir, "config.json"), JSON.stringify({ quantization_config: { quant_method: "exl2", bits: 4 } }));
    expect(() => readQuantConfig(dir)).toThrow(/quant_method "exl2" is not supported/);
    writeFileSync(
      join(dir, "config.json"),
      JSON.stringify({ quantization_config: { quant_method: "awq", bits: 4, group_size: 64, version: "gemv" } }),
    );
    expect(() => readQuantConfig(dir)).toThrow(/AWQ version "gemv" is not supported/);
  });
});

function randomQLinear(seed: number): QLinear {
  let s = seed;
  const rnd = (): number => {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    return s / 2 ** 31;
  };
  const q = Uint8Array.from({ length: OUT * IN }, () => Math.floor(rnd() * 16));
  const zeros = Uint8Array.from({ length: OUT * NG }, () => 1 + Math.floor(rnd() * 15));
  const scales = Float32Array.from({ length: OUT * NG }, () => (1 + Math.floor(rnd() * 64)) / 1024);
  return {
    rows: OUT,
    cols: IN,
    groupSize: G,
    q,
    scales,
    zeros,
    gIdx: Int32Array.from({ length: IN }, (_, i) => Math.floor(i / G)),
  };
}

/** QLinear scales are (out, groups); the files store (groups, out). */
function transposeScales(q: QLinear): Float32Array {
  const out = new Float32Array(NG * OUT);
  for (let o = 0; o < OUT; o++) for (let g = 0; g < NG; g++) out[g * OUT + o] = q.scales[o * NG + g]!;
  return out;
}
