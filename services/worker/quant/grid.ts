// Group quantization grid shared by RTN, GPTQ and AWQ: the scale and zero point of one group and the code of one
// value, with the project's RTN convention (services/worker/quant/rtn.ts): symmetric scale = absmax * fl(1/7) with
// zero 8, asymmetric scale = (max - min) * fl(1/15) with zero = rne(-min / scale), codes clamp(rne(w/s) + z, 0, 15).
// Checkpoint formats store scales as float16, so `half` rounds each scale to float16 before it is used.
import { fromFloat32, toFloat32 } from "../../common/model/safetensors.js";
import { roundHalfEven } from "./rtn.js";

const f = Math.fround;
const INV7 = f(1 / 7);
const INV15 = f(1 / 15);

export interface GridOptions {
  symmetric: boolean;
  /** Round scales to float16 (what GPTQ and AWQ files store). */
  half: boolean;
  /**
   * Lowest zero point (asymmetric). GPTQ v1 files store zero-1 in 4 bits, so a zero of 0 cannot be written there
   * (it would read back as 16): quantizers writing that format use 1.
   */
  zeroMin?: number;
}

const one = new Float32Array(1);
export function toHalf(x: number): number {
  one[0] = x;
  return toFloat32(fromFloat32(one, "F16"), "F16")[0]!;
}

/**
 * Scale and zero of the values v[start + i*stride], i < n, optionally clipped to a fraction of their range: the
 * max is multiplied by `clip`, the min by `clipLo` (the same unless given).
 */
export function groupParams(
  v: ArrayLike<number>,
  start: number,
  n: number,
  stride: number,
  opts: GridOptions,
  clip = 1,
  clipLo = clip,
): { scale: number; zero: number } {
  let mn = 0;
  let mx = 0;
  for (let i = 0; i < n; i++) {
    const x = v[start + i * stride]!;
    if (x < mn) mn = x;
    if (x > mx) mx = x;
  }
  mn *= clipLo;
  mx *= clip;
  let scale: number;
  let zero: number;
  if (opts.symmetric) {
    scale = f(Math.max(mx, -mn) * INV7);
    zero = 8;
  } else {
    // min <= 0 <= max always (the range includes 0), so the zero point stays within 0..15.
    scale = f(f(mx - mn) * INV15);
    zero = 0;
  }
  if (opts.half) scale = toHalf(scale);
  if (!(scale > 0)) scale = 1;
  if (!opts.symmetric) zero = Math.min(15, Math.max(opts.zeroMin ?? 0, roundHalfEven(f(-mn / scale))));
  return { scale, zero };
}

/** Code of w in 0..15. */
export function quantCode(w: number, scale: number, zero: number): number {
  const q = roundHalfEven(f(w / scale)) + zero;
  return Math.max(0, Math.min(q, 15));
}
