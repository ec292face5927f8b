// Device collectives of a tensor-parallel group of GPU ranks (one process and one GPU per rank, one host).
//
// Two data paths, chosen per call the same way on every rank:
//   p2p   one-shot push all-reduce / gather through peer buffers shared with CUDA IPC (kernels/allreduce.cuh):
//         one kernel per call, no barrier, fused with the residual add and RMSNorm that follow a row-parallel
//         layer; used for messages up to its buffer (2 MiB per rank), and for every message when NCCL is missing
//         (in buffer-sized pieces).
//   NCCL  libnccl.so.2 loaded at run time (nccl_api.h), bootstrapped with a unique id that rank 0 sends the others
//         through the group's host collective (the control plane of the group); used for larger messages.
// TPSERVE_ALLREDUCE=auto (default) | p2p | nccl forces one path (benchmarks compare them side by side).
// TPSERVE_TP_SKIP_COLLECTIVES=1 (benchmarks only) skips them: the step time without collectives, wrong results.
//
// The host collective also carries the step plans and notices dead ranks. wait() replaces
// cudaStreamSynchronize: it polls the stream, and when a peer dies, the group is marked failed or the step
// exceeds the collective timeout, it stops the device waits (abort flag, ncclCommAbort) and throws
// NATIVE_TP_FAILED / NATIVE_TP_TIMEOUT, so nothing hangs.
#pragma once
#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <vector>

#include "../src/collective.h"
#include "kernels/allreduce.cuh"
#include "nccl_api.h"

namespace tpserve {

class GpuComm {
 public:
  /** Collective over every rank's host collective: exchanges IPC handles and the NCCL id. Throws NativeError. */
  GpuComm(std::shared_ptr<Collective> host, int device);
  ~GpuComm();
  GpuComm(const GpuComm&) = delete;
  GpuComm& operator=(const GpuComm&) = delete;

  int rank() const { return rank_; }
  int world() const { return world_; }
  /** x (n floats, device) becomes the sum over ranks; enqueued on `s` (capturable into a CUDA graph). */
  void allReduceSum(float* x, size_t n, cudaStream_t s);
  /**
   * partial (rows, dim) becomes the sum over ranks; when the p2p path can fuse it (decode sizes), also x += that
   * sum and y = rmsnorm(x) * w (and the GEMV's prepared input xp when set) in the same kernel, and returns true;
   * false: only the sum was done and the caller normalizes.
   */
  bool allReduceAddNorm(float* partial, float* x, const float* w, float* y, __half* xp, int rows, int dim, float eps,
                        cudaStream_t s);
  /**
   * Folded norm (decode, rows <= 16, cuda::fold_parts(dim) > 0): x += the sum over ranks of `partial`, xp = the
   * next GEMV's prepared input of x * w and ssq the sums of squares it scales by (cuda::all_reduce_fold): one kernel
   * on the p2p path; NCCL's all-reduce and then the same kernel without the exchange otherwise. Skipped with the
   * other collectives under TPSERVE_TP_SKIP_COLLECTIVES (the fold then costs nothing either).
   */
  void allReduceFold(float* partial, float* x, const float* w, __half* xp, float* ssq, int rows, int dim,
                     cudaStream_t s);
  /**
   * The p2p group for an exchange of `floats` per rank that a kernel does itself (the one-token GEMV's epilogue,
   * Int4Epilogue::comm), or null when that message goes another way (NCCL, or collectives skipped).
   */
  const cuda::P2pGroup* p2pGroup(size_t floats) const {
    return !skip_ && useP2p(floats) && floats <= g_.cap ? &g_ : nullptr;
  }
  /** out (rows, world * cols) = every rank's `local` (rows, cols) side by side; `scratch` holds world*rows*cols. */
  void gatherCols(const float* local, int rows, int cols, float* out, float* scratch, cudaStream_t s);
  /**
   * A row-parallel act-order shard's decode input on the p2p path (cuda::p2p_gather_xprep): every rank's `local`
   * (rows <= 16, cols) gathered, stored column i taking column perm[i] of the whole, into the prepared input xp
   * (outCols columns). False, with nothing enqueued, where that path does not apply (NCCL, collectives skipped,
   * larger messages, TPSERVE_TP_GATHER_XPREP=0): gatherCols and then the permute and prepare kernels.
   */
  bool gatherPrepared(const float* local, int rows, int cols, const int32_t* perm, int outCols, __half* xp,
                      cudaStream_t s);
  /** Waits for `s` (or only until `until`, an event recorded on it) with the bounds described above. */
  void wait(cudaStream_t s, cudaEvent_t until = nullptr);
  /** "p2p (CUDA IPC) up to 2 MiB, NCCL 2.28.3 above". */
  std::string describe() const;

 private:
  bool useP2p(size_t floats) const;
  void setupP2p(int device);
  static size_t traceBytes();
  void writeTrace();
  void setupNccl();
  void ncclCheck(nccl::Result r, const char* what);
  [[noreturn]] void failGroup(const char* code, const std::string& why, cudaStream_t s = nullptr);

  std::shared_ptr<Collective> host_;
  int rank_ = 0, world_ = 1, dev_ = 0;
  std::string mode_ = "auto";
  bool skip_ = false;                // TPSERVE_TP_SKIP_COLLECTIVES=1 (benchmarks: the step without its collectives)
  bool gatherXprep_ = true;          // TPSERVE_TP_GATHER_XPREP=0: gatherPrepared declines (A/B)
  bool sharedGpu_ = false;           // TPSERVE_TP_SHARED_GPU=1 (tests): ranks may share a GPU, 64 KiB p2p calls
  std::string traceDir_;             // TPSERVE_TP_TRACE_DIR (diagnostics): where writeTrace() puts the exchange trace
  size_t cap_ = (size_t)512 << 10;  // floats per rank and call on the p2p path: 2 MiB (TPSERVE_P2P_MAX_FLOATS)
  // p2p
  bool p2p_ = false;
  std::string p2pWhy_;
  cuda::P2pGroup g_;
  uint8_t* buf_ = nullptr;
  std::vector<void*> opened_;  // peer buffers opened with cudaIpcOpenMemHandle
  cuda::P2pState* state_ = nullptr;
  int* hostFlags_ = nullptr;  // [0] err (mapped pinned memory, set by a failed poll), [1] the abort copy's source
  int* abortDev_ = nullptr;   // the abort flag the polls read (device memory; TPSERVE_P2P_HOST_ABORT=1: hostFlags_[1])
  cudaStream_t abortStream_ = nullptr;  // non-blocking: the abort's copy runs beside the spinning kernels
  // NCCL
  const nccl::Api* nccl_ = nullptr;
  nccl::Comm comm_ = nullptr;
  std::string ncclWhy_;
  int ncclVersion_ = 0;
};

}  // namespace tpserve
