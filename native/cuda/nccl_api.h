// The part of NCCL's C API tpserve uses, declared by hand and resolved from libnccl.so.2 at run time (dlopen), so
// neither the build nor a CPU-only machine needs NCCL. Values follow nccl.h (NCCL 2.x, stable since 2.0).
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <string>

namespace tpserve::nccl {

using Result = int;  // ncclResult_t: 0 success
using Comm = struct ncclComm*;
struct UniqueId {
  char internal[128];
};
constexpr int kFloat32 = 7;  // ncclFloat32
constexpr int kSum = 0;      // ncclSum
constexpr Result kInProgress = 7;

struct Api {
  Result (*getUniqueId)(UniqueId*) = nullptr;
  Result (*commInitRank)(Comm*, int, UniqueId, int) = nullptr;
  Result (*allReduce)(const void*, void*, size_t, int, int, Comm, cudaStream_t) = nullptr;
  Result (*allGather)(const void*, void*, size_t, int, Comm, cudaStream_t) = nullptr;
  Result (*broadcast)(const void*, void*, size_t, int, int, Comm, cudaStream_t) = nullptr;
  Result (*commAbort)(Comm) = nullptr;
  Result (*commDestroy)(Comm) = nullptr;
  Result (*commGetAsyncError)(Comm, Result*) = nullptr;
  const char* (*getErrorString)(Result) = nullptr;
  Result (*getVersion)(int*) = nullptr;
  // Single-process use (the kernel checks' comparison only; null if absent).
  Result (*commInitAll)(Comm*, int, const int*) = nullptr;
  Result (*groupStart)() = nullptr;
  Result (*groupEnd)() = nullptr;
};

/** The loaded library (once per process), or null with `why` set (library missing or a symbol absent). */
const Api* load(std::string& why);

}  // namespace tpserve::nccl
