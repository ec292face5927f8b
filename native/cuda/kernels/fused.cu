// Fused kernels that save launches in the decode step.
//   qkv_rope_kv: from the merged QKV projection (T, qd + 2 kvd), rotate q (written to its own buffer for attention)
//   and k, and write k and v into the paged caches. Replaces rope + kv_write (and the three separate q/k/v
//   projections, since the weights are merged). cos/sin come from a table the host computed once with the CPU
//   engine's formula (fp32 inv_freq and angle, double cos/sin rounded to fp32), so both engines rotate alike.
#include "kernels.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void __launch_bounds__(kThreads)
    qkv_rope_kv_kernel(const float* __restrict__ qkv, float* __restrict__ q, const int32_t* __restrict__ positions,
                       const int32_t* __restrict__ slots, float* __restrict__ kCache, float* __restrict__ vCache,
                       int heads, int kvHeads, int headDim, const float* __restrict__ cosTab,
                       const float* __restrict__ sinTab) {
  const int t = blockIdx.x;
  const int half = headDim / 2;
  const float* cs = cosTab + (size_t)positions[t] * half;
  const float* sn = sinTab + (size_t)positions[t] * half;
  const int qd = heads * headDim, kvd = kvHeads * headDim;
  const float* row = qkv + (size_t)t * (qd + 2 * kvd);
  const int slot = slots[t];
  const int pairs = (heads + kvHeads) * half;
  for (int idx = threadIdx.x; idx < pairs; idx += blockDim.x) {
    const int h = idx / half, i = idx - h * half;
    const float* src = row + h * headDim;  // q heads first, then k heads (contiguous in the QKV row)
    const float a = src[i], b = src[i + half], c = __ldg(cs + i), s = __ldg(sn + i);
    // Same rounding as the CPU: each product rounded, no FMA contraction.
    const float ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    const float rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    if (h < heads) {
      float* dst = q + (size_t)t * qd + h * headDim;
      dst[i] = ra, dst[i + half] = rb;
    } else if (slot >= 0) {
      float* dst = kCache + (size_t)slot * kvd + (h - heads) * headDim;
      dst[i] = ra, dst[i + half] = rb;
    }
  }
  if (slot >= 0) {
    const float* vs = row + qd + kvd;
    float* vd = vCache + (size_t)slot * kvd;
    for (int i = threadIdx.x; i < kvd; i += blockDim.x) vd[i] = vs[i];
  }
}

}  // namespace

cudaError_t qkv_rope_kv(const float* qkv, float* q, const int32_t* positions, const int32_t* slots, int tokens,
                        float* kCache, float* vCache, int heads, int kvHeads, int headDim, const float* ropeCos,
                        const float* ropeSin, cudaStream_t stream) {
  if (!qkv || !q || !positions || !slots || !kCache || !vCache || !ropeCos || !ropeSin || tokens < 1 || heads < 1 ||
      kvHeads < 1 || headDim < 2 || headDim % 2 || heads % kvHeads)
    return cudaErrorInvalidValue;
  qkv_rope_kv_kernel<<<tokens, kThreads, 0, stream>>>(qkv, q, positions, slots, kCache, vCache, heads, kvHeads,
                                                     headDim, ropeCos, ropeSin);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
