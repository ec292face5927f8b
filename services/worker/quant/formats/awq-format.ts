// AWQ checkpoint layout (AutoAWQ "gemm" version, as read by transformers, vLLM and TGI), for a linear layer with
// `out` outputs and `in` inputs, 4 bits, group size G, always with zero points:
//   qweight int32 (in, out/8):   word [i, j] holds outputs 8j..8j+7 of input row i, interleaved: bits 4k..4k+3 hold
//                                output 8j + ORDER[k], ORDER = [0, 2, 4, 6, 1, 3, 5, 7].
//   qzeros  int32 (in/G, out/8): same packing and order, the zero point itself (no -1).
//   scales  f16   (in/G, out).
//   w[o, i] = scales[i / G, o] * (q[i, o] - z[i / G, o]). No g_idx: AWQ has no act-order.
import type { WriteTensor } from "../../../common/model/safetensors.js";
import { type QLinear, trivialGIdx } from "../qlinear.js";
import { f16Tensor, i32Tensor, nibble } from "./packing.js";

export const AWQ_ORDER = [0, 2, 4, 6, 1, 3, 5, 7] as const;

export interface AwqTensors {
  qweight: Int32Array;
  qzeros: Int32Array;
  scales: Float32Array;
}

export function packAwq(t: QLinear): Record<"qweight" | "qzeros" | "scales", WriteTensor> {
  const { rows: out, cols: inF, groupSize: G } = t;
  const groups = inF / G;
  const w8 = out / 8;
  const qweight = new Int32Array(inF * w8);
  const qzeros = new Int32Array(groups * w8);
  const scales = new Float32Array(groups * out);
  for (let i = 0; i < inF; i++) {
    for (let j = 0; j < w8; j++) {
      let word = 0;
      for (let k = 0; k < 8; k++) word |= t.q[(8 * j + AWQ_ORDER[k]!) * inF + i]! << (4 * k);
      qweight[i * w8 + j] = word;
    }
  }
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < w8; j++) {
      let word = 0;
      for (let k = 0; k < 8; k++) {
        const z = t.zeros[(8 * j + AWQ_ORDER[k]!) * groups + g]!;
        if (z > 15) throw new Error(`packAwq: zero ${z} does not fit 4 bits`);
        word |= z << (4 * k);
      }
      qzeros[g * w8 + j] = word;
    }
    for (let o = 0; o < out; o++) scales[g * out + o] = t.scales[o * groups + g]!;
  }
  return {
    qweight: i32Tensor(qweight, [inF, w8]),
    qzeros: i32Tensor(qzeros, [groups, w8]),
    scales: f16Tensor(scales, [groups, out]),
  };
}

export function unpackAwq(x: AwqTensors, out: number, inF: number, G: number): QLinear {
  const groups = inF / G;
  const w8 = out / 8;
  const q = new Uint8Array(out * inF);
  for (let i = 0; i < inF; i++) {
    for (let j = 0; j < w8; j++) {
      const word = x.qweight[i * w8 + j]!;
      for (let k = 0; k < 8; k++) q[(8 * j + AWQ_ORDER[k]!) * inF + i] = nibble(word, k);
    }
  }
  const scales = new Float32Array(out * groups);
  const zeros = new Uint8Array(out * groups);
  for (let g = 0; g < groups; g++) {
    for (let j = 0; j < w8; j++) {
      const word = x.qzeros[g * w8 + j]!;
      for (let k = 0; k < 8; k++) zeros[(8 * j + AWQ_ORDER[k]!) * groups + g] = nibble(word, k);
    }
    for (let o = 0; o < out; o++) scales[o * groups + g] = x.scales[g * out + o]!;
  }
  return { rows: out, cols: inF, groupSize: G, q, scales, zeros, gIdx: trivialGIdx(inF, G) };
}
