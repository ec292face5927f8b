// Warp and block sums shared by the row kernels (rmsnorm in ops.cu, the fused all-reduce + rmsnorm in
// allreduce.cu): the same summation order everywhere, so fused and unfused paths give the same bits.
#pragma once
#include <cuda_runtime.h>

namespace tpserve::cuda::red {

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/** Sum over the block; `red` holds blockDim.x / 32 floats of shared memory. */
__device__ __forceinline__ float block_sum(float v, float* red) {
  v = warp_sum(v);
  const int w = threadIdx.x >> 5, l = threadIdx.x & 31, nw = blockDim.x >> 5;
  __syncthreads();  // red may be in use by a previous call
  if (l == 0) red[w] = v;
  __syncthreads();
  float s = 0.f;
  for (int i = 0; i < nw; i++) s += red[i];  // same order in every thread: identical result everywhere
  return s;
}

/**
 * v.x^2 + v.y^2 + v.z^2 + v.w^2 in one fixed order and rounding (explicit fma, nothing left for the compiler to
 * contract its own way): the row kernels that promise each other's bits (rmsnorm, the fused all-reduce + rmsnorm,
 * embedding + rmsnorm) all sum their squares with it. Left to contraction, one instantiation summed differently
 * and a row in twenty got another 1 / rms.
 */
__device__ __forceinline__ float sumsq4(float4 v) {
  return __fmaf_rn(v.w, v.w, __fmaf_rn(v.z, v.z, __fmaf_rn(v.y, v.y, __fmul_rn(v.x, v.x))));
}

}  // namespace tpserve::cuda::red
