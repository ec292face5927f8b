// NF4 as in bitsandbytes (Dettmers et al. 2023, QLoRA): blocks of 64 weights scaled by their absmax onto the 16
// NormalFloat levels (quantiles of a normal distribution, exact 0), and double quantization of the absmax values:
// their mean is subtracted, then blocks of 256 of them are quantized to 8 bits with bitsandbytes' signed dynamic
// map (scaled by the block's absmax). No calibration. Layout: native/index.ts Nf4Tensor.
import type { Nf4Tensor } from "../../../native/index.js";
import { ConfigError } from "../../common/errors.js";

/** bitsandbytes' NF4 levels (functional.py, create_normal_map(offset=0.9677083)), float32. */
export const NF4_LEVELS = Float32Array.from([
  -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635, -0.18477343022823334,
  -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
  0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]);

/**
 * bitsandbytes' create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8): for i = 0..6, 2^i means of
 * linspace(0.1, 1, 2^i + 1) scaled by 10^(i-6), both signs, plus 0 and 1; sorted. 256 values in [-1, 1].
 */
export function dynamicMap(): Float32Array {
  const data: number[] = [];
  for (let i = 0; i < 7; i++) {
    const items = 2 ** i + 1;
    const bounds = Array.from({ length: items }, (_, j) => Math.fround(0.1 + (0.9 * j) / (items - 1)));
    for (let j = 0; j + 1 < items; j++) {
      const mean = (bounds[j]! + bounds[j + 1]!) / 2;
      data.push(10 ** (i - 6) * mean, -(10 ** (i - 6)) * mean);
    }
  }
  data.push(0, 1);
  return Float32Array.from(data.sort((a, b) => a - b));
}

/** Index of the nearest value in a sorted table. */
function nearest(table: Float32Array, v: number): number {
  let lo = 0;
  let hi = table.length - 1;
  while (hi - lo > 1) {
    const mid = (lo + hi) >> 1;
    if (table[mid]! <= v) lo = mid;
    else hi = mid;
  }
  return v - table[lo]! <= table[hi]! - v ? lo : hi;
}

export interface Nf4Options {
  blockSize: number;
  doubleQuant: boolean;
  name?: string;
}

export function quantizeNf4(w: Float32Array, rows: number, cols: number, opts: Nf4Options): Nf4Tensor {
  const B = opts.blockSize;
  if (cols % B !== 0 || B % 2 !== 0) {
    throw new ConfigError(
      `nf4 block size ${B} does not divide the input dimension ${cols} of ${opts.name ?? "a layer"}`,
    );
  }
  const n = rows * cols;
  const blocks = n / B;
  const absmax = new Float32Array(blocks);
  const qweight = new Uint8Array(n / 2);
  for (let b = 0; b < blocks; b++) {
    let m = 0;
    for (let i = b * B; i < (b + 1) * B; i++) m = Math.max(m, Math.abs(w[i]!));
    absmax[b] = m;
    const inv = m > 0 ? 1 / m : 0;
    for (let i = b * B; i < (b + 1) * B; i += 2) {
      const hi = nearest(NF4_LEVELS, w[i]! * inv);
      const lo = nearest(NF4_LEVELS, w[i + 1]! * inv);
      qweight[i >> 1] = (hi << 4) | lo;
    }
  }
  const t: Nf4Tensor = { kind: "nf4", rows, cols, blockSize: B, qweight, levels: NF4_LEVELS };
  if (!opts.doubleQuant) {
    t.absmax = absmax;
    return t;
  }
  let mean = 0;
  for (const a of absmax) mean += a;
  mean = Math.fround(mean / blocks);
  const map = dynamicMap();
  const codes = new Uint8Array(blocks);
  const scales = new Float32Array(Math.ceil(blocks / 256));
  for (let s = 0; s < scales.length; s++) {
    let m = 0;
    const end = Math.min(blocks, (s + 1) * 256);
    for (let b = s * 256; b < end; b++) m = Math.max(m, Math.abs(absmax[b]! - mean));
    scales[s] = m;
    for (let b = s * 256; b < end; b++) codes[b] = nearest(map, m > 0 ? (absmax[b]! - mean) / m : 0);
  }
  t.absmaxCodes = codes;
  t.absmaxScales = scales;
  t.absmaxMap = map;
  t.absmaxOffset = mean;
  return t;
}

/** Reference dequantization (float32), (rows, cols). */
export function dequantizeNf4(t: Nf4Tensor): Float32Array {
  const n = t.rows * t.cols;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const b = Math.floor(i / t.blockSize);
    const amax = t.absmax
      ? t.absmax[b]!
      : Math.fround(Math.fround(t.absmaxMap![t.absmaxCodes![b]!]! * t.absmaxScales![b >> 8]!) + t.absmaxOffset!);
    const byte = t.qweight[i >> 1]!;
    out[i] = Math.fround(t.levels[i & 1 ? byte & 15 : byte >> 4]! * amax);
  }
  return out;
}

/** Bytes the engine holds for an NF4 weight. */
export function nf4Bytes(t: Nf4Tensor): number {
  return (
    t.qweight.byteLength +
    (t.absmax ? t.absmax.byteLength : t.absmaxCodes!.byteLength + t.absmaxScales!.byteLength + 1024)
  );
}
