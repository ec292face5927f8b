// Second-moment statistics of a linear layer's inputs over the calibration tokens: H = sum x x^T (GPTQ's Hessian,
// up to a factor 2) and sum |x| per channel (AWQ's activation scale). Products run in the native matmul kernel.
import type { DenseTensor, Kernels } from "../../../native/index.js";

export class InputStats {
  /** (k, k) float64, sum over tokens of x x^T. */
  readonly h: Float64Array;
  /** (k) sum over tokens of |x|. */
  readonly absSum: Float64Array;
  tokens = 0;
  constructor(readonly k: number) {
    this.h = new Float64Array(k * k);
    this.absSum = new Float64Array(k);
  }

  /** Adds T tokens whose inputs are columns [offset, offset+k) of rows of `width` floats in `x`. */
  add(kernels: Kernels, x: Float32Array, T: number, width: number, offset: number): void {
    const k = this.k;
    const xt = new Float32Array(k * T); // (k, T): one row per input channel
    for (let t = 0; t < T; t++) {
      const row = t * width + offset;
      for (let c = 0; c < k; c++) {
        const v = x[row + c]!;
        xt[c * T + t] = v;
        this.absSum[c]! += Math.abs(v);
      }
    }
    const g = kernels.matmul(xt, k, dense(xt, [k, T]));
    for (let i = 0; i < k * k; i++) this.h[i]! += g[i]!;
    this.tokens += T;
  }

  /** H scaled by diag(1/s) on both sides (the Hessian of inputs divided channel-wise by s), as float32. */
  scaled(s?: Float32Array): Float32Array {
    const k = this.k;
    const out = new Float32Array(k * k);
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) out[i * k + j] = this.h[i * k + j]! / (s ? s[i]! * s[j]! : 1);
    }
    return out;
  }

  meanAbs(): Float32Array {
    const out = new Float32Array(this.k);
    for (let i = 0; i < this.k; i++) out[i] = this.absSum[i]! / Math.max(1, this.tokens);
    return out;
  }
}

export function dense(values: Float32Array, shape: number[]): DenseTensor {
  return {
    kind: "dense",
    dtype: "f32",
    shape,
    data: new Uint8Array(values.buffer, values.byteOffset, values.byteLength),
  };
}

/**
 * sum over calibration tokens of |D x|^2 = trace(D H D^T), for D (rows, k) and H (k, k) float32: the squared
 * output error of a weight error D.
 */
export function quadError(kernels: Kernels, d: Float32Array, rows: number, k: number, h: Float32Array): number {
  const dh = kernels.matmul(d, rows, dense(h, [k, k])); // (rows, k) = D H^T = D H
  let s = 0;
  for (let i = 0; i < rows * k; i++) s += d[i]! * dh[i]!;
  return s;
}
