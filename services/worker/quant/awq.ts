// AWQ (Lin et al. 2023, "AWQ: Activation-aware Weight Quantization"): protect the input channels that carry large
// activations by scaling them up in the weight (W diag(s)) and down in the op that produces the input (x / s),
// with s = mean|x|^a (optionally divided by the weight's own channel magnitude^(1-a), "duo scaling"), a searched
// on a grid; then a per-(row, group) clipping search (awq-clip.ts); then group quantization. The scale search
// minimizes a BlockLoss: the output error trace(D H D^T) of the calibration inputs (H from hessian.ts, quadLoss)
// or the output of the attention / MLP block the linears feed (awq-block.ts, awq-layer.ts).
import type { Kernels } from "../../../native/index.js";
import { type GridOptions, groupParams, quantCode } from "./grid.js";
import { quadError } from "./hessian.js";
import { dequantQLinear, type QLinear, trivialGIdx } from "./qlinear.js";

export interface AwqOptions extends GridOptions {
  groupSize: number;
  /** Grid points for the scale exponent (20 in AutoAWQ). */
  grid?: number;
  /** Clipping candidates: max range shrinks from 1 down to 1 - maxShrink (AutoAWQ: 0.5, 20 steps). */
  clipGrid?: number;
  maxShrink?: number;
  /** Coordinate-descent passes over the groups in the clip search (1). */
  clipPasses?: number;
  /**
   * Asymmetric grids: after the shared factor, search the min's factor and then the max's factor separately
   * (each on the same grid, the other held). Ignored for symmetric grids.
   */
  clipSplit?: boolean;
}

export interface Linear {
  name: string;
  w: Float32Array;
  rows: number;
  cols: number;
}

/**
 * Clip factors per (row, group), index row * groups + group: the group's max is multiplied by `hi`, its min by
 * `lo` (equal unless the clip search ran its asymmetric phases).
 */
export interface ClipFactors {
  lo: Float32Array;
  hi: Float32Array;
}

/** Group quantization of w (rows, cols) with optional per-(row, group) clip factors. */
export function rtnQLinear(
  w: Float32Array,
  rows: number,
  cols: number,
  G: number,
  opts: GridOptions,
  clip?: ClipFactors,
): QLinear {
  const groups = cols / G;
  const q = new Uint8Array(rows * cols);
  const scales = new Float32Array(rows * groups);
  const zeros = new Uint8Array(rows * groups);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const base = r * cols + g * G;
      const k = r * groups + g;
      const p = groupParams(w, base, G, 1, opts, clip ? clip.hi[k]! : 1, clip ? clip.lo[k]! : 1);
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

/** The weight as the quantized model sees it in the original space: Q(W diag s) diag(1/s). */
export function scaledDequant(l: Linear, s: Float32Array, opts: AwqOptions): Float32Array {
  const deq = dequantQLinear(rtnQLinear(scaleColumns(l.w, l.rows, l.cols, s), l.rows, l.cols, opts.groupSize, opts));
  for (let r = 0; r < l.rows; r++) for (let c = 0; c < l.cols; c++) deq[r * l.cols + c] = deq[r * l.cols + c]! / s[c]!;
  return deq;
}

/**
 * Loss of one scale candidate, given each linear's dequantized weight in the original space (same order as the
 * linears): the output error of the block the linears feed.
 */
export type BlockLoss = (deq: Float32Array[]) => number;

/** The per-linear quadratic loss: sum over the linears of trace(D H D^T), D = W - deq (H of their shared input). */
export function quadLoss(kernels: Kernels, linears: Linear[], h: Float32Array): BlockLoss {
  return (deq) => {
    let e = 0;
    linears.forEach((l, i) => {
      const d = new Float32Array(l.w.length);
      const q = deq[i]!;
      for (let j = 0; j < d.length; j++) d[j] = l.w[j]! - q[j]!;
      e += quadError(kernels, d, l.rows, l.cols, h);
    });
    return e;
  };
}

export interface ScaleSearch {
  scales: Float32Array;
  ratio: number;
  duo: boolean;
  /** Output error at the chosen scales and with s = 1 (plain group quantization). */
  error: number;
  baseError: number;
}

/**
 * Searches the channel scales of linears that share one input (mean|x| of that input), minimizing `loss` (the
 * output error of the block they feed, or quadLoss).
 */
export function searchScales(linears: Linear[], xMean: Float32Array, opts: AwqOptions, loss: BlockLoss): ScaleSearch {
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
  const lossAt = (s: Float32Array): number => loss(linears.map((l) => scaledDequant(l, s, opts)));
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
