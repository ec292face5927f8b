// Round-to-nearest group-wise int4 quantization, bit-exact with the PyTorch float32 reference in
// models/tinyllama-brown/golden.public.json -> rtn_definition (and recipe/train.py rtn()).
// Output layout: native Int4Tensor (see native/index.ts).
import type { Int4Tensor } from "../../../native/index.js";
import { ConfigError } from "../../common/errors.js";

export const GROUP_SIZES = [32, 64, 128] as const;
export type GroupSize = (typeof GROUP_SIZES)[number];

const f = Math.fround;
// PyTorch on CUDA divides a tensor by a Python scalar as a multiplication by the float32 reciprocal (one ulp
// away from a true division for some values). The golden references were made that way, so `absmax / 7` and
// `(max - min) / 15` are computed as `x * fl(1/7)` and `x * fl(1/15)`; divisions by a tensor stay true divisions.
// Checked against an independent NumPy forward: with true division the int4 greedy ids of golden prompt 2 differ
// at step 2 (margin 0.028); with the reciprocal they match.
const INV7 = f(1 / 7);
const INV15 = f(1 / 15);

/** Round half to even (torch.round). */
export function roundHalfEven(x: number): number {
  const fl = Math.floor(x);
  const d = x - fl;
  if (d < 0.5) return fl;
  if (d > 0.5) return fl + 1;
  return fl % 2 === 0 ? fl : fl + 1;
}

/** Throws a ConfigError naming the layer and the group sizes that would work when groupSize does not divide cols. */
export function checkGroupSize(layer: string, cols: number, groupSize: number): void {
  if (cols % groupSize === 0 && groupSize % 2 === 0) return;
  const ok = GROUP_SIZES.filter((g) => cols % g === 0);
  const hint = ok.length
    ? `group sizes that would work: ${ok.join(", ")}`
    : `none of ${GROUP_SIZES.join(", ")} divides it; load without int4 quantization`;
  throw new ConfigError(
    `int4 group size ${groupSize} does not divide the input dimension ${cols} of layer ${layer}; ${hint}`,
  );
}

export interface RtnOptions {
  groupSize: number;
  symmetric: boolean;
  /** Layer name for error messages. */
  name?: string;
}

/**
 * Quantizes a row-major (rows, cols) float32 weight. Symmetric: scale = absmax*fl(1/7), q = clamp(rne(w/scale), -8, 7),
 * stored as q+8 without zeros. Asymmetric: scale = (max-min)*fl(1/15), zero = rne(-min/scale),
 * q = clamp(rne(w/scale)+zero, 0, 15). A scale of 0 becomes 1. Every op is float32 (Math.fround), as in PyTorch.
 * Asymmetric groups entirely above or below zero would need a zero point outside 0..15, which the native format
 * cannot store; for those (only) the range is widened to include 0.
 */
export function quantizeRtn(w: Float32Array, rows: number, cols: number, opts: RtnOptions): Int4Tensor {
  const G = opts.groupSize;
  checkGroupSize(opts.name ?? "(unnamed)", cols, G);
  if (w.length !== rows * cols) throw new Error(`quantizeRtn: ${w.length} values for shape [${rows}, ${cols}]`);
  const groups = cols / G;
  const qweight = new Uint8Array((rows * cols) / 2);
  const scales = new Float32Array(rows * groups);
  const zeros = opts.symmetric ? undefined : new Uint8Array(rows * groups);
  const q = new Uint8Array(G);
  for (let r = 0; r < rows; r++) {
    for (let g = 0; g < groups; g++) {
      const base = r * cols + g * G;
      let scale: number;
      if (opts.symmetric) {
        let amax = 0;
        for (let i = 0; i < G; i++) {
          const a = Math.abs(w[base + i]!);
          if (a > amax) amax = a;
        }
        scale = f(amax * INV7);
        if (scale === 0) scale = 1;
        for (let i = 0; i < G; i++) {
          const v = roundHalfEven(f(w[base + i]! / scale));
          q[i] = Math.min(7, Math.max(-8, v)) + 8;
        }
      } else {
        let mn = Number.POSITIVE_INFINITY;
        let mx = Number.NEGATIVE_INFINITY;
        for (let i = 0; i < G; i++) {
          const v = w[base + i]!;
          if (v < mn) mn = v;
          if (v > mx) mx = v;
        }
        scale = f(f(mx - mn) * INV15);
        if (scale === 0) scale = 1;
        let zero = roundHalfEven(f(-mn / scale));
        if (zero < 0 || zero > 15) {
          mn = Math.min(mn, 0);
          mx = Math.max(mx, 0);
          scale = f(f(mx - mn) * INV15);
          if (scale === 0) scale = 1;
          zero = Math.min(15, Math.max(0, roundHalfEven(f(-mn / scale))));
        }
        for (let i = 0; i < G; i++) {
          const v = roundHalfEven(f(w[base + i]! / scale)) + zero;
          q[i] = Math.min(15, Math.max(0, v));
        }
        zeros![r * groups + g] = zero;
      }
      scales[r * groups + g] = scale;
      const qb = base / 2;
      for (let i = 0; i < G; i += 2) qweight[qb + i / 2] = q[i]! | (q[i + 1]! << 4);
    }
  }
  const t: Int4Tensor = { kind: "int4", rows, cols, groupSize: G, qweight, scales };
  if (zeros) t.zeros = zeros;
  return t;
}

/** w = (q - zero) * scale in float32, zero 8 when `zeros` is absent. */
export function dequantizeInt4(t: Int4Tensor): Float32Array {
  const out = new Float32Array(t.rows * t.cols);
  const groups = t.cols / t.groupSize;
  for (let r = 0; r < t.rows; r++) {
    for (let c = 0; c < t.cols; c++) {
      const idx = r * t.cols + c;
      const byte = t.qweight[idx >> 1]!;
      const q = c & 1 ? byte >> 4 : byte & 15;
      const gi = r * groups + Math.floor(c / t.groupSize);
      const zero = t.zeros ? t.zeros[gi]! : 8;
      out[idx] = f((q - zero) * t.scales[gi]!);
    }
  }
  return out;
}
