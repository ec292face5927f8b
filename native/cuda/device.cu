// Minimal CUDA translation unit: lets the addon report whether a GPU is visible. Never fails hard.
#include <cuda_runtime.h>

extern "C" int tpserve_cuda_device_count() {
  int n = 0;
  if (cudaGetDeviceCount(&n) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return n;
}
