// Plain TypeScript references (float64 accumulation) for the native kernels and the Llama forward pass.
import type { Int4Tensor, ModelShape, WeightTensor } from "../../native/index.js";

/** Seeded PRNG (mulberry32) with a normal sampler. */
export function rng(seed: number): { uniform: () => number; normal: () => number } {
  let s = seed >>> 0;
  const uniform = (): number => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const normal = (): number => Math.sqrt(-2 * Math.log(1 - uniform())) * Math.cos(2 * Math.PI * uniform());
  return { uniform, normal };
}

export function randn(n: number, r: { normal: () => number }, scale = 1): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) a[i] = r.normal() * scale;
  return a;
}

export function f32Tensor(data: Float32Array, shape: number[]): WeightTensor {
  return { kind: "dense", dtype: "f32", shape, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
}

/** Max of |a-b| / max(1, |b|). */
export function maxRelErr(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const e = Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(b[i]!));
    if (!(e <= m)) m = Number.isNaN(e) ? Number.POSITIVE_INFINITY : e;
  }
  return m;
}

export function rmsNormRef(x: ArrayLike<number>, w: ArrayLike<number>, rows: number, eps: number): Float64Array {
  const cols = w.length;
  const y = new Float64Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let ss = 0;
    for (let c = 0; c < cols; c++) ss += x[r * cols + c]! ** 2;
    const inv = 1 / Math.sqrt(ss / cols + eps);
    for (let c = 0; c < cols; c++) y[r * cols + c] = x[r * cols + c]! * inv * w[c]!;
  }
  return y;
}

/** Dequantized (rows, cols) float64 matrix of an int4 tensor. */
export function dequantInt4(t: Int4Tensor): Float64Array {
  const w = new Float64Array(t.rows * t.cols);
  const ng = t.cols / t.groupSize;
  for (let r = 0; r < t.rows; r++)
    for (let c = 0; c < t.cols; c++) {
      const byte = t.qweight[(r * t.cols + c) >> 1]!;
      const q = c % 2 === 0 ? byte & 15 : byte >> 4;
      const g = r * ng + Math.floor(c / t.groupSize);
      const z = t.zeros ? t.zeros[g]! : 8;
      w[r * t.cols + c] = (q - z) * t.scales[g]!;
    }
  return w;
}

/** Random int4 tensor (asymmetric when `asym`). */
export function randomInt4(rows: number, cols: number, groupSize: number, seed: number, asym: boolean): Int4Tensor {
  const r = rng(seed);
  const qweight = new Uint8Array((rows * cols) / 2);
  for (let i = 0; i < qweight.length; i++) qweight[i] = Math.floor(r.uniform() * 256);
  const ng = (rows * cols) / groupSize;
  const scales = new Float32Array(ng);
  for (let i = 0; i < ng; i++) scales[i] = 0.01 + 0.05 * r.uniform();
  const t: Int4Tensor = { kind: "int4", rows, cols, groupSize, qweight, scales };
  if (asym) {
    t.zeros = new Uint8Array(ng);
    for (let i = 0; i < ng; i++) t.zeros[i] = Math.floor(r.uniform() * 16);
  }
  return t;
}

/** y (m, out) = x (m, in) W^T with W given as float64 (out, in). */
export function matmulRef(x: ArrayLike<number>, m: number, w: ArrayLike<number>, out: number, k: number): Float64Array {
  const y = new Float64Array(m * out);
  for (let t = 0; t < m; t++)
    for (let r = 0; r < out; r++) {
      let s = 0;
      for (let c = 0; c < k; c++) s += x[t * k + c]! * w[r * k + c]!;
      y[t * out + r] = s;
    }
  return y;
}

export function ropeRef(x: ArrayLike<number>, pos: ArrayLike<number>, heads: number, hd: number, theta: number) {
  const y = Float64Array.from(x);
  const half = hd / 2;
  for (let t = 0; t < pos.length; t++)
    for (let h = 0; h < heads; h++)
      for (let i = 0; i < half; i++) {
        const ang = pos[t]! * theta ** ((-2 * i) / hd);
        const o = (t * heads + h) * hd;
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        y[o + i] = a * Math.cos(ang) - b * Math.sin(ang);
        y[o + i + half] = b * Math.cos(ang) + a * Math.sin(ang);
      }
  return y;
}

export function siluMulRef(g: ArrayLike<number>, u: ArrayLike<number>): Float64Array {
  const y = new Float64Array(g.length);
  for (let i = 0; i < g.length; i++) y[i] = (g[i]! / (1 + Math.exp(-g[i]!))) * u[i]!;
  return y;
}

/** Causal GQA attention over dense K/V (ctx, kvHeads, hd); queries at positions ctx-qLen..ctx-1. */
export function attentionRef(
  q: ArrayLike<number>,
  k: ArrayLike<number>,
  v: ArrayLike<number>,
  qLen: number,
  ctx: number,
  heads: number,
  kvHeads: number,
  hd: number,
): Float64Array {
  const out = new Float64Array(qLen * heads * hd);
  const grp = heads / kvHeads;
  for (let t = 0; t < qLen; t++)
    for (let h = 0; h < heads; h++) {
      const kh = Math.floor(h / grp);
      const n = ctx - qLen + t + 1;
      const sc = new Float64Array(n);
      let mx = Number.NEGATIVE_INFINITY;
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let i = 0; i < hd; i++) s += q[(t * heads + h) * hd + i]! * k[(j * kvHeads + kh) * hd + i]!;
        sc[j] = s / Math.sqrt(hd);
        mx = Math.max(mx, sc[j]!);
      }
      let sum = 0;
      for (let j = 0; j < n; j++) {
        sc[j] = Math.exp(sc[j]! - mx);
        sum += sc[j]!;
      }
      for (let j = 0; j < n; j++)
        for (let i = 0; i < hd; i++) out[(t * heads + h) * hd + i]! += (sc[j]! / sum) * v[(j * kvHeads + kh) * hd + i]!;
    }
  return out;
}

export interface RefModel {
  shape: ModelShape;
  /** float64 copies of every tensor by engine name (int4 weights dequantized). */
  w: Map<string, Float64Array>;
  /** Tensors as handed to the engine. */
  tensors: Map<string, WeightTensor>;
}

/** The tiny Llama shape of the engine tests (GQA 4/2, tied embeddings). */
export const TINY_SHAPE: ModelShape = {
  vocabSize: 97,
  hiddenSize: 64,
  intermediateSize: 96,
  numLayers: 2,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 16,
  ropeTheta: 10000,
  rmsNormEps: 1e-5,
  tieWordEmbeddings: true,
};

/** Tiny random Llama; with `int4Group` the linear layers are int4 (asymmetric on odd layers). */
export function tinyModel(shape: ModelShape, seed: number, int4Group = 0): RefModel {
  const r = rng(seed);
  const w = new Map<string, Float64Array>();
  const tensors = new Map<string, WeightTensor>();
  const { hiddenSize: H, intermediateSize: I, numHeads, numKvHeads, headDim } = shape;
  const dense = (name: string, dims: number[], scale: number, offset = 0) => {
    const n = dims.reduce((a, b) => a * b, 1);
    const a = randn(n, r, scale);
    if (offset) for (let i = 0; i < n; i++) a[i] = a[i]! + offset;
    w.set(name, Float64Array.from(a));
    tensors.set(name, f32Tensor(a, dims));
  };
  dense("embed", [shape.vocabSize, H], 1);
  dense("final_norm", [H], 0.1, 1);
  if (!shape.tieWordEmbeddings) dense("lm_head", [shape.vocabSize, H], 0.1);
  for (let l = 0; l < shape.numLayers; l++) {
    const p = `layers.${l}.`;
    dense(p + "attn_norm", [H], 0.1, 1);
    dense(p + "mlp_norm", [H], 0.1, 1);
    const lin: [string, number, number][] = [
      ["q", numHeads * headDim, H],
      ["k", numKvHeads * headDim, H],
      ["v", numKvHeads * headDim, H],
      ["o", H, numHeads * headDim],
      ["gate", I, H],
      ["up", I, H],
      ["down", H, I],
    ];
    for (const [n, rows, cols] of lin) {
      if (int4Group) {
        const t = randomInt4(rows, cols, int4Group, seed * 1000 + l * 10 + rows + cols, l % 2 === 1);
        for (let i = 0; i < t.scales.length; i++) t.scales[i] = t.scales[i]! * (2 / Math.sqrt(cols));
        tensors.set(p + n, t);
        w.set(p + n, dequantInt4(t));
      } else {
        dense(p + n, [rows, cols], 1 / Math.sqrt(cols));
      }
    }
  }
  return { shape, w, tensors };
}

/** Full-sequence reference forward: logits (tokens.length, vocab) for one sequence starting at position 0. */
export function forwardRef(m: RefModel, tokens: number[]): Float64Array {
  const s = m.shape;
  const { hiddenSize: H, numHeads: nh, numKvHeads: nkv, headDim: hd, intermediateSize: I } = s;
  const T = tokens.length;
  const g = (n: string) => m.w.get(n)!;
  let x = new Float64Array(T * H);
  for (let t = 0; t < T; t++) x.set(g("embed").subarray(tokens[t]! * H, (tokens[t]! + 1) * H), t * H);
  const pos = tokens.map((_, i) => i);
  for (let l = 0; l < s.numLayers; l++) {
    const p = `layers.${l}.`;
    const h = rmsNormRef(x, g(p + "attn_norm"), T, s.rmsNormEps);
    const q = ropeRef(matmulRef(h, T, g(p + "q"), nh * hd, H), pos, nh, hd, s.ropeTheta);
    const k = ropeRef(matmulRef(h, T, g(p + "k"), nkv * hd, H), pos, nkv, hd, s.ropeTheta);
    const v = matmulRef(h, T, g(p + "v"), nkv * hd, H);
    const a = attentionRef(q, k, v, T, T, nh, nkv, hd);
    const o = matmulRef(a, T, g(p + "o"), H, nh * hd);
    x = x.map((xv, i) => xv + o[i]!);
    const h2 = rmsNormRef(x, g(p + "mlp_norm"), T, s.rmsNormEps);
    const act = siluMulRef(matmulRef(h2, T, g(p + "gate"), I, H), matmulRef(h2, T, g(p + "up"), I, H));
    const d = matmulRef(act, T, g(p + "down"), H, I);
    x = x.map((xv, i) => xv + d[i]!);
  }
  const hf = rmsNormRef(x, g("final_norm"), T, s.rmsNormEps);
  const head = s.tieWordEmbeddings ? g("embed") : g("lm_head");
  return matmulRef(hf, T, head, s.vocabSize, H);
}
