// The modules AWQ's scale search measures (AutoAWQ's module2inspect): a decoder layer's attention block (q/k/v,
// rotary embedding, causal GQA attention, o_proj) and its MLP block (gate/up, SiLU gating, down_proj), run on
// captured calibration inputs with the native kernels, and the squared difference of two outputs. The search
// compares the block's output with fp weights against its output with the candidate quantized weights, so the
// softmax and the SiLU gating weigh each linear's error as the model does (the per-linear trace(D H D^T) cannot).
import type { Kernels } from "../../../native/index.js";
import { dense } from "./hessian.js";

export interface AttentionShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  theta: number;
}

/** Weights (out, in) row-major of one attention block. */
export interface AttentionWeights {
  q: Float32Array;
  k: Float32Array;
  v: Float32Array;
  o: Float32Array;
}

/** Weights (out, in) row-major of one MLP block; `inter` is the intermediate size. */
export interface MlpWeights {
  gate: Float32Array;
  up: Float32Array;
  down: Float32Array;
}

/**
 * Attention block output (windows * T, hidden) for inputs x (windows * T, hidden): the already-normalized
 * attn_norm output of `windows` independent sequences of T tokens each, positions 0..T-1 (as calibration runs).
 */
export function attentionBlock(
  kernels: Kernels,
  x: Float32Array,
  windows: number,
  T: number,
  w: AttentionWeights,
  s: AttentionShape,
): Float32Array {
  const n = windows * T;
  const qd = s.heads * s.headDim;
  const kvd = s.kvHeads * s.headDim;
  const q = kernels.matmul(x, n, dense(w.q, [qd, s.hidden]));
  const k = kernels.matmul(x, n, dense(w.k, [kvd, s.hidden]));
  const v = kernels.matmul(x, n, dense(w.v, [kvd, s.hidden]));
  const positions = Int32Array.from({ length: T }, (_, i) => i);
  const att = new Float32Array(n * qd);
  // One page of T tokens per window (page 0 is reserved by the kernel).
  const kCache = new Float32Array(2 * T * kvd);
  const vCache = new Float32Array(2 * T * kvd);
  for (let b = 0; b < windows; b++) {
    const qb = q.slice(b * T * qd, (b + 1) * T * qd);
    kernels.rope(qb, positions, s.heads, s.headDim, s.theta);
    const kb = k.subarray(b * T * kvd, (b + 1) * T * kvd);
    kCache.set(kb, T * kvd);
    kernels.rope(kCache.subarray(T * kvd), positions, s.kvHeads, s.headDim, s.theta);
    vCache.set(v.subarray(b * T * kvd, (b + 1) * T * kvd), T * kvd);
    const out = kernels.pagedAttention({
      q: qb,
      qLen: T,
      numHeads: s.heads,
      numKvHeads: s.kvHeads,
      headDim: s.headDim,
      kCache,
      vCache,
      blockSize: T,
      blockTable: Int32Array.of(1),
      contextLen: T,
    });
    att.set(out, b * T * qd);
  }
  return kernels.matmul(att, n, dense(w.o, [s.hidden, qd]));
}

/** MLP block output (n, hidden) = down(silu(gate x) * up x) for inputs x (n, hidden), the mlp_norm output. */
export function mlpBlock(
  kernels: Kernels,
  x: Float32Array,
  n: number,
  hidden: number,
  inter: number,
  w: MlpWeights,
): Float32Array {
  const g = kernels.matmul(x, n, dense(w.gate, [inter, hidden]));
  const u = kernels.matmul(x, n, dense(w.up, [inter, hidden]));
  return kernels.matmul(kernels.siluMul(g, u), n, dense(w.down, [hidden, inter]));
}

/** sum (a - b)^2 in float64: the squared output error of a block over its calibration tokens. */
export function squaredError(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) throw new RangeError(`squaredError: lengths differ (${a.length} vs ${b.length})`);
  let s = 0;
  for (let i = 0; i < a.length; i++) {
    const d = a[i]! - b[i]!;
    s += d * d;
  }
  return s;
}
