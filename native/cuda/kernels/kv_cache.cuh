// The GPU KV cache element type: fp16, as vLLM and TGI keep theirs (half the bytes of fp32: twice the tokens in
// the pool and half the attention reads). Writers round each value to nearest (__float2half_rn); readers widen to
// fp32 and do all attention math in fp32. Loads take 4 (or 2) consecutive elements, 8 (4) bytes, so every offset
// the kernels use is a multiple of 4 (2) elements.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>

namespace tpserve::cuda {

using kv_t = __half;

__device__ __forceinline__ float4 ld_kv4(const kv_t* p) {
  const uint2 u = __ldg(reinterpret_cast<const uint2*>(p));
  const float2 a = __half22float2(*reinterpret_cast<const __half2*>(&u.x));
  const float2 b = __half22float2(*reinterpret_cast<const __half2*>(&u.y));
  return make_float4(a.x, a.y, b.x, b.y);
}

__device__ __forceinline__ float2 ld_kv2(const kv_t* p) {
  return __half22float2(__ldg(reinterpret_cast<const __half2*>(p)));
}

__device__ __forceinline__ void st_kv(kv_t* p, float v) { *p = __float2half_rn(v); }

// Raw loads (4 or 2 elements as 8 or 4 bytes) and their conversion, for kernels that issue every load of a chunk
// before converting any (a conversion right after its load inside a guarded branch kept one load in flight at a
// time: 1.8x the fp32 kernel's time on an H100, docs/gpu.md run 31).
__device__ __forceinline__ uint2 ld_kv4_raw(const kv_t* p) { return __ldg(reinterpret_cast<const uint2*>(p)); }
__device__ __forceinline__ uint32_t ld_kv2_raw(const kv_t* p) { return __ldg(reinterpret_cast<const uint32_t*>(p)); }
__device__ __forceinline__ float2 kv2_f32(uint32_t u) {
  __half2 h;
  memcpy(&h, &u, 4);
  return __half22float2(h);
}
__device__ __forceinline__ float4 kv4_f32(uint2 u) {
  const float2 a = kv2_f32(u.x), b = kv2_f32(u.y);
  return make_float4(a.x, a.y, b.x, b.y);
}

}  // namespace tpserve::cuda
