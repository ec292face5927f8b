// Programmatic dependent launch (Hopper): a kernel launched with launch_pdl() may start while the kernel before it
// on the stream is still running. It must call pdl_wait() before it reads anything the previous kernel writes (or
// writes anything that kernel reads), and read such data with ordinary loads (ld_prev in ptx.cuh), never
// ld.global.nc (__ldg): an nc load may be issued before the wait (docs/gpu-runs.md run 67). Work before the wait
// (index math, weight loads) overlaps the previous kernel's tail. pdl_trigger() lets the next kernel start launching
// early. Both are no-ops below sm_90 and for kernels launched without the attribute. TPSERVE_PDL=0 turns the attribute off (for A/B measurements).
#pragma once
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

namespace tpserve::cuda {

__device__ __forceinline__ void pdl_wait() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
#endif
}

__device__ __forceinline__ void pdl_trigger() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

/** Whether launches get the programmatic-serialization attribute: compute capability >= 9 and TPSERVE_PDL != 0. */
inline bool pdl_enabled() {
  static const bool on = [] {
    const char* e = std::getenv("TPSERVE_PDL");
    if (e && e[0] == '0') return false;
    int dev = 0, major = 0;
    if (cudaGetDevice(&dev) != cudaSuccess) return false;
    if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev) != cudaSuccess) return false;
    return major >= 9;
  }();
  return on;
}

template <typename... KArgs, typename... Args>
cudaError_t launch_pdl(void (*kernel)(KArgs...), dim3 grid, dim3 block, size_t smem, cudaStream_t stream,
                       Args&&... args) {
  cudaLaunchConfig_t cfg{};
  cfg.gridDim = grid, cfg.blockDim = block, cfg.dynamicSmemBytes = smem, cfg.stream = stream;
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
  attr[0].val.programmaticStreamSerializationAllowed = pdl_enabled() ? 1 : 0;
  cfg.attrs = attr, cfg.numAttrs = 1;
  return cudaLaunchKernelEx(&cfg, kernel, std::forward<Args>(args)...);
}

}  // namespace tpserve::cuda
