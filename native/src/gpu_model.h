// The GPU side of the engine: weights, KV pool and workspaces in device memory, the forward pass as a sequence of
// CUDA kernels (native/cuda/kernels). Engine validates every tensor and batch on the host first, then hands them
// here. This header is plain C++ so that engine.cc compiles without nvcc; builds without CUDA get a version of
// createGpuModel that refuses with NATIVE_NO_CUDA.
#pragma once
#include <memory>
#include <string>

#include "engine.h"

namespace tpserve {

class GpuModel {
 public:
  virtual ~GpuModel() = default;
  /** Uploads one validated tensor (host copy in `w`; `srcDtype` is the dtype it arrived in). */
  virtual void upload(const std::string& name, const Weight& w, const std::string& srcDtype) = 0;
  /**
   * Every tensor is uploaded: merge and free staging copies. With numPages 0 the first finalize then allocates the
   * KV pool (and its RoPE tables) as large as fits under gpuMemoryUtilization of the device; NATIVE_OOM when that
   * is under 2 pages.
   */
  virtual void finalize() = 0;
  /** Pages the KV pool holds (page 0 included); 0 before a pool sized at finalize exists. */
  virtual int numPages() const = 0;
  virtual KvSizing kvSizing() const = 0;
  virtual DeviceMemory deviceMemory() const = 0;
  /**
   * Runs a batch Engine::validate accepted. Writes rows x vocab logits to `logits` when not null, and one id per
   * row to `ids` when not null: sampled with `sampling[row]` when `sampling` is not null, else the argmax (ties:
   * lowest id).
   */
  virtual void forward(const BatchIn& b, float* logits, int32_t* ids, const SampleParams* sampling) = 0;
  /** Per-op GPU time with CUDA events (Engine::Op indices); decode graphs are not used while it is on. */
  virtual void setProfiling(bool on) = 0;
  virtual void resetProfile() = 0;
  /** Writes ms and calls per op for the forwards run while profiling (ops it does not time stay 0). */
  virtual void profile(double* ms, long long* calls) const = 0;
  virtual size_t weightBytes() const = 0;
  virtual size_t kvBytes() const = 0;
  /** "NVIDIA H200 (device 0, 132 SMs)". */
  virtual std::string describe() const = 0;
  /**
   * Decode ahead: whether this model does it (BatchIn::continues), and the steps enqueued early that the next call
   * took (hits) and did not (misses).
   */
  virtual bool aheadCounts(long long* hits, long long* misses) const {
    *hits = 0, *misses = 0;
    return false;
  }
  /** Leader of a tensor-parallel group: whether forward(b) will decode ahead, argmax: the call takes the argmax. */
  virtual bool willDecodeAhead(const BatchIn& b, bool argmax) const {
    (void)b, (void)argmax;
    return false;
  }
};

/**
 * Creates the model on CUDA device `device`; throws NativeError (NATIVE_NO_CUDA, NATIVE_CUDA, NATIVE_OOM). With a
 * tensor-parallel group (o.comm, world > 1) it holds the shard `local` (o.s is the whole model) whose vocabulary
 * rows start at `vocabBegin`, and every rank must create its model at the same time (the device collectives are set
 * up among the ranks here).
 */
std::unique_ptr<GpuModel> createGpuModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin);

}  // namespace tpserve
