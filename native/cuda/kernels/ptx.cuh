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

/**
 * A load of data that an earlier kernel of the stream wrote, in a kernel launched with programmatic dependent launch
 * (pdl.cuh), after its pdl_wait(): an ordinary cached load. Never ld.global.nc (__ldg, or what the compiler makes of
 * a const __restrict__ pointer): an nc load promises that the data does not change while the kernel runs, which the
 * previous kernel's writes break once this one starts early, and the compiler may then issue it before the wait
 * (stale activations; docs/gpu-runs.md run 67).
 */
template <class T>
__device__ __forceinline__ T ld_prev(const T* p) {
  return __ldca(p);
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
