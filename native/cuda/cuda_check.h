// CK(call): a failed CUDA runtime call becomes a NativeError (NATIVE_OOM for allocations, else NATIVE_CUDA) that
// names the call and where it happened.
#pragma once
#include <cuda_runtime.h>

#include <string>

#include "../src/errors.h"

#define CK(call)                                                                                            \
  do {                                                                                                      \
    cudaError_t e_ = (call);                                                                                \
    if (e_ != cudaSuccess) {                                                                                \
      cudaGetLastError();                                                                                   \
      ::tpserve::fail(e_ == cudaErrorMemoryAllocation ? "NATIVE_OOM" : "NATIVE_CUDA",                      \
                      std::string(#call) + " failed: " + cudaGetErrorString(e_) + " (" + __FILE__ + ":" +  \
                          std::to_string(__LINE__) + ")");                                                  \
    }                                                                                                       \
  } while (0)
