// CudaModel: GpuModel (../src/gpu_model.h) on CUDA. Device weights (device_weight.h), a fp16 paged KV pool sized at
// construction or from gpuMemoryUtilization at finalize, workspaces for maxBatchTokens, tensor-parallel collectives
// (gpu_comm.h), and the Llama forward pass as kernel launches on one stream, captured as CUDA graphs for decode.
// Three files define it:
//   gpu_model.cu        a step: forward(), staging the step's integers, graph replay, decoding ahead (docs/gpu.md)
//   gpu_model_pass.cu   the forward pass's kernel sequence (enqueue) and its helpers (matmul, norms, collectives)
//   gpu_model_load.cu   construction, weight upload and merging, the KV pool, describe()
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "../src/gpu_model.h"
#include "ablate.h"
#include "decode_ahead.h"
#include "device_weight.h"
#include "gpu_comm.h"
#include "kernels/kernels.cuh"
#include "kv_sizing.h"
#include "step_trace.h"

namespace tpserve {

class CudaModel : public GpuModel {
 public:
  CudaModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin);

  ~CudaModel() override;

  void upload(const std::string& name, const Weight& w, const std::string& srcDtype) override;

  void finalize() override;

  int numPages() const override { return pages_; }
  KvSizing kvSizing() const override { return sizing_; }
  DeviceMemory deviceMemory() const override;

  void forward(const BatchIn& b, float* out, int32_t* ids, const SampleParams* sampling) override;

  /** Steps this model decoded ahead that the next call took, and those it did not (the GPU's time lost). */
  bool aheadCounts(long long* hits, long long* misses) const override {
    *hits = aheadHits_.load(std::memory_order_relaxed), *misses = aheadMisses_.load(std::memory_order_relaxed);
    return aheadOn_;
  }

  bool willDecodeAhead(const BatchIn& b, bool argmax) const override { return decideAhead(b, argmax, false, false); }

  /**
   * Whether forward(b) enqueues the step after b. In a tensor-parallel group every rank must decide the same (the
   * collectives of the steps pair up in order): the leader decides from its switches before it sends the plan
   * (willDecodeAhead, BatchIn::continues as the followers receive it), the followers take that, and the rest
   * depends only on the batches, which all ranks share.
   */
  bool decideAhead(const BatchIn& b, bool ids, bool out, bool sampled) const;

  /** Whether a call may take the step decoded ahead (if it matches): ids wanted, no logits, argmax in a group. */
  bool mayTakeAhead(bool ids, bool out, bool sampled) const { return ids && !out && !(comm_ && sampled); }

  void setProfiling(bool on) override { profiling_ = on; }
  void resetProfile() override {
    for (int i = 0; i < Engine::kNumOps; i++) profMs_[i] = 0, profCalls_[i] = 0;
  }
  void profile(double* ms, long long* calls) const override {
    for (int i = 0; i < Engine::kNumOps; i++) ms[i] = profMs_[i], calls[i] = profCalls_[i];
  }

  size_t weightBytes() const override;
  size_t kvBytes() const override { return kv_.bytes(); }
  std::string describe() const override;

 private:
  struct Layer {
    DWeight attnNorm, mlpNorm, qkv, o, gateUp, down;
  };
  struct Staging {
    Weight q, k, v, gate, up;
    bool bf16 = false;
    std::vector<int32_t> downOrder;  // an act-order down's permutation, applied to gate and up's rows at finalize
  };

  /**
   * The host side of a forward pass: b's positions, slots, context lengths, logits rows and block tables into a
   * pinned staging buffer, copied to ints_, then the kernels (a graph's replay for decode). ahead = 1 stages the
   * step after b instead (every sequence one position further, decode only); its tokens are this step's ids, copied
   * on the device. ahead = 2 does that without copies: advance_decode() turns ints_ (this step's) into the next
   * step's and writes the ids to hostIds_, then idsDone_ is recorded (before the graph). Returns the logits rows.
   */
  int stage(const BatchIn& b, bool graph, int ahead);

  /** Device pointers and sizes of one forward pass (what a captured graph bakes in). */
  struct Ptrs {
    int T = 0, S = 0, mb = 0, rows = 0, maxCtx = 0, maxQ = 0;
    bool all = false, hidden = false;
    const int32_t *tok = nullptr, *pos = nullptr, *slot = nullptr, *qs = nullptr, *ctx = nullptr, *rowIdx = nullptr,
                  *bt = nullptr;
  };

  /** Every kernel of one forward pass, up to the logits, on stream_ (captured into a graph for decode). */
  void enqueue(const Ptrs& p);

  /** The KV pool of `pages` pages (page 0 included, never written) and the RoPE tables of every position in it. */
  void allocPool(int pages);

  /** gpuMemoryUtilization: the pool sized by kv_sizing.h once the weights are on the device. */
  void sizePool();

  /**
   * Whether a step can take the folded RMSNorms: decode of up to kFoldMaxTokens, every layer tiled; in a group also
   * a hidden size the all-reduce kernel folds (cuda::fold_parts) and TPSERVE_TP_FOLD not 0.
   */
  bool foldable(const Ptrs& p) const;
  /** Whether every O and down weight can exchange its partial sums in the GEMV (cuda::int4_gemv_allreduce_ok). */
  bool tpFuse();

  /** Tensor parallelism: x (n floats) becomes the sum over the group's ranks. */
  void allReduce(float* x, size_t n);

  /**
   * h_ = rmsnorm(x_ += tmp_) * w (x_ alone when !residual), and the GEMV's prepared input when xp is set. In a
   * tensor-parallel group tmp_ holds this rank's partial sum of a row-parallel layer: it is all-reduced first, in
   * the same kernel as the norm where the p2p path can. map: xp's column order (xpMap).
   */
  void residualNorm(int T, bool residual, const float* w, __half* xp, int op = Engine::kRmsNorm,
                    const int32_t* map = nullptr);

  /**
   * Where the producers of w's prepared input put column k: w's inverse act-order permutation on one GPU, null
   * (x's order, gathered by matmul) for weights in order and in a tensor-parallel group.
   */
  const int32_t* xpMap(const DWeight& w) const { return comm_ ? nullptr : w.invPerm.p; }

  /**
   * Waits for the stream (or only until `until`, an event recorded on it); in a group, bounded and aware of failed
   * peers (GpuComm::wait).
   */
  void sync(cudaEvent_t until = nullptr);

  /** While profiling: an event after the op just enqueued (op -1: the start). */
  void mark(int op);

  /** An instantiated graph that destroys itself. */
  struct GraphExec {
    cudaGraphExec_t exec = nullptr;
    explicit GraphExec(cudaGraphExec_t e) : exec(e) {}
    GraphExec(const GraphExec&) = delete;
    GraphExec(GraphExec&& o) noexcept : exec(o.exec) { o.exec = nullptr; }
    ~GraphExec() {
      if (exec) cudaGraphExecDestroy(exec);
    }
  };

  static int layerOf(const std::string& name) { return std::stoi(name.substr(7, name.find('.', 7) - 7)); }

  DWeight* target(const std::string& name);

  /**
   * x (T rows of this rank's input columns) as w takes it: as is, or, for a row-parallel act-order shard
   * (DWeight::wideInput), gathered from every rank into whole rows (x then points at them). True when a decode
   * input went instead straight into xp, gathered, in w's order and prepared (GpuComm::gatherPrepared).
   */
  bool gatherInput(const DWeight& w, const float*& x, int T, __half* xp);
  /** y = x W^T (+ residual). xpReady: xp_ holds x prepared for the tiled int4 GEMV (written by its producer). */
  void matmul(const float* x, const DWeight& w, float* y, int m, bool xpReady = false,
              const float* residual = nullptr, const cuda::Int4Epilogue& ep = cuda::Int4Epilogue(),
              __half* xpIn = nullptr);

  EngineOptions o_;  // o_.s: this rank's shard
  int dev_;
  int vocab_;       // the whole vocabulary (logits rows)
  int vocabBegin_;  // first vocabulary row of this rank's embedding and LM head shard
  std::unique_ptr<GpuComm> comm_;  // tensor parallelism (null at world 1)
  DevBuf<float> lmLocal_, gatherWs_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  DWeight embed_, finalNorm_, lmHead_, tiedHead_;
  bool embedBf16_ = false;
  std::vector<Layer> layers_;
  std::vector<Staging> staging_;
  size_t kvPerLayer_ = 0;
  int pages_ = 0;  // pages of the KV pool (page 0 included); 0 until finalize() sizes it from gpuMemoryUtilization
  KvSizing sizing_;
  DevBuf<cuda::kv_t> kv_;  // K and V of every layer, fp16 (kernels/kv_cache.cuh)
  DevBuf<float> x_, h_, tmp_, q_, qkv_, att_, gu_, act_, logits_, attnWs_, ropeCos_, ropeSin_;
  DevBuf<float> gemmWs_;
  // Act-order int4 weights (GPTQ desc_act): their input gathered into the stored column order before the matmul,
  // prepared (decode steps, permute_xprep) or as floats (permute_cols); allocated at finalize() when some weight
  // has a permutation.
  DevBuf<float> permX_;
  DevBuf<__half> permXp_;
  // A row-parallel act-order shard's whole input, gathered from every rank, and the NCCL gather's scratch.
  DevBuf<float> wideIn_, wideWs_;
  DevBuf<__half> xp_, xp2_;  // prepared GEMV inputs: xp_ from the norms (QKV, gate/up), xp2_ for O and down
  bool allLogits_ = false;  // the forward pass being enqueued wants every position (logits or hidden states)
  std::map<uint64_t, GraphExec> graphs_;
  bool profiling_ = false;
  unsigned ablate_ = ablateFromEnv();  // kernels left out (ablate.h; benchmarks only)
  std::vector<cudaEvent_t> marks_;
  std::vector<int> markOp_;
  int nMarks_ = 0;
  double profMs_[Engine::kNumOps] = {};
  long long profCalls_[Engine::kNumOps] = {};
  bool graphsOn_ = true;
  // Folded RMSNorms in decode steps of up to kFoldMaxTokens (see foldable); TPSERVE_FOLD_NORM=0 turns them off.
  // Above 8 tokens the prepared input is one fp16 column a token (no hi/lo pair) and the fold was not faster.
  static constexpr int kFoldMaxTokens = 8;
  bool foldNorm_ = true;
  bool tpFold_ = cuda::detail::env_on("TPSERVE_TP_FOLD");  // the fold in tensor-parallel groups (foldReduce)
  int tpFuse_ = -1;  // tpFuse(): -1 until asked
  // TPSERVE_TP_FUSE=all: the exchange in the GEMV at any group size, not only up to 4
  bool tpFuseAll_ = cuda::detail::env_is("TPSERVE_TP_FUSE", "all");
  // Benchmarks only (results wrong): in a group, one-token O and down fold into x as at TP = 1, with no exchange
  // (the other collectives run), so the step without the exchanges but with everything else (docs/gpu-runs.md run 77).
  bool tpLocalFold_ = cuda::detail::env_is("TPSERVE_TP_DIAG_LOCAL_FOLD", "1");
  bool attnEarlyGroup_ = cuda::detail::env_is("TPSERVE_ATTN_EARLY", "all");  // AttentionArgs::kvEarly in a group
  DevBuf<float> ssq_;
  bool embedNormOn_ = cuda::detail::env_on("TPSERVE_EMBED_NORM");  // one kernel for embedding (+ all-reduce) + norm
  // The one-token QKV and gate/up GEMVs with k split across two blocks a tile (Int4Epilogue::splitParts and
  // int4_pair_finish) only with TPSERVE_T_SPLIT=1 (or =all); by default they run whole tiles with the pair epilogue
  // inside (int4t_gemv_one), 0.08 ms a step faster on an H200 (docs/gpu-runs.md run 50).
  DevBuf<float> splitParts_;
  bool splitOn_ = cuda::detail::env_is("TPSERVE_T_SPLIT", "1") || cuda::detail::env_is("TPSERVE_T_SPLIT", "all");
  float* splitPairs() const { return splitOn_ ? splitParts_.p : nullptr; }
  DevBuf<int32_t> ints_, ids_;
  DevBuf<uint8_t> sampleParams_, sampleWs_;
  PinnedBuf<int32_t> hostInts_[2];  // staging of the step's integers (step_ints.h), used in turn
  int hostCur_ = 0;
  PinnedBuf<int32_t> hostIds_;  // the step's ids
  DecodeAhead ahead_;  // the step enqueued after the last call's, which the next call takes if it asks for it
  bool aheadOn_ = cuda::detail::env_on("TPSERVE_DECODE_AHEAD");
  bool advanceOn_ = cuda::detail::env_on("TPSERVE_AHEAD_ADVANCE");  // =0: the step ahead staged by copies (A/B)
  struct IntsLayout {
    int T = -1, S = -1, rows = -1, mb = -1;
    bool operator==(const IntsLayout& o) const { return T == o.T && S == o.S && rows == o.rows && mb == o.mb; }
  };
  IntsLayout devInts_;  // the layout of the integers last staged into ints_
  // Decode ahead in a tensor-parallel group: steps of at most this many sequences; any number unless
  // TPSERVE_GROUP_AHEAD_MAX=N caps it (A/B; 1 is the limit sessions 13-24 kept, docs/tensor-parallel.md).
  int groupAheadMaxSeqs_ = [] {
    const int n = cuda::detail::env_int("TPSERVE_GROUP_AHEAD_MAX");
    return n > 0 ? n : 1 << 30;
  }();
  std::atomic<long long> aheadHits_{0}, aheadMisses_{0};  // info() reads them on the JavaScript thread
  cudaEvent_t idsDone_ = nullptr;
  StepTrace trace_;  // TPSERVE_TRACE_STEPS (step_trace.h)
};

}  // namespace tpserve
