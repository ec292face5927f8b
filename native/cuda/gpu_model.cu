// GpuModel on CUDA: device weights (device_weight.h), a float32 paged KV pool sized at construction or from
// gpuMemoryUtilization at finalize, workspaces for maxBatchTokens, tensor-parallel collectives (gpu_comm.h), and the
// Llama forward pass as kernel launches on one stream (captured as CUDA graphs for decode).
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <atomic>
#include <map>
#include <vector>

#include "../src/errors.h"
#include "../src/gpu_model.h"
#include "ablate.h"
#include "cuda_check.h"
#include "decode_ahead.h"
#include "step_ints.h"
#include "step_trace.h"
#include "device_weight.h"
#include "gpu_comm.h"
#include "kv_sizing.h"
#include "kernels/kernels.cuh"
#include "kernels/xprep.cuh"

namespace tpserve {
namespace {

class CudaModel : public GpuModel {
 public:
  CudaModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin)
      : o_(o), dev_(device), vocab_(o.s.vocab), vocabBegin_(vocabBegin) {
    o_.s = local;  // from here on o_.s is this rank's shard (the whole model at world 1)
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      fail("NATIVE_NO_CUDA", "no CUDA device is visible (cudaGetDeviceCount); use device \"cpu\"");
    }
    if (device < 0 || device >= count)
      fail("NATIVE_INVALID_ARG", "CUDA device " + std::to_string(device) + " does not exist; this machine has " +
                                     std::to_string(count));
    CK(cudaSetDevice(dev_));
    CK(cudaGetDeviceProperties(&props_, dev_));
    CK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    if (o.comm && o.comm->world() > 1) comm_ = std::make_unique<GpuComm>(o.comm, dev_);
    trace_.setRank(comm_ ? comm_->rank() : 0);
    const ModelShape& s = o_.s;
    const size_t T = o.maxBatchTokens, H = s.hidden, qd = (size_t)s.heads * s.headDim;
    const size_t kvd = (size_t)s.kvHeads * s.headDim;
    layers_.resize(s.layers);
    staging_.resize(s.layers);
    if (o.numPages > 0) allocPool(o.numPages);  // else finalize() sizes it once the weights are on the device
    x_.alloc(T * H), h_.alloc(T * H), tmp_.alloc(T * H);
    q_.alloc(T * qd), qkv_.alloc(T * (qd + 2 * kvd)), att_.alloc(T * qd);
    const char* g = std::getenv("TPSERVE_CUDA_GRAPHS");
    graphsOn_ = !(g && std::string(g) == "0");
    gu_.alloc(T * 2 * s.inter), act_.alloc(T * s.inter);
    // The decode GEMV's prepared activation (16 tokens of the widest matmul input).
    const size_t widest = std::max<size_t>(std::max<size_t>(H, qd), (size_t)s.inter);
    // Prepared GEMV/GEMM inputs: one step's tokens (the GEMM prepares all of them at once) of the widest input.
    xp_.alloc(cuda::xprep_halves((int)std::max<size_t>(T, 16), (int)((widest + 63) / 64 * 64)));
    xp2_.alloc(xp_.n);
    gemmWs_.alloc((size_t)16 << 20);  // split-k partial sums of the int4 GEMM (64 MB; without room it takes slices)
    logits_.alloc(T * (size_t)vocab_);
    if (comm_) lmLocal_.alloc(T * (size_t)s.vocab);
    ids_.alloc(T);
    foldNorm_ = cuda::detail::env_on("TPSERVE_FOLD_NORM");
    ssq_.alloc((size_t)16 * (H / 16 + 1));  // folded norms: per-block sums of squares of up to 16 tokens
    // Split-k decode GEMVs with a pair epilogue (QKV, gate/up): the two halves' sums (int4_tiled_split.cu).
    splitParts_.alloc((size_t)2 * cuda::kSplitMaxTokens *
                      std::max<size_t>((size_t)(s.heads + 2 * s.kvHeads) * s.headDim, 2 * (size_t)s.inter));
  }

  ~CudaModel() override {
    cudaSetDevice(dev_);
    // A step decoded ahead may still run (in a group: bounded, it throws when a peer failed).
    try {
      if (stream_ && ahead_.valid) sync();
    } catch (...) {
    }
    for (cudaEvent_t e : marks_) cudaEventDestroy(e);
    if (idsDone_) cudaEventDestroy(idsDone_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void upload(const std::string& name, const Weight& w, const std::string& srcDtype) override {
    CK(cudaSetDevice(dev_));
    // q/k/v and gate/up are merged into one weight each at finalize (one matmul instead of three or two):
    // keep host copies until then.
    const size_t dot = name.rfind('.');
    const std::string part = dot == std::string::npos ? name : name.substr(dot + 1);
    if (name.rfind("layers.", 0) == 0 && (part == "q" || part == "k" || part == "v" || part == "gate" || part == "up")) {
      Staging& st = staging_[layerOf(name)];
      Weight* slot = part == "q" ? &st.q : part == "k" ? &st.k : part == "v" ? &st.v : part == "gate" ? &st.gate : &st.up;
      *slot = w;
      st.bf16 = srcDtype == "bf16";
      return;
    }
    DWeight* d = target(name);
    const bool bf16 = srcDtype == "bf16" && w.rows > 1 && name != "embed";
    uploadWeight(*d, w, bf16, cuda::Int4RowOrder::kInOrder, o_.s, stream_);
    if (name == "embed") {
      embedBf16_ = srcDtype == "bf16";
      if (o_.s.tie && embedBf16_) uploadWeight(tiedHead_, w, true, cuda::Int4RowOrder::kInOrder, o_.s, stream_);
    }
  }

  void finalize() override {
    CK(cudaSetDevice(dev_));
    for (int l = 0; l < o_.s.layers; l++) {
      Staging& st = staging_[l];
      // Tiled int4: q/k/v rows packed in rope pairs and gate/up rows in SiLU pairs, so the GEMV's epilogue applies
      // RoPE (and writes the KV cache) or SiLU-and-multiply itself (two launches fewer per layer).
      if (st.q.rows > 0)
        uploadWeight(layers_[l].qkv, mergeRows(l, "q/k/v", {&st.q, &st.k, &st.v}), st.bf16,
                     cuda::Int4RowOrder::kRopePairs, o_.s, stream_);
      if (st.gate.rows > 0)
        uploadWeight(layers_[l].gateUp, mergeRows(l, "gate/up", {&st.gate, &st.up}), st.bf16,
                     cuda::Int4RowOrder::kGateUpPairs, o_.s, stream_);
      st = Staging();
    }
    graphs_.clear();
    if (pages_ == 0) sizePool();
  }

  int numPages() const override { return pages_; }
  KvSizing kvSizing() const override { return sizing_; }
  DeviceMemory deviceMemory() const override {
    DeviceMemory m;
    CK(cudaSetDevice(dev_));
    CK(cudaMemGetInfo(&m.freeBytes, &m.totalBytes));
    return m;
  }

  void forward(const BatchIn& b, float* out, int32_t* ids, const SampleParams* sampling) override {
    CK(cudaSetDevice(dev_));
    const auto traceStart = std::chrono::steady_clock::now();
    trace_.drain();
    const ModelShape& s = o_.s;
    const int T = (int)b.tokens.size(), S = (int)b.seqLens.size();
    const bool decode = !b.all && T == S;  // one new token per sequence (b.hidden implies b.all)
    // Decode steps replay a CUDA graph captured per (batch size, block-table width bucket): one launch instead of
    // ~10 per layer. The width is padded to a multiple of 16 blocks so a graph serves 256 tokens of growth.
    const bool graph = decode && graphsOn_ && !profiling_;
    // Decode ahead (docs/gpu.md): the previous call may have enqueued this very step already. When that step held
    // more sequences than b (some finished meanwhile), rowOf[i] is the logits row of b's sequence i in it; empty
    // rowOf: row i is sequence i.
    const bool ahead = decideAhead(b, ids != nullptr, out != nullptr, sampling != nullptr);
    std::vector<int> rowOf;
    const int bRows = b.all ? T : S;  // the rows b asks for
    int rows = 0;                     // the logits rows on the device
    bool hit = false;
    if (ahead_.valid) {
      ahead_.valid = false;
      hit = mayTakeAhead(ids != nullptr, out != nullptr, sampling != nullptr) && ahead_.match(b, o_.blockSize, rowOf);
      if (hit) {
        rows = ahead_.S, aheadHits_++;
      } else {
        rowOf.clear(), aheadMisses_++;
        sync();  // before any buffer below may be reallocated under that step
      }
    }
    if (!hit) rows = stage(b, graph, 0);
    if (b.hidden) {
      if (out) CK(cudaMemcpyAsync(out, h_.p, (size_t)T * s.hidden * sizeof(float), cudaMemcpyDeviceToHost, stream_));
      sync();
      return;
    }
    if (ids) {
      if (sampling) {
        std::vector<cuda::SamplingRow> rowsHost(rows, cuda::SamplingRow{0.f, 0, 1.f, 0.f, 0, 0});  // rows b lacks: argmax
        for (int r = 0; r < bRows; r++) {
          const SampleParams& q = sampling[r];
          rowsHost[rowOf.empty() ? r : rowOf[r]] = {q.temperature, q.topK, q.topP, q.minP, q.seed, q.position};
        }
        sampleParams_.reserve(rows * sizeof(cuda::SamplingRow));
        sampleWs_.reserve(cuda::sample_workspace_bytes(rows, vocab_));
        CK(cudaMemcpyAsync(sampleParams_.p, rowsHost.data(), rows * sizeof(cuda::SamplingRow),
                           cudaMemcpyHostToDevice, stream_));
        const auto* params = reinterpret_cast<const cuda::SamplingRow*>(sampleParams_.p);
        checkLaunch(cuda::sample_rows(logits_.p, rows, vocab_, params, ids_.p, sampleWs_.p, stream_), "sample_rows");
      } else {
        checkLaunch(cuda::argmax_rows(logits_.p, rows, vocab_, ids_.p, stream_), "argmax_rows");
      }
      if ((size_t)rows > hostIds_.n) sync(), hostIds_.reserve(rows);
      // Into pinned memory, so that the copy does not hold this thread while the next step is enqueued.
      CK(cudaMemcpyAsync(hostIds_.p, ids_.p, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    }
    if (out)
      CK(cudaMemcpyAsync(out, logits_.p, (size_t)rows * vocab_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    if (ahead) {
      if (!idsDone_) CK(cudaEventCreateWithFlags(&idsDone_, cudaEventDisableTiming));
      CK(cudaEventRecord(idsDone_, stream_));
      stage(b, true, 1);
      if (comm_) comm_->wait(stream_, idsDone_);  // bounded, and aware of failed peers
      else CK(cudaEventSynchronize(idsDone_));
    } else {
      sync();
    }
    if (ids)
      for (int i = 0; i < bRows; i++) ids[i] = hostIds_.p[rowOf.empty() ? i : rowOf[i]];
    if (ahead) ahead_.record(b, ids);
    trace_.drain(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - traceStart).count(),
                 hit ? (ahead ? "hit+ahead" : "hit") : (ahead ? "ahead" : "plain"), rows);
    if (profiling_ && !graph) {
      for (int i = 1; i < nMarks_; i++) {
        float ms = 0.f;
        CK(cudaEventElapsedTime(&ms, marks_[i - 1], marks_[i]));
        profMs_[markOp_[i]] += ms, profCalls_[markOp_[i]]++;
      }
    }
  }

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
  bool decideAhead(const BatchIn& b, bool ids, bool out, bool sampled) const {
    const int S = (int)b.seqLens.size();
    if (b.all || (int)b.tokens.size() != S || !b.continues || !ids || out || (comm_ && sampled)) return false;
    // In a group, one sequence only: with 8 or 32 the replays of some batch phases ran 7-12x slower (every p2p
    // collective late in proportion to its size; docs/tensor-parallel.md, "Decode ahead in a group"). Never at 1.
    if (comm_ && S > kGroupAheadMaxSeqs) return false;
    const bool follower = comm_ && comm_->rank() > 0;
    if (!follower && (!aheadOn_ || !graphsOn_ || profiling_)) return false;
    if (!DecodeAhead::possible(b, o_.blockSize)) return false;
    // A step taken on a subset of its sequences leaves the ids on the device out of b's order: not from there.
    std::vector<int> rowOf;
    return !(ahead_.valid && mayTakeAhead(ids, out, sampled) && ahead_.match(b, o_.blockSize, rowOf) &&
             !rowOf.empty());
  }

  /** Whether a call may take the step decoded ahead (if it matches): ids wanted, no logits, argmax in a group. */
  bool mayTakeAhead(bool ids, bool out, bool sampled) const { return ids && !out && !(comm_ && sampled); }

  void setProfiling(bool on) override { profiling_ = on; }
  void resetProfile() override {
    for (int i = 0; i < Engine::kNumOps; i++) profMs_[i] = 0, profCalls_[i] = 0;
  }
  void profile(double* ms, long long* calls) const override {
    for (int i = 0; i < Engine::kNumOps; i++) ms[i] = profMs_[i], calls[i] = profCalls_[i];
  }

  size_t weightBytes() const override {
    size_t n = embed_.bytes() + finalNorm_.bytes() + lmHead_.bytes() + tiedHead_.bytes();
    for (const Layer& Ly : layers_)
      n += Ly.attnNorm.bytes() + Ly.mlpNorm.bytes() + Ly.qkv.bytes() + Ly.o.bytes() + Ly.gateUp.bytes() +
           Ly.down.bytes();
    return n;
  }
  size_t kvBytes() const override { return kv_.bytes(); }
  std::string describe() const override {
    return std::string(props_.name) + " (device " + std::to_string(dev_) + ", " +
           std::to_string(props_.multiProcessorCount) + " SMs, " +
           std::to_string((long long)(props_.totalGlobalMem >> 20)) + " MiB)" +
           (comm_ ? "; tp rank " + std::to_string(comm_->rank()) + " of " + std::to_string(comm_->world()) + ", " +
                        comm_->describe()
                  : "") +
           (ablate_ ? " [TPSERVE_ABLATE: kernels left out, results wrong]" : "") +
           (foldNorm_ ? "" : "; RMSNorms not folded (TPSERVE_FOLD_NORM=0)");
  }

 private:
  struct Layer {
    DWeight attnNorm, mlpNorm, qkv, o, gateUp, down;
  };
  struct Staging {
    Weight q, k, v, gate, up;
    bool bf16 = false;
  };

  /**
   * The host side of a forward pass: b's positions, slots, context lengths, logits rows and block tables into a
   * pinned staging buffer, copied to ints_, then the kernels (a graph's replay for decode). ahead = 1 stages the
   * step after b instead (every sequence one position further, decode only); its tokens are this step's ids, copied
   * on the device. Returns the logits rows.
   */
  int stage(const BatchIn& b, bool graph, int ahead) {
    const ModelShape& s = o_.s;
    const int T = (int)b.tokens.size(), S = (int)b.seqLens.size(), bs = o_.blockSize;
    const int mb = graph ? (b.maxBlocksPerSeq + 15) / 16 * 16 : b.maxBlocksPerSeq;
    const int rows = b.all ? T : S;
    const size_t nInts = StepInts::count(T, S, rows, mb);
    // Two staging buffers in turn: the copy from the other one may still be queued behind the step in flight.
    PinnedBuf<int32_t>& host = hostInts_[hostCur_ ^= 1];
    if (nInts > host.n) sync(), host.reserve(nInts);
    Ptrs p{};
    p.T = T, p.S = S, p.mb = mb, p.rows = rows, p.all = b.all, p.hidden = b.hidden;
    allLogits_ = b.all;
    StepInts(host.p, T, S, rows).fill(b, bs, mb, ahead, p.maxCtx, p.maxQ);
    if (graph) p.maxCtx = mb * bs;  // the graph's attention grid is sized for the bucket; lengths come from ctx
    // Buffers a graph points at must not move: growing one drops every captured graph.
    const size_t wsFloats = (cuda::attention_workspace_bytes(T, s.heads, s.headDim, p.maxCtx) + 3) / 4;
    // The NCCL logits gather lands in a scratch buffer first (the p2p one writes the logits directly).
    const size_t gatherFloats = comm_ ? (size_t)rows * vocab_ : 0;
    if (nInts > ints_.n || wsFloats > attnWs_.n || gatherFloats > gatherWs_.n) {
      sync();
      graphs_.clear();
      ints_.reserve(std::max(nInts, ints_.n * 2));
      attnWs_.reserve(std::max(wsFloats, attnWs_.n * 2));
      if (gatherFloats > gatherWs_.n) gatherWs_.reserve(std::max(gatherFloats, gatherWs_.n * 2));
    }
    CK(cudaMemcpyAsync(ints_.p, host.p, nInts * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    if (ahead) CK(cudaMemcpyAsync(ints_.p, ids_.p, (size_t)T * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream_));
    const StepInts d(ints_.p, T, S, rows);
    p.tok = d.tok, p.pos = d.pos, p.slot = d.slot, p.qs = d.qs, p.ctx = d.ctx, p.rowIdx = d.rowIdx, p.bt = d.bt;
    if (graph) {
      const uint64_t key = ((uint64_t)S << 32) | (uint32_t)mb;
      auto it = graphs_.find(key);
      if (it == graphs_.end()) {
        cudaGraph_t g = nullptr;
        CK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
        try {
          enqueue(p);
        } catch (...) {
          cudaStreamEndCapture(stream_, &g);
          if (g) cudaGraphDestroy(g);
          throw;
        }
        CK(cudaStreamEndCapture(stream_, &g));
        cudaGraphExec_t exec = nullptr;
        const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
        cudaGraphDestroy(g);
        CK(e);
        it = graphs_.emplace(key, GraphExec(exec)).first;
      }
      trace_.begin(stream_);
      CK(cudaGraphLaunch(it->second.exec, stream_));
      trace_.end(stream_, ahead ? "ahead" : "now");
    } else {
      nMarks_ = 0;
      enqueue(p);
    }
    return rows;
  }

  /** Device pointers and sizes of one forward pass (what a captured graph bakes in). */
  struct Ptrs {
    int T = 0, S = 0, mb = 0, rows = 0, maxCtx = 0, maxQ = 0;
    bool all = false, hidden = false;
    const int32_t *tok = nullptr, *pos = nullptr, *slot = nullptr, *qs = nullptr, *ctx = nullptr, *rowIdx = nullptr,
                  *bt = nullptr;
  };

  /** Every kernel of one forward pass, up to the logits, on stream_ (captured into a graph for decode). */
  void enqueue(const Ptrs& p) {
    const ModelShape& s = o_.s;
    const int H = s.hidden;
    mark(-1);
    // Vocab-parallel embedding: rows of other ranks' tokens are zero here, and the all-reduce fills them in.
    checkLaunch(cuda::embedding(p.tok, p.T, embed_.f.p, H, x_.p, stream_, vocabBegin_, s.vocab), "embedding");
    mark(Engine::kEmbed);
    allReduce(x_.p, (size_t)p.T * H);
    // Folded RMSNorms (docs/gpu-runs.md run 26): O and down add into x_ in place and prepare the next GEMV's input as
    // x * (norm weight) with per-block sums of squares; QKV and gate/up scale their rows by 1 / rms(x). Decode steps
    // of up to kFoldMaxTokens tokens, every layer in the tiled layout. In a tensor-parallel group O and down write
    // this rank's partial sums, and the all-reduce kernel does the add and the preparation (foldReduce;
    // docs/tensor-parallel.md).
    const bool fold = foldNorm_ && foldable(p);
    const int ssqParts = comm_ ? cuda::fold_parts(H) : H / 16;
    const auto foldIn = [&](cuda::Int4Epilogue& ep) {
      ep.ssqIn = ssq_.p, ep.ssqParts = ssqParts, ep.normCols = H, ep.eps = s.eps;
    };
    const auto foldReduce = [&](const float* normW) {
      comm_->allReduceFold(tmp_.p, x_.p, normW, xp_.p, ssq_.p, p.T, H, stream_);
      mark(Engine::kTpComm);
    };
    const auto foldOut = [&](const float* nextNormW) {
      cuda::Int4Epilogue ep;
      ep.accumulate = true;
      if (nextNormW) ep.normW = nextNormW, ep.xpOut = xp_.p, ep.ssqOut = ssq_.p;
      return ep;
    };
    for (int l = 0; l < s.layers; l++) {
      Layer& Ly = layers_[l];
      cuda::kv_t* kc = kv_.p + (size_t)2 * l * kvPerLayer_;
      cuda::kv_t* vc = kc + kvPerLayer_;
      // Decode-sized steps: the norm and SiLU kernels also write the tiled GEMV's prepared input (xp_).
      const bool prepQkv = p.T <= 16 && Ly.qkv.kind == DWeight::kInt4Tiled;
      // Layers after the first add the previous down projection (summed over the ranks first) to x.
      const bool folded = fold && l > 0;  // this norm's input came prepared from the previous down GEMV
      if (folded && comm_) foldReduce(Ly.attnNorm.f.p);
      if (!folded && !(ablate_ & kAblNorm)) residualNorm(p.T, l > 0, Ly.attnNorm.f.p, prepQkv ? xp_.p : nullptr);
      if (ablate_ & kAblQkv) {
      } else if (Ly.qkv.kind == DWeight::kInt4Tiled && Ly.qkv.order == cuda::Int4RowOrder::kRopePairs) {
        cuda::Int4Epilogue ep;  // RoPE and the KV-cache write in the GEMV's epilogue
        ep.kind = cuda::Int4Epilogue::kRopeQkv, ep.positions = p.pos, ep.slots = p.slot, ep.q = q_.p;
        ep.kCache = kc, ep.vCache = vc, ep.ropeCos = ropeCos_.p, ep.ropeSin = ropeSin_.p;
        ep.heads = s.heads, ep.kvHeads = s.kvHeads, ep.headDim = s.headDim, ep.splitParts = splitParts_.p;
        if (folded) foldIn(ep);
        matmul(h_.p, Ly.qkv, nullptr, p.T, prepQkv, nullptr, ep);
        mark(Engine::kQkv);
      } else {
        matmul(h_.p, Ly.qkv, qkv_.p, p.T, prepQkv);
        mark(Engine::kQkv);
        checkLaunch(cuda::qkv_rope_kv(qkv_.p, q_.p, p.pos, p.slot, p.T, kc, vc, s.heads, s.kvHeads, s.headDim,
                                      ropeCos_.p, ropeSin_.p, stream_),
                    "qkv_rope_kv");
        mark(Engine::kRope);
      }
      cuda::AttentionArgs a{};
      a.q = q_.p, a.kCache = kc, a.vCache = vc, a.blockTables = p.bt, a.contextLens = p.ctx, a.queryStart = p.qs;
      a.out = att_.p, a.workspace = attnWs_.p, a.numSeqs = p.S, a.maxBlocks = p.mb, a.heads = s.heads;
      a.kvHeads = s.kvHeads, a.headDim = s.headDim, a.blockSize = o_.blockSize, a.maxContext = p.maxCtx;
      a.maxQueryLen = p.maxQ;
      // Decode: attention also writes O's prepared input.
      const bool prepO = p.maxQ == 1 && p.T <= 16 && Ly.o.kind == DWeight::kInt4Tiled;
      if (prepO) a.xpOut = xp2_.p;
      if (!(ablate_ & kAblAttn)) checkLaunch(cuda::attention(a, stream_), "attention");
      mark(Engine::kAttention);
      if (fold && !comm_) matmul(att_.p, Ly.o, x_.p, p.T, prepO, nullptr, foldOut(Ly.mlpNorm.f.p), xp2_.p);
      else if (!(ablate_ & kAblO)) matmul(att_.p, Ly.o, tmp_.p, p.T, prepO, nullptr, cuda::Int4Epilogue(), xp2_.p);
      if (fold && comm_) foldReduce(Ly.mlpNorm.f.p);
      mark(Engine::kOProj);
      const bool prepGu = p.T <= 16 && Ly.gateUp.kind == DWeight::kInt4Tiled;
      const bool prepDown = p.T <= 16 && Ly.down.kind == DWeight::kInt4Tiled && s.inter % 64 == 0;
      if (!fold && !(ablate_ & kAblNorm)) residualNorm(p.T, true, Ly.mlpNorm.f.p, prepGu ? xp_.p : nullptr);
      if (ablate_ & kAblGateUp) {
      } else if (Ly.gateUp.kind == DWeight::kInt4Tiled && Ly.gateUp.order == cuda::Int4RowOrder::kGateUpPairs) {
        cuda::Int4Epilogue ep;  // SiLU-and-multiply in the GEMV's epilogue, which also prepares down's input
        ep.kind = cuda::Int4Epilogue::kSiluPairs, ep.xpOut = prepDown ? xp2_.p : nullptr, ep.splitParts = splitParts_.p;
        if (fold) foldIn(ep);
        matmul(h_.p, Ly.gateUp, act_.p, p.T, prepGu, nullptr, ep);
        mark(Engine::kGateUp);
      } else {
        matmul(h_.p, Ly.gateUp, gu_.p, p.T, prepGu);
        mark(Engine::kGateUp);
        checkLaunch(cuda::silu_mul(gu_.p, act_.p, p.T, s.inter, stream_, prepDown ? xp2_.p : nullptr), "silu_mul");
        mark(Engine::kSilu);
      }
      if (fold && !comm_) {
        const float* next = l + 1 < s.layers ? layers_[l + 1].attnNorm.f.p : nullptr;
        matmul(act_.p, Ly.down, x_.p, p.T, prepDown, nullptr, foldOut(next), xp2_.p);
      } else if (!(ablate_ & kAblDown)) {
        matmul(act_.p, Ly.down, tmp_.p, p.T, prepDown, nullptr, cuda::Int4Epilogue(), xp2_.p);
      }
      mark(Engine::kDown);
    }
    // Folded at TP = 1: x_ holds the sum already; in a group the last down's partial sums are still to reduce.
    residualNorm(p.T, !fold || comm_, finalNorm_.f.p, nullptr, Engine::kFinalNorm);
    if (p.hidden) return;  // embeddings: forward() copies h_ out
    const float* head = h_.p;
    if (!p.all && p.T != p.S) {  // gather each sequence's last row
      checkLaunch(cuda::embedding(p.rowIdx, p.rows, h_.p, H, tmp_.p, stream_), "gather");
      head = tmp_.p;
    }
    const DWeight& lm =
        lmHead_.kind != DWeight::kNone ? lmHead_ : (tiedHead_.kind != DWeight::kNone ? tiedHead_ : embed_);
    // Vocab-parallel LM head: this rank's logits columns, then gathered side by side into the full rows.
    float* lo = comm_ ? lmLocal_.p : logits_.p;
    if (allLogits_ && lm.kind == DWeight::kBf16 && p.rows > 16) {
      // Prefill / all-position logits: the fp32-exact GEMV 16 rows at a time (the m > 16 bf16 tensor-core path
      // rounds x to bf16, ~1e-2 on the logits, enough to flip near-ties in the teacher-forced golden checks).
      for (int r0 = 0; r0 < p.rows; r0 += 16)
        matmul(head + (size_t)r0 * H, lm, lo + (size_t)r0 * s.vocab, std::min(16, p.rows - r0));
    } else {
      matmul(head, lm, lo, p.rows);
    }
    mark(Engine::kLmHead);
    if (comm_) {
      comm_->gatherCols(lmLocal_.p, p.rows, s.vocab, logits_.p, gatherWs_.p, stream_);
      mark(Engine::kTpComm);
    }
  }

  /** The KV pool of `pages` pages (page 0 included, never written) and the RoPE tables of every position in it. */
  void allocPool(int pages) {
    const ModelShape& s = o_.s;
    kvPerLayer_ = (size_t)pages * o_.blockSize * s.kvHeads * s.headDim;
    kv_.alloc(2 * kvPerLayer_ * s.layers);
    CK(cudaMemset(kv_.p, 0, kv_.bytes()));
    // cos/sin of every position the pool can hold, from the CPU engine's own ropeTables (same rotation on both).
    const size_t maxPos = (size_t)(pages - 1) * o_.blockSize, half = s.headDim / 2;
    std::vector<int32_t> positions(maxPos);
    for (size_t p = 0; p < maxPos; p++) positions[p] = (int32_t)p;
    std::vector<float> cosT(maxPos * half), sinT(maxPos * half);
    ropeTables(positions.data(), (int)maxPos, s.headDim, s.theta, cosT.data(), sinT.data());
    ropeCos_.upload(cosT.data(), cosT.size()), ropeSin_.upload(sinT.data(), sinT.size());
    pages_ = pages;
  }

  /** gpuMemoryUtilization: the pool sized by kv_sizing.h once the weights are on the device. */
  void sizePool() {
    size_t freeB = 0, totalB = 0;
    CK(cudaMemGetInfo(&freeB, &totalB));
    KvBudget b;
    b.s = o_.s, b.blockSize = o_.blockSize, b.maxBatchTokens = o_.maxBatchTokens, b.maxContext = o_.maxContext;
    b.vocab = vocab_, b.tpGather = comm_ != nullptr;
    allocPool(kvPagesFromUtilization(b, o_.gpuMemoryUtilization, freeB, totalB,
                                     std::string(props_.name) + " (device " + std::to_string(dev_) + ")", &sizing_));
  }

  /**
   * Whether a step can take the folded RMSNorms: decode of up to kFoldMaxTokens, every layer tiled; in a group also
   * a hidden size the all-reduce kernel folds (cuda::fold_parts) and TPSERVE_TP_FOLD not 0.
   */
  bool foldable(const Ptrs& p) const {
    const ModelShape& s = o_.s;
    if (ablate_ || p.T > kFoldMaxTokens || p.maxQ != 1 || p.all) return false;
    if (comm_ && (!tpFold_ || cuda::fold_parts(s.hidden) == 0)) return false;
    if (s.hidden % 64 != 0 || s.inter % 64 != 0) return false;
    for (const Layer& Ly : layers_)
      if (Ly.qkv.kind != DWeight::kInt4Tiled || Ly.qkv.order != cuda::Int4RowOrder::kRopePairs ||
          Ly.gateUp.kind != DWeight::kInt4Tiled || Ly.gateUp.order != cuda::Int4RowOrder::kGateUpPairs ||
          Ly.o.kind != DWeight::kInt4Tiled || Ly.down.kind != DWeight::kInt4Tiled)
        return false;
    return true;
  }

  /** Tensor parallelism: x (n floats) becomes the sum over the group's ranks. */
  void allReduce(float* x, size_t n) {
    if (!comm_) return;
    comm_->allReduceSum(x, n, stream_);
    mark(Engine::kTpComm);
  }

  /**
   * h_ = rmsnorm(x_ += tmp_) * w (x_ alone when !residual), and the GEMV's prepared input when xp is set. In a
   * tensor-parallel group tmp_ holds this rank's partial sum of a row-parallel layer: it is all-reduced first, in
   * the same kernel as the norm where the p2p path can.
   */
  void residualNorm(int T, bool residual, const float* w, __half* xp, int op = Engine::kRmsNorm) {
    const int H = o_.s.hidden;
    if (residual && comm_) {
      const bool fused = comm_->allReduceAddNorm(tmp_.p, x_.p, w, h_.p, xp, T, H, o_.s.eps, stream_);
      mark(Engine::kTpComm);
      if (fused) return;
    }
    checkLaunch(cuda::rmsnorm(x_.p, residual ? tmp_.p : nullptr, w, h_.p, T, H, o_.s.eps, stream_, xp), "rmsnorm");
    mark(op);
  }

  /** Waits for the stream; in a group, bounded and aware of failed peers (GpuComm::wait). */
  void sync() {
    if (comm_) comm_->wait(stream_);
    else CK(cudaStreamSynchronize(stream_));
  }

  /** While profiling: an event after the op just enqueued (op -1: the start). */
  void mark(int op) {
    if (!profiling_) return;
    if (nMarks_ >= (int)marks_.size()) {
      cudaEvent_t e;
      CK(cudaEventCreate(&e));
      marks_.push_back(e), markOp_.push_back(0);
    }
    markOp_[nMarks_] = op < 0 ? 0 : op;
    CK(cudaEventRecord(marks_[nMarks_], stream_));
    nMarks_++;
  }

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

  DWeight* target(const std::string& name) {
    if (name == "embed") return &embed_;
    if (name == "lm_head") return &lmHead_;
    if (name == "final_norm") return &finalNorm_;
    Layer& Ly = layers_[layerOf(name)];
    const std::string part = name.substr(name.find('.', 7) + 1);
    if (part == "attn_norm") return &Ly.attnNorm;
    if (part == "mlp_norm") return &Ly.mlpNorm;
    if (part == "o") return &Ly.o;
    if (part == "down") return &Ly.down;
    fail("NATIVE_INVALID_ARG", "tensor '" + name + "' has no place in the GPU model");
  }

  /** y = x W^T (+ residual). xpReady: xp_ holds x prepared for the tiled int4 GEMV (written by its producer). */
  void matmul(const float* x, const DWeight& w, float* y, int m, bool xpReady = false,
              const float* residual = nullptr, const cuda::Int4Epilogue& ep = cuda::Int4Epilogue(),
              __half* xpIn = nullptr) {
    // All-position passes (teacher-forced checks, perplexity, prompt logprobs): near-fp32 activations in the int4
    // GEMV (8-token slices). Serving prefill and decode take 16-token slices (fp16 activations, 2e-4 relative).
    const bool exact = allLogits_;
    if (residual && w.kind != DWeight::kInt4Tiled) fail("NATIVE_INTERNAL", "residual matmul needs a tiled weight");
    switch (w.kind) {
      case DWeight::kInt4Tiled: {
        const cuda::Int4Tiled tw{reinterpret_cast<const uint4*>(w.tq.p), w.scales.p, w.zeros.p, w.rows, w.cols,
                                 w.group};
        checkLaunch(cuda::int4_tiled_matmul(x, xpIn ? xpIn : xp_.p, xpReady, tw, y, m, residual, stream_, exact, ep,
                                            gemmWs_.p, gemmWs_.n),
                    "int4_tiled_matmul");
        break;
      }
      case DWeight::kInt4: {
        cuda::Int4Weight iw{w.q.p, w.scales.p, w.zeros.p, w.rows, w.cols, w.group};
        checkLaunch(cuda::int4_matmul(x, iw, y, m, stream_), "int4_matmul");
        break;
      }
      case DWeight::kBf16:
        checkLaunch(cuda::bf16_matmul(x, w.b.p, w.rows, w.cols, y, m, stream_), "bf16_matmul");
        break;
      case DWeight::kF32:
        checkLaunch(cuda::f32_matmul(x, w.f.p, w.rows, w.cols, y, m, stream_), "f32_matmul");
        break;
      default:
        fail("NATIVE_INTERNAL", "GPU weight missing at forward time");
    }
  }

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
  DevBuf<float> ssq_;
  DevBuf<float> splitParts_;
  DevBuf<int32_t> ints_, ids_;
  DevBuf<uint8_t> sampleParams_, sampleWs_;
  PinnedBuf<int32_t> hostInts_[2];  // staging of the step's integers (step_ints.h), used in turn
  int hostCur_ = 0;
  PinnedBuf<int32_t> hostIds_;  // the step's ids
  DecodeAhead ahead_;  // the step enqueued after the last call's, which the next call takes if it asks for it
  bool aheadOn_ = cuda::detail::env_on("TPSERVE_DECODE_AHEAD");
  static constexpr int kGroupAheadMaxSeqs = 1;  // decode ahead in a tensor-parallel group: steps of this many
  std::atomic<long long> aheadHits_{0}, aheadMisses_{0};  // info() reads them on the JavaScript thread
  cudaEvent_t idsDone_ = nullptr;
  StepTrace trace_;  // TPSERVE_TRACE_STEPS (step_trace.h)
};

}  // namespace

std::unique_ptr<GpuModel> createGpuModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin) {
  return std::make_unique<CudaModel>(o, device, local, vocabBegin);
}

}  // namespace tpserve
