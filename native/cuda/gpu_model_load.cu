// CudaModel, loading (cuda_model.h): the device buffers, the weights (q/k/v and gate/up merged into one weight each
// in the int4 tile layout with their fused epilogues' row order), the KV pool and RoPE tables, describe().
#include <algorithm>
#include <cstdlib>
#include <string>
#include <vector>

#include "../src/errors.h"
#include "cuda_check.h"
#include "cuda_model.h"
#include "kernels/xprep.cuh"

namespace tpserve {

CudaModel::CudaModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin)
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

CudaModel::~CudaModel() {
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

void CudaModel::upload(const std::string& name, const Weight& w, const std::string& srcDtype) {
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
  if (name.rfind("layers.", 0) == 0 && part == "down" && !w.perm.empty() && w.permCols <= w.cols) {
    // Act-order down (GPTQ desc_act): its input SiLU(gate) * up comes out in down's stored column order once gate's
    // and up's rows take that order (finalize), so down reads it as it is and no pass gathers it.
    Weight d = w;
    staging_[layerOf(name)].downOrder = std::move(d.perm);
    d.perm.clear();
    uploadWeight(*target(name), d, false, cuda::Int4RowOrder::kInOrder, o_.s, stream_);
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

void CudaModel::finalize() {
  CK(cudaSetDevice(dev_));
  for (int l = 0; l < o_.s.layers; l++) {
    Staging& st = staging_[l];
    // Tiled int4: q/k/v rows packed in rope pairs and gate/up rows in SiLU pairs, so the GEMV's epilogue applies
    // RoPE (and writes the KV cache) or SiLU-and-multiply itself (two launches fewer per layer).
    if (st.q.rows > 0)
      uploadWeight(layers_[l].qkv, mergeRows(l, "q/k/v", {&st.q, &st.k, &st.v}), st.bf16,
                   cuda::Int4RowOrder::kRopePairs, o_.s, stream_);
    if (!st.downOrder.empty() &&
        (st.gate.rows == 0 || !reorderRows(st.gate, st.downOrder) || !reorderRows(st.up, st.downOrder)))
      fail("NATIVE_INVALID_ARG", "layers." + std::to_string(l) +
                                     ".down is act-order (g_idx permuted) and needs gate and up of as many rows as "
                                     "its input columns, int4 or dense, to take its column order on the GPU");
    if (st.gate.rows > 0)
      uploadWeight(layers_[l].gateUp, mergeRows(l, "gate/up", {&st.gate, &st.up}), st.bf16,
                   cuda::Int4RowOrder::kGateUpPairs, o_.s, stream_);
    st = Staging();
  }
  // Act-order weights read their input permuted (matmul): room for one pass's tokens of the widest such input.
  // Row-parallel act-order shards in a group read the whole input, gathered from every rank (gatherInput).
  size_t permCols = lmHead_.perm.p ? (size_t)lmHead_.cols : 0, wideCols = 0;
  for (const Layer& Ly : layers_)
    for (const DWeight* w : {&Ly.qkv, &Ly.o, &Ly.gateUp, &Ly.down}) {
      if (w->perm.p) permCols = std::max(permCols, (size_t)w->cols);
      if (w->wideInput()) wideCols = std::max(wideCols, (size_t)w->permCols);
    }
  const size_t maxT = (size_t)std::max(o_.maxBatchTokens, 16);
  if (permCols) {
    permX_.reserve(maxT * permCols);
    // The prepared input is gathered only in a group: on one GPU its producers write it in the weight's order.
    if (comm_) permXp_.reserve(cuda::xprep_halves(16, (int)((permCols + 63) / 64 * 64)));
  }
  if (wideCols) wideIn_.reserve(maxT * wideCols), wideWs_.reserve(maxT * wideCols);
  graphs_.clear();
  if (pages_ == 0) sizePool();
}

void CudaModel::allocPool(int pages) {
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

void CudaModel::sizePool() {
  size_t freeB = 0, totalB = 0;
  CK(cudaMemGetInfo(&freeB, &totalB));
  KvBudget b;
  b.s = o_.s, b.blockSize = o_.blockSize, b.maxBatchTokens = o_.maxBatchTokens, b.maxContext = o_.maxContext;
  b.vocab = vocab_, b.tpGather = comm_ != nullptr;
  allocPool(kvPagesFromUtilization(b, o_.gpuMemoryUtilization, freeB, totalB,
                                   std::string(props_.name) + " (device " + std::to_string(dev_) + ")", &sizing_));
}

DWeight* CudaModel::target(const std::string& name) {
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

size_t CudaModel::weightBytes() const {
  size_t n = embed_.bytes() + finalNorm_.bytes() + lmHead_.bytes() + tiedHead_.bytes();
  for (const Layer& Ly : layers_)
    n += Ly.attnNorm.bytes() + Ly.mlpNorm.bytes() + Ly.qkv.bytes() + Ly.o.bytes() + Ly.gateUp.bytes() +
         Ly.down.bytes();
  return n;
}

std::string CudaModel::describe() const {
  return std::string(props_.name) + " (device " + std::to_string(dev_) + ", " +
         std::to_string(props_.multiProcessorCount) + " SMs, " +
         std::to_string((long long)(props_.totalGlobalMem >> 20)) + " MiB)" +
         (comm_ ? "; tp rank " + std::to_string(comm_->rank()) + " of " + std::to_string(comm_->world()) + ", " +
                      comm_->describe()
                : "") +
         (ablate_ ? " [TPSERVE_ABLATE: kernels left out, results wrong]" : "") +
         (foldNorm_ ? "" : "; RMSNorms not folded (TPSERVE_FOLD_NORM=0)");
}

}  // namespace tpserve
