// A quantized linear layer in one unpacked form shared by the quantizers (RTN, GPTQ, AWQ) and the checkpoint
// formats (GPTQ, AWQ): 4-bit codes per weight, a scale and a zero point per (output row, group), and the group of
// every input column (g_idx; act-order makes it a permutation of groups). Dequantized: w = (q - zero) * scale.
import type { Int4Tensor } from "../../../native/index.js";
import { ModelLoadError } from "../../common/errors.js";

export interface QLinear {
  /** Output features. */
  rows: number;
  /** Input features. */
  cols: number;
  groupSize: number;
  /** (rows, cols) codes 0..15, row-major. */
  q: Uint8Array;
  /** (rows, groups) float32. */
  scales: Float32Array;
  /** (rows, groups) zero points 0..16 (16 only from GPTQ v1 files, where zero-1 is stored in 4 bits). */
  zeros: Uint8Array;
  /** (cols) group index of each input column; i / groupSize unless quantized in activation order. */
  gIdx: Int32Array;
}

const f = Math.fround;

export function trivialGIdx(cols: number, groupSize: number): Int32Array {
  const g = new Int32Array(cols);
  for (let c = 0; c < cols; c++) g[c] = Math.floor(c / groupSize);
  return g;
}

export function isTrivialGIdx(gIdx: Int32Array, groupSize: number): boolean {
  for (let c = 0; c < gIdx.length; c++) if (gIdx[c] !== Math.floor(c / groupSize)) return false;
  return true;
}

/** w = (q - zero) * scale in float32, (rows, cols) row-major. */
export function dequantQLinear(t: QLinear): Float32Array {
  const groups = t.cols / t.groupSize;
  const out = new Float32Array(t.rows * t.cols);
  for (let r = 0; r < t.rows; r++) {
    for (let c = 0; c < t.cols; c++) {
      const gi = r * groups + t.gIdx[c]!;
      out[r * t.cols + c] = f((t.q[r * t.cols + c]! - t.zeros[gi]!) * t.scales[gi]!);
    }
  }
  return out;
}

/**
 * Column order that makes every group contiguous (stable sort by g_idx), checked: each group must hold exactly
 * groupSize columns. Returns undefined for the trivial order.
 */
export function groupOrder(t: QLinear, name: string): Int32Array | undefined {
  if (isTrivialGIdx(t.gIdx, t.groupSize)) return undefined;
  const groups = t.cols / t.groupSize;
  const count = new Int32Array(groups);
  for (let c = 0; c < t.cols; c++) {
    const g = t.gIdx[c]!;
    if (g < 0 || g >= groups) {
      throw new ModelLoadError(`${name}: g_idx[${c}] = ${g}, expected a group index in 0..${groups - 1}`);
    }
    count[g]!++;
  }
  for (let g = 0; g < groups; g++) {
    if (count[g] !== t.groupSize) {
      throw new ModelLoadError(
        `${name}: g_idx puts ${count[g]} input columns in group ${g}, expected group_size ${t.groupSize}`,
      );
    }
  }
  const start = new Int32Array(groups);
  for (let g = 1; g < groups; g++) start[g] = start[g - 1]! + count[g - 1]!;
  const perm = new Int32Array(t.cols);
  for (let c = 0; c < t.cols; c++) perm[start[t.gIdx[c]!]!++] = c;
  return perm;
}

/** The engine's int4 layout (native/index.ts); act-order layers carry the input permutation. */
export function toInt4Tensor(t: QLinear, name: string): Int4Tensor {
  const perm = groupOrder(t, name);
  const qweight = new Uint8Array((t.rows * t.cols) / 2);
  for (let r = 0; r < t.rows; r++) {
    const src = r * t.cols;
    for (let i = 0; i < t.cols; i += 2) {
      const a = t.q[src + (perm ? perm[i]! : i)]!;
      const b = t.q[src + (perm ? perm[i + 1]! : i + 1)]!;
      qweight[(src + i) >> 1] = a | (b << 4);
    }
  }
  let symmetric = true;
  for (let i = 0; i < t.zeros.length && symmetric; i++) symmetric = t.zeros[i] === 8;
  const out: Int4Tensor = {
    kind: "int4",
    rows: t.rows,
    cols: t.cols,
    groupSize: t.groupSize,
    qweight,
    scales: t.scales,
  };
  if (!symmetric) out.zeros = t.zeros;
  if (perm) out.perm = perm;
  return out;
}

/** Bytes of the packed weights in memory (qweight + scales + zeros + perm). */
export function qlinearBytes(t: QLinear): number {
  const groups = (t.rows * t.cols) / t.groupSize;
  return (t.rows * t.cols) / 2 + groups * 4 + groups + (isTrivialGIdx(t.gIdx, t.groupSize) ? 0 : t.cols * 4);
}
