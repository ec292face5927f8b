// GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative Pre-trained Transformers"):
// quantize the columns of W one at a time and spread each column's rounding error over the columns not yet
// quantized, weighted by the inverse Hessian of the layer's inputs (H = sum of x x^T over calibration tokens).
// Lazy batch updates every `blockSize` columns; damping adds dampPercent * mean(diag H) to the diagonal; act-order
// visits columns by decreasing diag(H). Groups are contiguous in visiting order (g_idx is then a permutation of
// groups, as AutoGPTQ's desc_act) unless staticGroups, where groups keep the original column order and their
// parameters come from the unquantized weights (g_idx stays trivial).
import { type GridOptions, groupParams, quantCode } from "./grid.js";
import { NotPositiveDefiniteError, upperCholeskyOfInverse } from "./linalg.js";
import type { QLinear } from "./qlinear.js";

export interface GptqOptions extends GridOptions {
  groupSize: number;
  actOrder: boolean;
  staticGroups: boolean;
  /** Fraction of the mean Hessian diagonal added to the diagonal (0.01 in the paper and AutoGPTQ). */
  dampPercent: number;
  blockSize?: number;
}

export interface GptqResult {
  q: QLinear;
  /** The damping fraction that made H positive definite (raised from dampPercent when needed). */
  damp: number;
}

/** w (rows, cols) row-major float32; h (cols, cols) float64, symmetric, not modified. */
export function gptqQuantize(
  w: Float32Array,
  rows: number,
  cols: number,
  h: Float64Array,
  opts: GptqOptions,
): GptqResult {
  const G = opts.groupSize;
  const groups = cols / G;
  const B = opts.blockSize ?? 128;
  // Visiting order.
  const diag = new Float64Array(cols);
  for (let i = 0; i < cols; i++) diag[i] = h[i * cols + i]!;
  const perm = Int32Array.from({ length: cols }, (_, i) => i);
  if (opts.actOrder) perm.sort((a, b) => diag[b]! - diag[a]! || a - b);
  // Columns of W in visiting order, each contiguous (wp[j*rows + r] = W[r, perm[j]]); dead inputs (diag 0) are 0.
  const wp = new Float64Array(cols * rows);
  for (let j = 0; j < cols; j++) {
    const c = perm[j]!;
    if (diag[c] === 0) continue;
    for (let r = 0; r < rows; r++) wp[j * rows + r] = w[r * cols + c]!;
  }
  let mean = 0;
  for (let i = 0; i < cols; i++) mean += diag[i]! === 0 ? 1 : diag[i]!;
  mean /= cols;
  let damp = opts.dampPercent;
  let u: Float64Array | undefined;
  for (let attempt = 0; attempt < 6 && !u; attempt++, damp *= 10) {
    const hp = new Float64Array(cols * cols);
    for (let i = 0; i < cols; i++) {
      const pi = perm[i]!;
      for (let j = 0; j < cols; j++) hp[i * cols + j] = h[pi * cols + perm[j]!]!;
      if (diag[pi] === 0) hp[i * cols + i] = 1;
      hp[i * cols + i]! += damp * mean;
    }
    try {
      u = upperCholeskyOfInverse(hp, cols);
    } catch (e) {
      if (!(e instanceof NotPositiveDefiniteError)) throw e;
    }
  }
  if (!u) throw new NotPositiveDefiniteError("GPTQ: the Hessian stays singular even with 1000x damping");
  damp /= 10;

  const q = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = new Uint8Array(rows * groups);
  const gIdx = new Int32Array(cols);
  const setGroup = (g: number, src: ArrayLike<number>, start: (r: number) => number, stride: number): void => {
    for (let r = 0; r < rows; r++) {
      const p = groupParams(src, start(r), G, stride, opts);
      scales[r * groups + g] = p.scale;
      zeros[r * groups + g] = p.zero;
    }
  };
  if (opts.staticGroups || !opts.actOrder) {
    for (let c = 0; c < cols; c++) gIdx[c] = Math.floor(c / G);
  }
  if (opts.staticGroups) {
    for (let g = 0; g < groups; g++) setGroup(g, w, (r) => r * cols + g * G, 1);
  }

  const err = new Float64Array(B * rows);
  for (let i1 = 0; i1 < cols; i1 += B) {
    const i2 = Math.min(i1 + B, cols);
    for (let i = i1; i < i2; i++) {
      let g: number;
      if (opts.staticGroups) {
        g = gIdx[perm[i]!]!;
      } else {
        g = Math.floor(i / G);
        if (i % G === 0) setGroup(g, wp, (r) => i * rows + r, rows);
        gIdx[perm[i]!] = g;
      }
      const d = u[i * cols + i]!;
      const base = i * rows;
      const eb = (i - i1) * rows;
      const c = perm[i]!;
      for (let r = 0; r < rows; r++) {
        const s = scales[r * groups + g]!;
        const z = zeros[r * groups + g]!;
        const x = wp[base + r]!;
        const code = quantCode(x, s, z);
        q[r * cols + c] = code;
        err[eb + r] = (x - Math.fround((code - z) * s)) / d;
      }
      for (let j = i + 1; j < i2; j++) {
        const hij = u[i * cols + j]!;
        if (hij === 0) continue;
        const jb = j * rows;
        for (let r = 0; r < rows; r++) wp[jb + r]! -= err[eb + r]! * hij;
      }
    }
    for (let j = i2; j < cols; j++) {
      const jb = j * rows;
      for (let b = 0; b < i2 - i1; b++) {
        const hij = u[(i1 + b) * cols + j]!;
        if (hij === 0) continue;
        const eb = b * rows;
        for (let r = 0; r < rows; r++) wp[jb + r]! -= err[eb + r]! * hij;
      }
    }
  }
  return { q: { rows, cols, groupSize: G, q, scales, zeros, gIdx }, damp };
}
