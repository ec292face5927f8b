// The Llama forward engine: weights (float32 or packed int4), a paged float32 KV pool, preallocated workspaces.
#pragma once
#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "collective.h"
#include "kernels.h"
#include "threadpool.h"

namespace tpserve {

struct ModelShape {
  int vocab = 0, hidden = 0, inter = 0, layers = 0, heads = 0, kvHeads = 0, headDim = 0;
  float theta = 10000.f, eps = 1e-5f;
  bool tie = false;
};

struct EngineOptions {
  ModelShape s;
  /** KV pool pages including the reserved page 0; 0 (GPU only): sized at finalize from gpuMemoryUtilization. */
  int numPages = 0, blockSize = 0, maxBatchTokens = 0, threads = 0;
  /** With numPages 0: the fraction (0, 1] of the device's total memory weights, KV pool and workspaces may use. */
  double gpuMemoryUtilization = 0;
  /** The longest context of one sequence (0: the pool's); validate refuses longer ones, and the workspace
   * reserve of a pool sized from memory is bounded with it. */
  int maxContext = 0;
  /** -1: the CPU engine; >= 0: the CUDA device that holds weights, KV pool and workspaces. */
  int device = -1;
  /** KV cache in int8 with per-(token, KV head) scales (kv_int8.cc); CPU engine only. */
  bool kvInt8 = false;
  /** KV cache element type asked for explicitly: f32 (the CPU engine's) or f16 (the GPU engine's, its only one). */
  bool kvF32 = false, kvF16 = false;
  /** Tensor parallelism: this engine holds shard comm->rank() of comm->world(); null or world 1: the whole model. */
  std::shared_ptr<Collective> comm;
};

/** The slice of a dimension of size n that rank r of w holds: [begin, begin + size). */
struct ShardRange {
  int begin = 0, size = 0;
};

/** One layer's int8 K and V pages and their scales. */
struct KvInt8View {
  const int8_t* k;
  const int8_t* v;
  const float* ks;
  const float* vs;
};
/** x (heads, d) -> q int8 and one scale per head (absmax / 127). */
void quantizeKvHeads(const float* x, int heads, int d, int8_t* q, float* scales);
/** attention for token t and head h of one sequence, reading the int8 pool. */
void attentionInt8(const AttnArgs& a, const KvInt8View& kv, int t, int h, float* scratch);

class GpuModel;

/** How a GPU engine sized its KV pool from gpuMemoryUtilization (all zero when numPages was given). */
struct KvSizing {
  double fraction = 0;
  size_t totalBytes = 0;    // the device's memory (cudaMemGetInfo)
  size_t usedBytes = 0;     // in use when the pool was sized: weights, workspaces, the CUDA context, other processes
  size_t reserveBytes = 0;  // held back for what the forward pass allocates later (native/cuda/kv_sizing.cu, kvReserveBytes)
  size_t pageBytes = 0;     // device bytes of one page: K and V of every layer, plus its RoPE table rows
};

/** Device memory as cudaMemGetInfo reports it now (zero on the CPU). */
struct DeviceMemory {
  size_t freeBytes = 0, totalBytes = 0;
};

/** NF4 (bitsandbytes): per block of `block` weights an absmax, as float32 or double-quantized to 8 bits. */
struct Nf4Data {
  bool present = false;
  int block = 0;
  std::vector<float> absmax;             // (blocks) when not double-quantized
  std::vector<uint8_t> absq;             // (blocks) 8-bit codes into nested map, double quantization
  std::vector<float> absScale, nested;   // (blocks/256 rounded up) scales, (256) code values
  float absOffset = 0.f;
  float levels[16] = {};
  size_t bytes() const { return absmax.size() * 4 + absq.size() + absScale.size() * 4 + nested.size() * 4 + 64; }
};

struct Weight {
  bool present = false, int4 = false;
  int rows = 0, cols = 0, group = 0;
  std::vector<float> f;
  std::vector<uint16_t> b;  // dense bf16 weights kept as is on the CPU (exact; half the bytes of f)
  std::vector<uint8_t> q, zeros;
  std::vector<float> scales;
  std::vector<int32_t> perm;  // int4 act-order: stored column i multiplies x[perm[i]] (empty: identity)
  int permCols = 0;  // the input width perm picks from: cols, or the whole input of a row-parallel act-order shard
  Nf4Data nf4;                // NF4 weights (nf4.present); codes live in q (nf4.cc)
  /** The width of the input this weight reads: permCols for an act-order shard that picks from a wider one. */
  int inputCols() const { return permCols ? permCols : cols; }
  Int4View view() const { return {q.data(), scales.data(), zeros.empty() ? nullptr : zeros.data(), rows, cols, group}; }
  size_t bytes() const {
    return f.size() * 4 + b.size() * 2 + q.size() + scales.size() * 4 + zeros.size() + perm.size() * 4 + nf4.bytes();
  }
  /** Row r of a dense weight as float32 (from f or b). */
  void rowF32(size_t r, float* out) const;
};

/** Raw tensor as handed over by JS (pointers valid for the duration of the call). */
struct TensorIn {
  bool int4 = false;
  std::string dtype;  // dense: "f32" | "f16" | "bf16"
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;
  size_t dataBytes = 0;
  int rows = 0, cols = 0, group = 0;  // int4
  const float* scales = nullptr;
  size_t numScales = 0;
  const uint8_t* zeros = nullptr;  // nullptr: symmetric
  size_t numZeros = 0;
  const int32_t* perm = nullptr;  // int4 act-order input permutation (cols entries), nullptr: none
  size_t numPerm = 0;
  int permCols = 0;  // the input width perm picks from (0: cols); wider for a row-parallel act-order shard
  // NF4 (kind "nf4"): data = packed codes, rows/cols as int4; absmax or absq + absScale + nested + absOffset.
  bool nf4 = false;
  int block = 0;
  const float* absmax = nullptr;
  size_t numAbsmax = 0;
  const uint8_t* absq = nullptr;
  size_t numAbsq = 0;
  const float* absScale = nullptr;
  size_t numAbsScale = 0;
  const float* nested = nullptr;
  size_t numNested = 0;
  float absOffset = 0.f;
  const float* levels = nullptr;
  size_t numLevels = 0;
};

/** Sampling parameters of one logits row (services/worker/sampler.ts semantics). */
struct SampleParams {
  float temperature = 0.f;
  int topK = 0;
  float topP = 1.f;
  float minP = 0.f;
  uint64_t seed = 0;
  int position = 0;
};

struct BatchIn {
  std::vector<int32_t> tokens, seqLens, contextLens, blockTables;
  int maxBlocksPerSeq = 0;
  bool all = false;
  /** Output the final-norm hidden states of every token (T x hidden) instead of logits (implies all). */
  bool hidden = false;
  /** One entry per logits row for forwardSample (GPU engines); empty otherwise. */
  std::vector<SampleParams> sampling;
  /**
   * The caller expects to decode the same sequences (or some of them, in the same order) one token further next,
   * with this step's ids as their tokens: a GPU engine may enqueue that step before it returns (decode ahead).
   */
  bool continues = false;
  /** Calibration (engine_quant.cc): layer whose linear-layer inputs are copied to `capture`, then forward stops. */
  int captureLayer = -1;
  float* capture = nullptr;
};

/** Floats per token that a capture writes: inputs of q/k/v, o, gate/up and down (engine_quant.cc). */
int captureWidth(const ModelShape& s);
/** Copies `width` floats per token of `src` (T rows) into column block `site` of a capture buffer. */
void captureSite(const BatchIn& b, const ModelShape& s, int site, const float* src, int T);
/** x (m rows of permCols) permuted for an act-order int4 weight (x itself when it has no permutation); buf holds the
 * copy (m rows of cols). */
const float* permuteInput(const Weight& w, const float* x, int m, std::vector<float>& buf);

/** Copies a bf16 tensor's raw values, checking that the byte length matches the shape. */
void keepBf16(const TensorIn& t, const std::string& name, std::vector<uint16_t>& out);
/** Converts a dense tensor to float32, checking that the byte length matches the shape. */
void toFloat32(const TensorIn& t, const std::string& name, std::vector<float>& out);
/** Validates an int4 tensor and copies it into w. */
void loadInt4(const TensorIn& t, const std::string& name, Weight& w);
/** Validates an NF4 tensor and copies it into w (nf4.cc). */
void loadNf4(const TensorIn& t, const std::string& name, Weight& w);
/** y[t*ldy + r] for r0 <= r < r1 with an NF4 weight: each row dequantized once, then the dense dot kernel. */
void gemmNf4(const KernelTable& dense, const float* x, int m, const Weight& w, float* y, int ldy, int r0, int r1);
/** Validates t.perm (a permutation of 0..cols-1, or absent) and copies it into w.perm (engine_quant.cc). */
void loadPerm(const TensorIn& t, const std::string& prefix, Weight& w);

class Engine {
 public:
  explicit Engine(const EngineOptions& o);
  ~Engine();
  void setTensor(const std::string& name, const TensorIn& t);
  void finalize();
  /** Checks a batch against the engine's limits; returns the number of logits rows. */
  int validate(const BatchIn& b) const;
  /** Runs a validated batch; out has rows x vocab floats. Caller holds mutex(). */
  void forward(const BatchIn& b, float* out);
  /** Like forward, but writes the argmax id of each logits row (ties: lowest id) instead of the logits. */
  void forwardArgmax(const BatchIn& b, int32_t* ids);
  /** Like forward, but samples one id per logits row with b.sampling, where the logits are (GPU engines only). */
  void forwardSample(const BatchIn& b, int32_t* ids);
  bool onGpu() const { return gpu_ != nullptr; }
  void close();
  bool closed() const { return closed_; }
  bool finalized() const { return finalized_; }
  std::mutex& mutex() { return mu_; }
  int threads() const { return pool_ ? pool_->size() : 0; }
  const char* simd() const { return gpu_ ? "cuda" : simdName(simd_); }
  /** "cpu" or the GPU's description. */
  std::string device() const;
  size_t weightBytes() const;
  size_t kvBytes() const;
  /** GPU engines: whether they decode ahead, and the steps the next call took and did not (GpuModel::aheadCounts). */
  bool aheadCounts(long long* hits, long long* misses) const;
  /** Pages the engine accepts in block tables (page 0 included): 0 until a pool sized at finalize exists. */
  int numPages() const { return pages_; }
  /** Lowers the usable pages to n (2 <= n <= numPages()), e.g. to agree with the other ranks of a TP group. */
  void limitPages(int n);
  KvSizing kvSizing() const;
  DeviceMemory deviceMemory() const;
  int vocab() const { return o_.s.vocab; }
  /** Tensor-parallel followers (rank > 0): waits for the leader's next step plan (as long as the leader lives),
   * runs its shard of that forward pass. False when the leader closed the group. Do not hold mutex(). */
  bool follow();
  int tpRank() const { return rank_; }
  int tpWorld() const { return world_; }
  /** This rank's shape: heads, kvHeads, inter and vocab of its shard (the full shape when world is 1). */
  const ModelShape& localShape() const { return ls_; }
  int hiddenSize() const { return o_.s.hidden; }
  const ModelShape& shape() const { return o_.s; }

  /** Per-op wall-time accounting in forward (off by default; one branch per op when off). */
  enum Op { kEmbed, kRmsNorm, kQkv, kRope, kKvWrite, kAttention, kOProj, kResidual, kGateUp, kSilu, kDown,
            kFinalNorm, kLmHead, kInt4Prep, kPoolWait, kForward, kTpComm, kNumOps };
  static const char* opName(int op);
  void setProfiling(bool on);
  bool profiling() const { return profiling_; }
  void resetProfile();
  /** Snapshot: ms and calls per op (pool wait is read from the pool). */
  void profile(double* ms, long long* calls);

 private:
  struct Layer {
    Weight attnNorm, mlpNorm, q, k, v, o, gate, up, down;
  };
  struct Job {
    const Weight* w;
    float* y;
  };
  Weight* lookup(const std::string& name, int& expRows, int& expCols, bool& matrix);
  /** Checks that the shape splits over world ranks and sets ls_ (engine_tp.cc). */
  void setupShards();
  /**
   * Leader: hands the batch to the followers through the collective (engine_tp.cc). argmax: the leader takes each
   * row's argmax (forwardArgmax), so GPU followers take it too and can decode ahead with it (docs/gpu.md).
   */
  void sendPlan(const BatchIn& b, bool argmax);
  void sendStop();
  /** The forward pass proper; the collectives of a TP group run inside it. */
  void forwardLocal(const BatchIn& b, float* out);
  /** A GPU step (through groupStep). */
  void gpuStep(const BatchIn& b, float* out, int32_t* ids, const SampleParams* sampling);
  /**
   * Runs one step of this engine's shard: in a tensor-parallel group the leader first broadcasts the plan, only a
   * following rank may run a step on a follower, and a local failure fails the whole group (its peers are inside
   * the step's collectives).
   */
  void groupStep(const BatchIn& b, const std::function<void()>& run, bool argmax = false);
  /** Embedding rows of this rank's vocab slice, zero elsewhere (engine_tp.cc); the caller sums them over ranks. */
  void embedTokens(const BatchIn& b);
  /** LM head over this rank's vocab slice, gathered into out (rows, vocab) (engine_tp.cc). */
  void lmHead(int rows, float* out);
  /** The input of a row-parallel weight, T rows of this rank's columns: as is, or for a row-parallel act-order shard
   * (permCols wider than cols) every rank's columns gathered side by side into whole rows (engine_tp.cc). */
  const float* gatherInput(const Weight& w, const float* local, int T);
  /** out (rows, world * cols) = every rank's local (rows, cols) side by side; scratch holds world * rows * cols. */
  void gatherCols(const float* local, int rows, size_t cols, float* out, float* scratch);
  void matmuls(const float* x, int m, const Job* jobs, int n);
  void requireReady() const;
  /** int8 KV pool (kv_int8.cc): write one token's K and V at float offset `off` of layer l; a layer's view. */
  void writeKvInt8(int l, size_t off, const float* k, const float* v);
  KvInt8View kvInt8View(int l) const;

  using Clock = std::chrono::steady_clock;
  void tick(Op op) {
    if (!profiling_) return;
    const Clock::time_point now = Clock::now();
    profNs_[op] += std::chrono::duration_cast<std::chrono::nanoseconds>(now - last_).count();
    profCalls_[op]++;
    last_ = now;
  }
  bool profiling_ = false;
  Clock::time_point last_;
  long long profNs_[kNumOps] = {}, profCalls_[kNumOps] = {};

  EngineOptions o_;
  ModelShape ls_;  // this rank's shard of o_.s
  std::shared_ptr<Collective> comm_;
  int rank_ = 0, world_ = 1, vocabBegin_ = 0;
  bool following_ = false;
  std::atomic<bool> stopped_{false};  // a follower received the leader's stop
  std::vector<float> lmLocal_, gathered_, followOut_;
  std::vector<float> wideParts_, wideIn_;  // gatherInput()'s buffers (row-parallel act-order shards)
  std::vector<int32_t> followIds_;  // a GPU follower's argmax of a step the leader takes the argmax of
  Simd simd_;
  std::unique_ptr<GpuModel> gpu_;  // set when o_.device >= 0: weights and forward live on the GPU
  std::unique_ptr<ThreadPool> pool_;
  std::mutex mu_;
  bool finalized_ = false, closed_ = false;
  Weight embed_, finalNorm_, lmHead_;
  std::vector<Layer> layers_;
  std::vector<float> kv_;  // (layers, 2, numPages, blockSize, kvHeads, headDim)
  std::vector<int8_t> kv8_;  // the same layout, int8, when o_.kvInt8
  std::vector<float> kvScale_;  // (layers, 2, numPages, blockSize, kvHeads) when o_.kvInt8
  size_t maxCtx_ = 0;
  int pages_ = 0;  // usable pages (validate); o_.numPages is what the CPU pool holds
  /** Sets pages_ and maxCtx_: the pool's tokens past page 0, or o_.maxContext when lower. */
  void setPages(int n);
  // Workspaces sized for maxBatchTokens.
  std::vector<float> x_, h_, h2_, q_, k_, v_, att_, gate_, up_, cos_, sin_, scratch_;
  std::vector<float> xp_[3], xsum_[3], permx_[3];
  std::vector<int32_t> pos_, seqOf_;
  std::vector<float> argmaxLogits_;  // CPU forwardArgmax's logits
  std::vector<AttnArgs> args_;
};

}  // namespace tpserve
