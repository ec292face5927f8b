// Collectives of one tensor-parallel group: the interface the engine's forward pass uses, whatever carries the
// bytes. Backend: ShmCollective (ranks of one host, POSIX shared memory; collective_shm.cc). GPU ranks use it for
// the step plans and for setup, and move their activations with GpuComm (native/cuda/gpu_comm.h: CUDA IPC peer
// buffers and NCCL), which works on device pointers inside the GPU stream and is not a Collective.
//
// Every rank calls the same collectives in the same order. A call either completes on every rank or fails with a
// NativeError on every rank that reaches it: a peer that died, a peer that did not arrive within the timeout, or a
// group some rank already marked failed. A failed group stays failed; every later call fails at once.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>

namespace tpserve {

class Collective {
 public:
  virtual ~Collective() = default;
  virtual int rank() const = 0;
  virtual int world() const = 0;
  /** Bound on one collective inside a step (ms); GPU collectives use it too. */
  virtual long timeoutMs() const = 0;

  /** In place: data (n floats) becomes the elementwise sum over ranks, added in rank order (bitwise the same on
   * every rank). */
  virtual void allReduceSum(float* data, size_t n) = 0;
  /** out (world * bytes) = the `bytes` of rank 0, then rank 1, ... */
  virtual void allGather(const void* in, size_t bytes, void* out) = 0;
  /** data (bytes) of `root` is copied into data on every other rank. waitMs < 0: the step timeout; 0: wait as long
   * as every peer is alive (a follower waiting for the leader's next step plan). */
  virtual void broadcast(void* data, size_t bytes, int root, long waitMs = -1) = 0;

  /**
   * How long a wait may spin (yielding) before it sleeps: GPU ranks, whose cores are otherwise idle, spin so that a
   * follower starts its next step microseconds after the leader's plan instead of after a wake-up.
   */
  virtual void setSpinMicros(long us) = 0;
  /** Marks the group failed for every rank (first reason wins); later calls throw NATIVE_TP_FAILED. */
  virtual void abort(const std::string& reason) = 0;
  /** Empty while healthy, else why the group failed. Cheap; also notices dead peers. */
  virtual std::string failure() = 0;
};

}  // namespace tpserve
