// Small PTX wrappers shared by the kernels (the matmuls' streaming load and epilogue copies, allreduce.cu's timer)
// and the checks.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace tpserve::cuda {
namespace {

/** 16-byte streaming load that skips L1 (weights are read once per matmul). */
__device__ __forceinline__ uint4 ld_stream(const void* p) {
  uint4 v;
  asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];"
               : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w)
               : "l"(p));
  return v;
}

/** 4-byte asynchronous copy global -> shared (no register holds the value; cp_async_wait_all() before reading). */
__device__ __forceinline__ void cp_async4(void* smem, const void* gmem) {
  const unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.ca.shared.global [%0], [%1], 4;" ::"r"(s), "l"(gmem) : "memory");
}

/** Waits for this thread's cp.async copies (other threads' need a __syncthreads() after their wait). */
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_all;" ::: "memory"); }

/** The GPU's global timer, in ns. */
__device__ __forceinline__ long long global_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

}  // namespace
}  // namespace tpserve::cuda
