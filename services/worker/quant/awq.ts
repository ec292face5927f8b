// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"): protect the input channels that carry large
// activations by scaling them up in the weight (W diag(s)) and down in the op that produces the input (x / s),
// with s = mean|x|^a (optionally divided by the weight's own channel magnitude^(1-a), "duo scaling"), a searched
// on a grid; then a per-(row, group) clipping search; then group quantization. Both searches minimize the output
// error trace(D H D^T) of the calibration inputs (H from hessian.ts) instead of re-running the module.
import type { Kernels } from "../../../native/index.js";
import { type GridOptions, groupParams, quantCode } from "./grid.js";
import { dense, quadError } from "./hessian.js";
import { dequantQLinear, type QLinear, trivialGIdx } from "./qlinear.js";

export interface AwqOptions extends GridOptions {
  groupSize: number;
  /** Grid points for the scale exponent (20 in AutoAWQ). */
  grid?: number;
  /** Clipping candidates: max range shrinks from 1 down to 1 - maxShrink (AutoAWQ: 0.5, 20 steps). */
  clipGrid?: number;
  maxShrink?: number;
}

export interface Linear {
  name: string;
  w: Float32Array;
  rows: number;
  cols: number;
}

/** Group quantization of w (rows, cols) with optional per-(row, group) clip factors. */
export function rtnQLinear(
  w: Float32Array,
  rows: number,
  cols: number,
  G: number,
  opts: GridOptions,
  clip?: Float32Array,
): QLinear {
  const groups = cols / G;
  const q = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = new Uint8Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const base = r * cols + g * G;
      const p = groupParams(w, base, G, 1, opts, clip ? clip[r * groups + g]! : 1);
      scales[r * groups + g] = p.scale;
      zeros[r * groups + g] = p.zero;
      for (let i = 0; i < G; i++) q[base + i] = quantCode(w[base + i]!, p.scale, p.zero);
    }
  }
  return { rows, cols, groupSize: G, q, scales, zeros, gIdx: trivialGIdx(cols, G) };
}

function scaleColumns(w: Float32Array, rows: number, cols: number, s: Float32Array): Float32Array {
  const out = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[r * cols + c] = w[r * cols + c]! * s[c]!;
  return out;
}

/** Weight error in the original space when W diag(s) is quantized: W - Q(W diag s) diag(1/s). */
function errorOf(l: Linear, s: Float32Array, opts: AwqOptions): Float32Array {
  const deq = dequantQLinear(rtnQLinear(scaleColumns(l.w, l.rows, l.cols, s), l.rows, l.cols, opts.groupSize, opts));
  for (let r = 0; r < l.rows; r++) {
    for (let c = 0; c < l.cols; c++) deq[r * l.cols + c] = l.w[r * l.cols + c]! - deq[r * l.cols + c]! / s[c]!;
  }
  return deq;
}

export interface ScaleSearch {
  scales: Float32Array;
  ratio: number;
  duo: boolean;
  /** Output error at the chosen scales and with s = 1 (plain group quantization). */
  error: number;
  baseError: number;
}

/** Searches the channel scales of linears that share one input (H, mean|x| of that input). */
export function searchScales(
  kernels: Kernels,
  linears: Linear[],
  h: Float32Array,
  xMean: Float32Array,
  opts: AwqOptions,
): ScaleSearch {
  const k = xMean.length;
  const n = opts.grid ?? 20;
  // Weight magnitude per input channel, each weight relative to its group's absmax (AutoAWQ's w_mean).
  const wMean = new Float32Array(k);
  let rowsTotal = 0;
  for (const l of linears) {
    for (let r = 0; r < l.rows; r++) {
      for (let g0 = 0; g0 < l.cols; g0 += opts.groupSize) {
        let amax = 0;
        for (let c = g0; c < g0 + opts.groupSize; c++) amax = Math.max(amax, Math.abs(l.w[r * l.cols + c]!));
        for (let c = g0; c < g0 + opts.groupSize; c++) wMean[c]! += Math.abs(l.w[r * l.cols + c]!) / (amax || 1);
      }
    }
    rowsTotal += l.rows;
  }
  for (let c = 0; c < k; c++) wMean[c] = wMean[c]! / rowsTotal;
  const lossAt = (s: Float32Array): number => {
    let e = 0;
    for (const l of linears) e += quadError(kernels, errorOf(l, s, opts), l.rows, l.cols, h);
    return e;
  };
  const ones = new Float32Array(k).fill(1);
  const baseError = lossAt(ones);
  let best: ScaleSearch = { scales: ones, ratio: 0, duo: false, error: baseError, baseError };
  for (const duo of [false, true]) {
    for (let i = 1; i < n; i++) {
      const a = i / n;
      const s = new Float32Array(k);
      let mx = 0;
      let mn = Number.POSITIVE_INFINITY;
      for (let c = 0; c < k; c++) {
        const v = duo
          ? Math.max(xMean[c]!, 1e-4) ** a / Math.max(wMean[c]!, 1e-4) ** (1 - a)
          : Math.max(xMean[c]!, 1e-4) ** a;
        s[c] = v;
        mx = Math.max(mx, v);
        mn = Math.min(mn, v);
      }
      const norm = Math.sqrt(mx * mn);
      for (let c = 0; c < k; c++) s[c] = Math.fround(s[c]! / norm);
      const e = lossAt(s);
      if (e < best.error) best = { scales: s, ratio: a, duo, error: e, baseError };
    }
  }
  return best;
}

/**
 * Per-(row, group) clip factor minimizing the output error trace(D H D^T) of w (already scaled, h its input
 * Hessian in the same space): one pass of coordinate descent over the groups, each (row, group) trying range
 * factors 1, 1 - 1/n, ..., 1 - maxShrink with the other groups' current errors held fixed (the cross-group terms
 * that AutoAWQ's auto_clip leaves out are kept here). Never worse than no clipping on the calibration set.
 */
export function searchClip(
  kernels: Kernels,
  w: Float32Array,
  rows: number,
  cols: number,
  h: Float32Array,
  opts: AwqOptions,
): Float32Array {
  const G = opts.groupSize;
  const groups = cols / G;
  const n = opts.clipGrid ?? 20;
  const steps = Math.round(n * (opts.maxShrink ?? 0.5));
  const clip = new Float32Array(rows * groups).fill(1);
  // D: current weight error (no clipping); DH = D H (rows, cols).
  const d = new Float32Array(rows * cols);
  const fillGroup = (out: Float32Array, ld: number, off: number, g: number, c: number, r: number): void => {
    const base = r * cols + g * G;
    const p = groupParams(w, base, G, 1, opts, c);
    for (let i = 0; i < G; i++) {
      const x = w[base + i]!;
      out[r * ld + off + i] = x - Math.fround((quantCode(x, p.scale, p.zero) - p.zero) * p.scale);
    }
  };
  for (let r = 0; r < rows; r++) for (let g = 0; g < groups; g++) fillGroup(d, cols, g * G, g, 1, r);
  const dh = kernels.matmul(d, rows, dense(h, [cols, cols]));
  const cand = new Float32Array(rows * G);
  const old = new Float32Array(rows * G);
  const best = new Float64Array(rows);
  const bestD = new Float32Array(rows * G);
  for (let g = 0; g < groups; g++) {
    const hg = new Float32Array(G * G);
    for (let i = 0; i < G; i++) for (let j = 0; j < G; j++) hg[i * G + j] = h[(g * G + i) * cols + g * G + j]!;
    const ht = dense(hg, [G, G]);
    for (let r = 0; r < rows; r++) for (let i = 0; i < G; i++) old[r * G + i] = d[r * cols + g * G + i]!;
    // cross[r] = (D H)[r, group g] minus the group's own part D_g H_gg.
    const own = kernels.matmul(old, rows, ht);
    const cross = new Float32Array(rows * G);
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < G; i++) cross[r * G + i] = dh[r * cols + g * G + i]! - own[r * G + i]!;
    best.fill(Number.POSITIVE_INFINITY);
    for (let t = 0; t < steps; t++) {
      const c = 1 - t / n;
      for (let r = 0; r < rows; r++) fillGroup(cand, G, 0, g, c, r);
      const ch = kernels.matmul(cand, rows, ht);
      for (let r = 0; r < rows; r++) {
        let e = 0;
        for (let i = 0; i < G; i++) e += cand[r * G + i]! * (ch[r * G + i]! + 2 * cross[r * G + i]!);
        if (e < best[r]!) {
          best[r] = e;
          clip[r * groups + g] = c;
          for (let i = 0; i < G; i++) bestD[r * G + i] = cand[r * G + i]!;
        }
      }
    }
    // Update D and DH for the chosen factors: DH += (D_g new - D_g old) H[g rows, :].
    const delta = new Float32Array(rows * G);
    for (let r = 0; r < rows; r++) {
      for (let i = 0; i < G; i++) {
        delta[r * G + i] = bestD[r * G + i]! - old[r * G + i]!;
        d[r * cols + g * G + i] = bestD[r * G + i]!;
      }
    }
    const hcol = new Float32Array(cols * G); // (cols, G): row j holds H[j, group g] (= H[group g, j])
    for (let j = 0; j < cols; j++) for (let i = 0; i < G; i++) hcol[j * G + i] = h[j * cols + g * G + i]!;
    const upd = kernels.matmul(delta, rows, dense(hcol, [cols, G]));
    for (let k = 0; k < rows * cols; k++) dh[k]! += upd[k]!;
  }
  return clip;
}
