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

/** A range [begin, end) of whole groups of an act-order layer's stored (group-ordered) columns. */
export interface StoredRange {
  begin: number;
  end: number;
}

/**
 * The engine's int4 layout (native/index.ts); act-order layers carry the input permutation. With `keep`, only that
 * range of the stored columns (a row-parallel act-order shard): its perm picks them from the whole input (permCols).
 */
export function toInt4Tensor(t: QLinear, name: string, keep?: StoredRange): Int4Tensor {
  const perm = groupOrder(t, name);
  const G = t.groupSize;
  const b = keep?.begin ?? 0;
  const n = (keep?.end ?? t.cols) - b;
  if (keep && (!perm || b % G !== 0 || n % G !== 0 || n <= 0 || b + n > t.cols)) {
    throw new ModelLoadError(
      `${name}: internal: stored columns [${b}, ${b + n}) are not whole groups of an act-order layer`,
    );
  }
  const qweight = new Uint8Array((t.rows * n) / 2);
  for (let r = 0; r < t.rows; r++) {
    const src = r * t.cols;
    const dst = r * n;
    for (let i = 0; i < n; i += 2) {
      const a = t.q[src + (perm ? perm[b + i]! : b + i)]!;
      const c = t.q[src + (perm ? perm[b + i + 1]! : b + i + 1)]!;
      qweight[(dst + i) >> 1] = a | (c << 4);
    }
  }
  // Stored group j holds the columns of g_idx j (groupOrder sorts by it), so a range keeps groups b/G.. of each row.
  const groups = t.cols / G;
  const slice = <A extends Float32Array | Uint8Array>(v: A, make: (k: number) => A): A => {
    if (!keep) return v;
    const k = n / G;
    const o = make(t.rows * k);
    for (let r = 0; r < t.rows; r++) o.set(v.subarray(r * groups + b / G, r * groups + b / G + k), r * k);
    return o;
  };
  const zeros = slice(t.zeros, (k) => new Uint8Array(k));
  let symmetric = true;
  for (let i = 0; i < zeros.length && symmetric; i++) symmetric = zeros[i] === 8;
  const out: Int4Tensor = {
    kind: "int4",
    rows: t.rows,
    cols: n,
    groupSize: G,
    qweight,
    scales: slice(t.scales, (k) => new Float32Array(k)),
  };
  if (!symmetric) out.zeros = zeros;
  if (perm) out.perm = keep ? perm.slice(b, b + n) : perm;
  if (keep) out.permCols = t.cols;
  return out;
}

/** Bytes of the packed weights in memory (qweight + scales + zeros + perm). */
export function qlinearBytes(t: QLinear): number {
  const groups = (t.rows * t.cols) / t.groupSize;
  return (t.rows * t.cols) / 2 + groups * 4 + groups + (isTrivialGIdx(t.gIdx, t.groupSize) ? 0 : t.cols * 4);
}
