// GPTQ checkpoint layout (AutoGPTQ / GPTQModel "gptq" format, as read by transformers, vLLM and TGI), for a linear
// layer with `out` outputs and `in` inputs, 4 bits, group size G (-1 = one group per row):
//   qweight int32 (in/8, out):   word [i, o] holds input rows 8i..8i+7 of output o, row 8i+k in bits 4k..4k+3.
//   qzeros  int32 (in/G, out/8): word [g, j] holds outputs 8j..8j+7 of group g, output 8j+k in bits 4k..4k+3,
//                                storing zero - 1 ("v1" format; GPTQModel's checkpoint_format "gptq_v2" stores zero).
//   scales  f16   (in/G, out).
//   g_idx   int32 (in):          group of each input row; i / G unless desc_act (act-order).
//   w[o, i] = scales[g, o] * (q[i, o] - (z[g, o] + 1)) with g = g_idx[i] (v1). Symmetric files store z = 7 (zero 8).
import type { WriteTensor } from "../../../common/model/safetensors.js";
import type { QLinear } from "../qlinear.js";
import { f16Tensor, i32Tensor, nibble } from "./packing.js";

export interface GptqTensors {
  qweight: Int32Array;
  qzeros: Int32Array;
  scales: Float32Array;
  gIdx: Int32Array;
}

export function packGptq(t: QLinear): Record<"qweight" | "qzeros" | "scales" | "g_idx", WriteTensor> {
  const { rows: out, cols: inF, groupSize: G } = t;
  const groups = inF / G;
  const qweight = new Int32Array((inF / 8) * out);
  for (let o = 0; o < out; o++) {
    for (let i = 0; i < inF; i++) qweight[(i >> 3) * out + o]! |= t.q[o * inF + i]! << (4 * (i & 7));
  }
  const qzeros = new Int32Array(groups * (out / 8));
  const scales = new Float32Array(groups * out);
  for (let g = 0; g < groups; g++) {
    for (let o = 0; o < out; o++) {
      const z = t.zeros[o * groups + g]!;
      if (z < 1 || z > 16) throw new Error(`packGptq: zero ${z} cannot be stored as zero-1 in 4 bits`);
      qzeros[g * (out / 8) + (o >> 3)]! |= ((z - 1) & 15) << (4 * (o & 7));
      scales[g * out + o] = t.scales[o * groups + g]!;
    }
  }
  return {
    qweight: i32Tensor(qweight, [inF / 8, out]),
    qzeros: i32Tensor(qzeros, [groups, out / 8]),
    scales: f16Tensor(scales, [groups, out]),
    g_idx: i32Tensor(t.gIdx, [inF]),
  };
}

/** Tensors already read and shape-checked (checkpoint.ts) -> QLinear. `v2`: zeros stored without the -1. */
export function unpackGptq(x: GptqTensors, out: number, inF: number, G: number, v2: boolean): QLinear {
  const groups = inF / G;
  const q = new Uint8Array(out * inF);
  for (let i = 0; i < inF; i++) {
    const wr = (i >> 3) * out;
    const k = i & 7;
    for (let o = 0; o < out; o++) q[o * inF + i] = nibble(x.qweight[wr + o]!, k);
  }
  const scales = new Float32Array(out * groups);
  const zeros = new Uint8Array(out * groups);
  for (let g = 0; g < groups; g++) {
    for (let o = 0; o < out; o++) {
      const z = nibble(x.qzeros[g * (out / 8) + (o >> 3)]!, o & 7);
      zeros[o * groups + g] = v2 ? z : z + 1;
      scales[o * groups + g] = x.scales[g * out + o]!;
    }
  }
  return { rows: out, cols: inF, groupSize: G, q, scales, zeros, gIdx: x.gIdx };
}
