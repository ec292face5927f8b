// GPTQ and AWQ on synthetic layers: the linear algebra, the reduction to round-to-nearest when inputs are
// uncorrelated, and lower output error than round-to-nearest on correlated inputs.
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { quadLoss, rtnQLinear, searchScales } from "../../services/worker/quant/awq.js";
import { searchClip } from "../../services/worker/quant/awq-clip.js";
import { gptqQuantize } from "../../services/worker/quant/gptq.js";
import { quadError } from "../../services/worker/quant/hessian.js";
import { upperCholeskyOfInverse } from "../../services/worker/quant/linalg.js";
import { dequantQLinear, type QLinear, toInt4Tensor } from "../../services/worker/quant/qlinear.js";

const { kernels } = loadNative();

function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32 - 0.5;
  };
}

/** n tokens of k correlated channels (a low-rank mix plus noise), some channels much larger than others. */
function inputs(n: number, k: number, seed: number): Float32Array {
  const r = rng(seed);
  const rank = 4;
  const mix = Float32Array.from({ length: rank * k }, r);
  const x = new Float32Array(n * k);
  for (let t = 0; t < n; t++) {
    const z = Array.from({ length: rank }, r);
    for (let c = 0; c < k; c++) {
      let v = 0.1 * r();
      for (let j = 0; j < rank; j++) v += z[j]! * mix[j * k + c]!;
      x[t * k + c] = v * (c % 16 === 3 ? 8 : 1);
    }
  }
  return x;
}

function gram(x: Float32Array, n: number, k: number): Float64Array {
  const h = new Float64Array(k * k);
  for (let t = 0; t < n; t++)
    for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j]! += x[t * k + i]! * x[t * k + j]!;
  return h;
}

const toF32 = (h: Float64Array): Float32Array => Float32Array.from(h);

function relError(w: Float32Array, q: QLinear, h: Float64Array): number {
  const d = dequantQLinear(q);
  for (let i = 0; i < d.length; i++) d[i] = w[i]! - d[i]!;
  return quadError(kernels, d, q.rows, q.cols, toF32(h)) / quadError(kernels, w, q.rows, q.cols, toF32(h));
}

const ROWS = 32;
const K = 64;
const G = 16;
const grid = { symmetric: true, half: true };
const W = Float32Array.from({ length: ROWS * K }, rng(7));

describe("linear algebra", () => {
  it("upperCholeskyOfInverse: U is upper triangular and H U^T U = I", () => {
    const n = 12;
    const x = inputs(40, n, 3);
    const h = gram(x, 40, n);
    for (let i = 0; i < n; i++) h[i * n + i]! += 0.01;
    const u = upperCholeskyOfInverse(h, n);
    for (let i = 0; i < n; i++) for (let j = 0; j < i; j++) expect(u[i * n + j]).toBe(0);
    for (let i = 0; i < n; i++) {
      for (let j = 0; j < n; j++) {
        let s = 0;
        for (let a = 0; a < n; a++) {
          let inv = 0; // (U^T U)[a][j]
          for (let b = 0; b < n; b++) inv += u[b * n + a]! * u[b * n + j]!;
          s += h[i * n + a]! * inv;
        }
        expect(s).toBeCloseTo(i === j ? 1 : 0, 6);
      }
    }
  });
});

describe("GPTQ", () => {
  it("with uncorrelated inputs (H = identity) it is exactly round-to-nearest", () => {
    const h = new Float64Array(K * K);
    for (let i = 0; i < K; i++) h[i * K + i] = 1;
    const { q } = gptqQuantize(W, ROWS, K, h, {
      ...grid,
      groupSize: G,
      actOrder: false,
      staticGroups: false,
      dampPercent: 0.01,
    });
    const r = rtnQLinear(W, ROWS, K, G, grid);
    expect(q.q).toEqual(r.q);
    expect(q.scales).toEqual(r.scales);
  });

  it("on correlated inputs it lowers the output error well below round-to-nearest, with and without act-order", () => {
    const h = gram(inputs(512, K, 11), 512, K);
    const rtn = relError(W, rtnQLinear(W, ROWS, K, G, grid), h);
    for (const actOrder of [false, true]) {
      const { q } = gptqQuantize(W, ROWS, K, h, {
        ...grid,
        groupSize: G,
        actOrder,
        staticGroups: false,
        dampPercent: 0.01,
      });
      expect(relError(W, q, h)).toBeLessThan(0.7 * rtn);
    }
  });

  it("act-order: g_idx assigns G columns to every group; the engine's permuted matmul matches the dequantized weight", () => {
    const h = gram(inputs(256, K, 5), 256, K);
    const { q } = gptqQuantize(W, ROWS, K, h, {
      ...grid,
      groupSize: G,
      actOrder: true,
      staticGroups: false,
      dampPercent: 0.01,
    });
    const counts = new Array(K / G).fill(0);
    for (const g of q.gIdx) counts[g]++;
    expect(counts).toEqual(new Array(K / G).fill(G));
    expect(Array.from(q.gIdx)).not.toEqual(Array.from({ length: K }, (_, i) => Math.floor(i / G)));
    const t = toInt4Tensor(q, "test");
    expect(t.perm).toBeDefined();
    const x = inputs(4, K, 9);
    const got = kernels.matmul(x, 4, t);
    const deq = dequantQLinear(q);
    const want = kernels.matmul(x, 4, {
      kind: "dense",
      dtype: "f32",
      shape: [ROWS, K],
      data: new Uint8Array(deq.buffer),
    });
    for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 4);
  });

  it("static groups keep g_idx trivial (no permutation at run time)", () => {
    const h = gram(inputs(256, K, 5), 256, K);
    const { q } = gptqQuantize(W, ROWS, K, h, {
      ...grid,
      groupSize: G,
      actOrder: true,
      staticGroups: true,
      dampPercent: 0.01,
    });
    expect(Array.from(q.gIdx)).toEqual(Array.from({ length: K }, (_, i) => Math.floor(i / G)));
    expect(toInt4Tensor(q, "test").perm).toBeUndefined();
  });
});

describe("AWQ", () => {
  const x = inputs(512, K, 13);
  const h = gram(x, 512, K);
  const xMean = new Float32Array(K);
  for (let t = 0; t < 512; t++) for (let c = 0; c < K; c++) xMean[c]! += Math.abs(x[t * K + c]!) / 512;
  const opts = { symmetric: false, half: true, groupSize: G };

  it("the scale search is never worse than plain group quantization and helps with outlier channels", () => {
    const lin = [{ name: "w", w: W, rows: ROWS, cols: K }];
    const r = searchScales(lin, xMean, opts, quadLoss(kernels, lin, toF32(h)));
    expect(r.error).toBeLessThan(r.baseError);
    expect(r.ratio).toBeGreaterThan(0);
    // Scales are normalized around 1 and largest on the loud channels.
    expect(r.scales[3]!).toBeGreaterThan(r.scales[4]!);
  });

  it("the clip search picks factors in (0.5, 1] that do not raise the output error", () => {
    const clip = searchClip(kernels, W, ROWS, K, toF32(h), opts);
    expect(clip.hi.some((c) => c < 1)).toBe(true);
    expect(Array.from(clip.lo)).toEqual(Array.from(clip.hi));
    for (const c of clip.hi) {
      expect(c).toBeGreaterThan(0.5);
      expect(c).toBeLessThanOrEqual(1);
    }
    expect(relError(W, rtnQLinear(W, ROWS, K, G, opts, clip), h)).toBeLessThanOrEqual(
      relError(W, rtnQLinear(W, ROWS, K, G, opts), h) * (1 + 1e-4),
    );
  });

  it("more passes and separate min/max factors only lower the output error further", () => {
    const err = (o: object): number =>
      relError(W, rtnQLinear(W, ROWS, K, G, opts, searchClip(kernels, W, ROWS, K, toF32(h), { ...opts, ...o })), h);
    const one = err({});
    const two = err({ clipPasses: 2 });
    const split = searchClip(kernels, W, ROWS, K, toF32(h), { ...opts, clipSplit: true });
    expect(two).toBeLessThanOrEqual(one * (1 + 1e-5));
    // The split sweeps move some min factors away from the max factors, and that pays off.
    expect(Array.from(split.lo).some((c, i) => c !== split.hi[i])).toBe(true);
    expect(relError(W, rtnQLinear(W, ROWS, K, G, opts, split), h)).toBeLessThan(one);
    // Symmetric grids have one range: the split is ignored.
    const sym = searchClip(kernels, W, ROWS, K, toF32(h), { ...opts, symmetric: true, clipSplit: true });
    expect(Array.from(sym.lo)).toEqual(Array.from(sym.hi));
  });
});
