// The GPU KV cache element type: fp16, as vLLM and TGI keep theirs (half the bytes of fp32: twice the tokens in
// the pool and half the attention reads). Writers round each value to nearest (__float2half_rn); readers widen to
// fp32 and do all attention math in fp32. Loads take 4 (or 2) consecutive elements, 8 (4) bytes, so every offset
// the kernels use is a multiple of 4 (2) elements.
#pragma once
#include <cuda_fp16.h>

#include <cstdint>

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

}  // namespace tpserve::cuda
