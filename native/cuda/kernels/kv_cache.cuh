// The GPU KV cache element type: fp16, as vLLM and TGI keep theirs (half the bytes of fp32: twice the tokens in
// the pool and half the attention reads). Writers round each value to nearest (__float2half_rn); readers widen to
// fp32 and do all attention math in fp32. Loads take 4 (or 2) consecutive elements, 8 (4) bytes, so every offset
// the kernels use is a multiple of 4 (2) elements.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

#include "ptx.cuh"

namespace tpserve::cuda {

using kv_t = __half;

__device__ __forceinline__ void st_kv(kv_t* p, float v) { *p = __float2half_rn(v); }

/** 4 consecutive elements in one 8-byte store (p a multiple of 4 elements). */
__device__ __forceinline__ void st_kv4(kv_t* p, float4 x) {
  const __half2 lo = __floats2half2_rn(x.x, x.y), hi = __floats2half2_rn(x.z, x.w);
  uint2 u;
  memcpy(&u.x, &lo, 4);
  memcpy(&u.y, &hi, 4);
  *reinterpret_cast<uint2*>(p) = u;
}

// Raw loads (4 or 2 elements as 8 or 4 bytes) and their conversion, so that a kernel can issue every load of a chunk
// before converting any (a conversion right after its load inside a guarded branch kept one load in flight at a
// time: 1.8x the fp32 kernel's time on an H100, docs/gpu-runs.md run 30).
// The cache rows of this step were written by the kernel before attention: ordinary loads (ld_prev, ptx.cuh).
__device__ __forceinline__ uint2 ld_kv4_raw(const kv_t* p) { return ld_prev(reinterpret_cast<const uint2*>(p)); }
__device__ __forceinline__ uint32_t ld_kv2_raw(const kv_t* p) {
  return ld_prev(reinterpret_cast<const uint32_t*>(p));
}
__device__ __forceinline__ float2 kv2_f32(uint32_t u) {
  __half2 h;
  memcpy(&h, &u, 4);
  return __half22float2(h);
}
__device__ __forceinline__ float4 kv4_f32(uint2 u) {
  const float2 a = kv2_f32(u.x), b = kv2_f32(u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}

/** 4 elements widened to fp32 at once (where the next use follows the load anyway). */
__device__ __forceinline__ float4 ld_kv4(const kv_t* p) { return kv4_f32(ld_kv4_raw(p)); }

}  // namespace tpserve::cuda
