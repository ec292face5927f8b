// Fused kernels that save launches in the decode step.
//   qkv_rope_kv: from the merged QKV projection (T, qd + 2 kvd), rotate q (written to its own buffer for attention)
//   and k, and write k and v into the paged caches (fp16). Replaces rope + kv_write (and the three separate q/k/v
//   projections, since the weights are merged). cos/sin come from a table the host computed once with the CPU
//   engine's formula (fp32 inv_freq and angle, double cos/sin rounded to fp32), so both engines rotate alike.
#include "kernels.cuh"
#include "pdl.cuh"
#include "ptx.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 256;

// grid (tokens, qBlocks + 2 * kvBlocks): block y < qBlocks rotates 4 q heads, the next kvBlocks rotate 4 k heads
// each into the cache, the last kvBlocks copy 4 v heads each (decode has one token: many small blocks, not one).
constexpr int kHeadsPerBlock = 4;

__global__ void __launch_bounds__(kThreads)
    qkv_rope_kv_kernel(const float* __restrict__ qkv, float* __restrict__ q, const int32_t* __restrict__ positions,
                       const int32_t* __restrict__ slots, kv_t* __restrict__ kCache, kv_t* __restrict__ vCache,
                       int heads, int kvHeads, int headDim, const float* __restrict__ cosTab,
                       const float* __restrict__ sinTab) {
  pdl_trigger();
  pdl_wait();
  const int t = blockIdx.x;
  const int half = headDim / 2;
  const int qd = heads * headDim, kvd = kvHeads * headDim;
  const float* row = qkv + (size_t)t * (qd + 2 * kvd);
  const int slot = slots[t];
  const int qBlocks = (heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const int kvBlocks = (kvHeads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  int by = blockIdx.y;
  if (by >= qBlocks + kvBlocks) {  // v heads: copy
    if (slot < 0) return;
    const int h0 = (by - qBlocks - kvBlocks) * kHeadsPerBlock, h1 = min(h0 + kHeadsPerBlock, kvHeads);
    const float* vs = row + qd + kvd + h0 * headDim;
    kv_t* vd = vCache + (size_t)slot * kvd + h0 * headDim;
    for (int i = threadIdx.x; i < (h1 - h0) * headDim; i += blockDim.x) st_kv(vd + i, vs[i]);
    return;
  }
  const bool isQ = by < qBlocks;
  if (!isQ && slot < 0) return;
  const int h0 = (isQ ? by : by - qBlocks) * kHeadsPerBlock;
  const int h1 = min(h0 + kHeadsPerBlock, isQ ? heads : kvHeads);
  const float* cs = cosTab + (size_t)positions[t] * half;
  const float* sn = sinTab + (size_t)positions[t] * half;
  for (int idx = threadIdx.x; idx < (h1 - h0) * half; idx += blockDim.x) {
    const int h = h0 + idx / half, i = idx % half;
    const float* src = row + (isQ ? h : heads + h) * headDim;  // q heads first, then k heads
    const float a = ld_prev(src + i), b = ld_prev(src + i + half), c = __ldg(cs + i), s = __ldg(sn + i);
    // Same rounding as the CPU: each product rounded, no FMA contraction.
    const float ra = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
    const float rb = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    if (isQ) {
      float* dst = q + (size_t)t * qd + h * headDim;
      dst[i] = ra, dst[i + half] = rb;
    } else {
      kv_t* dst = kCache + (size_t)slot * kvd + h * headDim;
      st_kv(dst + i, ra), st_kv(dst + i + half, rb);
    }
  }
}

}  // namespace

cudaError_t qkv_rope_kv(const float* qkv, float* q, const int32_t* positions, const int32_t* slots, int tokens,
                        kv_t* kCache, kv_t* vCache, int heads, int kvHeads, int headDim, const float* ropeCos,
                        const float* ropeSin, cudaStream_t stream) {
  if (!qkv || !q || !positions || !slots || !kCache || !vCache || !ropeCos || !ropeSin || tokens < 1 || heads < 1 ||
      kvHeads < 1 || headDim < 2 || headDim % 2 || heads % kvHeads)
    return cudaErrorInvalidValue;
  const int qBlocks = (heads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  const int kvBlocks = (kvHeads + kHeadsPerBlock - 1) / kHeadsPerBlock;
  return launch_pdl(qkv_rope_kv_kernel, dim3(tokens, qBlocks + 2 * kvBlocks), dim3(kThreads), 0, stream, qkv, q, positions, slots, kCache,
                    vCache, heads, kvHeads, headDim, ropeCos, ropeSin);
}

}  // namespace tpserve::cuda
