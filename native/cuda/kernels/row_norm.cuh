// The RMSNorm tail that the row kernels share: rmsnorm_vec_kernel (ops.cu), all_reduce_rmsnorm_kernel
// (allreduce.cu) and embed_rmsnorm_kernel (embed_norm.cu) promise each other's bits, so they end in this one
// function: the sum of squares in one order (red::sumsq4, then the block sum), 1 / rms with round-to-nearest
// intrinsics, then y = (x * inv) * w and, when xp is set, the next GEMV's prepared input of the same values (through
// xpMap when the next weight is act-order, xprep.cuh).
#pragma once
#include <cuda_fp16.h>

#include "block_reduce.cuh"
#include "xprep.cuh"

namespace tpserve::cuda::red {

/**
 * One block normalizes row `row` of `rows`: thread t holds float4 number t + k * NT of the row in v[k] (the row's
 * final x, residual already added). `red` is NT / 32 floats of shared memory; y points at the row's first float.
 */
template <int NV, int NT>
__device__ __forceinline__ void rmsnorm_row_tail(const float4 (&v)[NV], int n4, int dim, float eps,
                                                 const float* __restrict__ w, float* __restrict__ y, __half* xp,
                                                 const int32_t* xpMap, int rows, int row, float* red) {
  float ss = 0.f;
#pragma unroll
  for (int k = 0; k < NV; k++)
    if ((int)threadIdx.x + k * NT < n4) ss = __fadd_rn(ss, sumsq4(v[k]));
  ss = block_sum(ss, red);
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)dim) + eps));
  const float4* w4 = reinterpret_cast<const float4*>(w);
  float4* y4 = reinterpret_cast<float4*>(y);
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int col = threadIdx.x + k * NT;
    if (col < n4) {
      const float4 g = __ldg(w4 + col);
      const float4 o =
          make_float4((v[k].x * inv) * g.x, (v[k].y * inv) * g.y, (v[k].z * inv) * g.z, (v[k].w * inv) * g.w);
      y4[col] = o;
      if (xp) {
        xprep_store2(xp, xpMap, rows, row, 4 * col, o.x, o.y);
        xprep_store2(xp, xpMap, rows, row, 4 * col + 2, o.z, o.w);
      }
    }
  }
}

}  // namespace tpserve::cuda::red
