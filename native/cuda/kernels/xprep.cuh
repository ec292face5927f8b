// The decode GEMV's activation layout ("xprep"), written by the kernels that produce a matmul's input (rmsnorm,
// silu_mul, xprep_kernel) and read by int4_tiled_matmul for m <= 16 tokens.
//
// The GEMV runs mma.m16n8k16 (fp16 in, fp32 accumulate) with the weights as A and the tokens as the 8 columns of
// B. For m <= 8 each token takes two columns: fp16(x) ("hi") and fp16(x - hi) ("lo"), so the product carries ~22
// bits of x and the result is close to an fp32 GEMV; for 9 <= m <= 16 each token is one fp16 column.
// Element (column n, k) lives at half index ((((k/64) * NC + n) * 4 + t) * 8 + 2j + b) * 2 + e with
// r = k % 64, j = r / 16, s = r % 16, t = (s % 8) / 2, b = s / 8, e = s % 2: lane (g, t) of a warp reads the
// B fragments of column g for the four 16-k steps of a 64-k chunk as 32 contiguous bytes.
#pragma once
#include <cuda_fp16.h>

#include <cstddef>
#include <cstdint>

namespace tpserve::cuda {

__host__ __device__ inline bool xprep_hilo(int m) { return m <= 8; }
__host__ __device__ inline int xprep_cols(int m) { return m <= 8 ? 2 * m : m; }
/** Halves of the prepared activation of m tokens x cols (cols % 64 == 0). */
__host__ __device__ inline size_t xprep_halves(int m, int cols) { return (size_t)xprep_cols(m) * cols; }

__host__ __device__ __forceinline__ size_t xprep_index(int nc, int n, int k) {
  const int r = k & 63, j = r >> 4, s = r & 15;
  return ((((size_t)(k >> 6) * nc + n) * 4 + ((s & 7) >> 1)) * 8 + 2 * j + (s >> 3)) * 2 + (s & 1);
}

/** Stores x[token][k], x[token][k + 1] (k even) into the prepared layout for m tokens. */
__device__ __forceinline__ void xprep_store2(__half* xp, int m, int token, int k, float v0, float v1) {
  const int nc = xprep_cols(m);
  if (xprep_hilo(m)) {
    const __half2 hi = __floats2half2_rn(v0, v1);
    const float2 hf = __half22float2(hi);
    const __half2 lo = __floats2half2_rn(v0 - hf.x, v1 - hf.y);
    *reinterpret_cast<__half2*>(xp + xprep_index(nc, 2 * token, k)) = hi;
    *reinterpret_cast<__half2*>(xp + xprep_index(nc, 2 * token + 1, k)) = lo;
  } else {
    *reinterpret_cast<__half2*>(xp + xprep_index(nc, token, k)) = __floats2half2_rn(v0, v1);
  }
}

/** Stores x[token][k] alone (same rounding as xprep_store2). */
__device__ __forceinline__ void xprep_store1(__half* xp, int m, int token, int k, float v) {
  const int nc = xprep_cols(m);
  const __half hi = __float2half_rn(v);
  if (xprep_hilo(m)) {
    xp[xprep_index(nc, 2 * token, k)] = hi;
    xp[xprep_index(nc, 2 * token + 1, k)] = __float2half_rn(v - __half2float(hi));
  } else {
    xp[xprep_index(nc, token, k)] = hi;
  }
}

// Act-order int4 weights (GPTQ desc_act) store their columns in group order: stored column i multiplies x[perm[i]].
// A producer that knows its consumer's order writes x[k] at column map[k] (map: the inverse of perm), so the consumer
// reads its input in place and no gather runs (docs/quantization.md). A null map is x's own order.

/** xprep_store1 of column k, placed at map[k] when a map is given. */
__device__ __forceinline__ void xprep_store1(__half* xp, const int32_t* map, int m, int token, int k, float v) {
  xprep_store1(xp, m, token, map ? __ldg(map + k) : k, v);
}

/** xprep_store2 of columns k, k + 1, placed at map[k], map[k + 1] when a map is given (the same bits either way). */
__device__ __forceinline__ void xprep_store2(__half* xp, const int32_t* map, int m, int token, int k, float v0,
                                             float v1) {
  if (!map) return xprep_store2(xp, m, token, k, v0, v1);
  xprep_store1(xp, m, token, __ldg(map + k), v0);
  xprep_store1(xp, m, token, __ldg(map + k + 1), v1);
}

}  // namespace tpserve::cuda
