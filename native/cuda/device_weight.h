// Weights on the device: self-freeing device buffers, the formats a weight takes there (int4 as stored or repacked
// into the tiled decode layout, bf16, fp32), and their upload from the engine's host copy. Used by CudaModel
// (cuda_model.h).
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <initializer_list>
#include <string>
#include <vector>

#include "../src/engine.h"
#include "cuda_check.h"
#include "kernels/kernels.cuh"

namespace tpserve {

/** A device allocation that frees itself. */
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    if (this != &o) reset(), p = o.p, n = o.n, o.p = nullptr, o.n = 0;
    return *this;
  }
  ~DevBuf() { reset(); }
  void reset() {
    if (p) cudaFree(p);
    p = nullptr, n = 0;
  }
  void alloc(size_t count) {
    reset();
    if (count == 0) return;
    CK(cudaMalloc(&p, count * sizeof(T)));
    n = count;
  }
  /** Grows (never shrinks) to at least `count` elements; contents are not kept. */
  void reserve(size_t count) {
    if (count > n) alloc(count);
  }
  /**
   * A synchronous copy from pageable memory can return before its last piece lands (the legacy stream finishes it),
   * and the engine's stream does not wait for the legacy stream (non-blocking): wait here, so the kernels that read
   * the copy next on that stream (the repack at load) never see part of it.
   */
  void upload(const T* src, size_t count) {
    alloc(count);
    if (count) {
      CK(cudaMemcpy(p, src, count * sizeof(T), cudaMemcpyHostToDevice));
      CK(cudaStreamSynchronize(cudaStreamLegacy));
    }
  }
  size_t bytes() const { return n * sizeof(T); }
};

/** Pinned host memory that frees itself (copies from and to it are asynchronous to the host). */
template <typename T>
struct PinnedBuf {
  T* p = nullptr;
  size_t n = 0;
  PinnedBuf() = default;
  PinnedBuf(const PinnedBuf&) = delete;
  PinnedBuf& operator=(const PinnedBuf&) = delete;
  ~PinnedBuf() {
    if (p) cudaFreeHost(p);
  }
  /**
   * Grows (never shrinks) to at least `count` elements; contents are not kept. The caller makes sure that no
   * queued copy still reads or writes the old memory.
   */
  void reserve(size_t count) {
    if (count <= n) return;
    if (p) cudaFreeHost(p), p = nullptr, n = 0;
    CK(cudaMallocHost(&p, count * sizeof(T)));
    n = count;
  }
};

/** A weight on the device: int4 (qweight, scales, zeros), bf16 or fp32. */
struct DWeight {
  enum Kind { kNone, kF32, kBf16, kInt4, kInt4Tiled } kind = kNone;
  int rows = 0, cols = 0, group = 0;
  DevBuf<float> f, scales;
  DevBuf<__nv_bfloat16> b;
  DevBuf<uint8_t> q, zeros;
  DevBuf<uint32_t> tq;  // kInt4Tiled: q, scales and zeros in the tile-packed layout (kernels/int4_tiled.cu)
  cuda::Int4RowOrder order = cuda::Int4RowOrder::kInOrder;  // kInt4Tiled: packed row order (fused epilogues)
  DevBuf<int32_t> perm;     // int4 act-order: stored column i multiplies x[perm[i]] (null: in order)
  DevBuf<int32_t> invPerm;  // its inverse: x[k] is stored column invPerm[k] (the producers' xpMap, xprep.cuh)
  // The input width perm picks from: cols, or (a row-parallel act-order shard in a group, no invPerm) the whole
  // input, which the pass gathers from every rank first.
  int permCols = 0;
  bool wideInput() const { return permCols > cols; }
  size_t bytes() const {
    return f.bytes() + scales.bytes() + b.bytes() + q.bytes() + zeros.bytes() + tq.bytes() + perm.bytes() +
           invPerm.bytes();
  }
};

/** Checks a kernel launcher's status: a failure becomes NATIVE_CUDA naming the kernel. */
void checkLaunch(cudaError_t e, const char* what);

/**
 * Concatenates the rows of several weights of one layer (q/k/v, gate/up), which must share one format; `what`
 * names them in the error.
 */
Weight mergeRows(int layer, const char* what, std::initializer_list<const Weight*> parts);

/**
 * Reorders the rows of a host weight: row i becomes old row order[i] (a permutation of its rows). Any format but
 * NF4 (false, untouched).
 */
bool reorderRows(Weight& w, const std::vector<int32_t>& order);

/**
 * Copies a host weight to the device; dense matrices as bf16 when `bf16` (exact for bf16 sources). Int4 weights the
 * tiled kernels take are repacked on the device, rows in `order` (RoPE or SiLU pairs for the fused epilogues; the
 * shard's heads come from `s`).
 */
void uploadWeight(DWeight& d, const Weight& w, bool bf16, cuda::Int4RowOrder order, const ModelShape& s,
                  cudaStream_t stream);

}  // namespace tpserve
