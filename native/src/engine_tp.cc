// Tensor parallelism in the CPU engine: how the model splits over ranks, the step plan the leader hands to its
// followers, and the vocab-parallel embedding and LM head.
//
// Rank r of w holds (Megatron-style; the loader cuts the same slices from the checkpoint):
//   q, k, v, gate, up   ColumnParallelLinear: Y = X A, A = [A_1 ... A_w] split by output rows; rank r computes Y_r
//                       for its heads (q: heads/w; k, v: kvHeads/w, or one replicated KV head when w > kvHeads)
//                       and its slice of the MLP (inter/w). No communication.
//   o, down             RowParallelLinear: Y = X A with A split by input columns and X already split the same way,
//                       so Y = sum_r X_r A_r: each rank computes its partial sum, then one all-reduce.
//   embed, lm_head      VocabParallelEmbedding: rank r holds rows [r*V/w, (r+1)*V/w). The embedding is an all-reduce
//                       of rows that are zero except on the owning rank (exact); the LM head computes its logits
//                       columns and all-gathers them.
// The residual stream, norms and everything outside the linears are computed redundantly on every rank; the
// all-reduce adds in rank order, so every rank holds bitwise the same activations.
#include <cstring>

#include "engine.h"
#include "errors.h"
#include "gpu_model.h"

namespace tpserve {

namespace {
constexpr int32_t kPlanMagic = 0x54504c4e;  // "TPLN"
enum PlanOp : int32_t { kPlanForward = 1, kPlanStop = 2 };
enum PlanFlags : int32_t { kFlagAll = 1, kFlagHidden = 2, kFlagArgmax = 4, kFlagContinues = 8 };
}  // namespace

void Engine::setupShards() {
  const ModelShape& s = o_.s;
  const int w = world_;
  const std::string tp = "tp " + std::to_string(w);
  auto need = [&](bool ok, const std::string& what) {
    if (!ok) fail("NATIVE_TP_CONFIG", what);
  };
  need(s.heads % w == 0, "numHeads " + std::to_string(s.heads) + " does not split over " + tp +
                             ": tp must divide the number of attention heads");
  need(s.kvHeads % w == 0 || w % s.kvHeads == 0,
       "numKvHeads " + std::to_string(s.kvHeads) + " does not split over " + tp +
           ": tp must divide the KV heads, or be a multiple of them (each KV head is then replicated)");
  need(s.inter % w == 0, "intermediateSize " + std::to_string(s.inter) + " does not split over " + tp);
  need(s.vocab % w == 0, "vocabSize " + std::to_string(s.vocab) + " does not split over " + tp);
  ls_.heads = s.heads / w;
  ls_.kvHeads = s.kvHeads >= w ? s.kvHeads / w : 1;
  ls_.inter = s.inter / w;
  ls_.vocab = s.vocab / w;
  vocabBegin_ = rank_ * ls_.vocab;
}

void Engine::sendPlan(const BatchIn& b, bool argmax) {
  const int T = (int)b.tokens.size(), S = (int)b.seqLens.size(), mb = b.maxBlocksPerSeq;
  // Decoding ahead in a group: every rank enqueues the same step at the same point, so the followers take the
  // leader's decision (its switch, its mode), not their own.
  const bool ahead = gpu_ && gpu_->willDecodeAhead(b, argmax);
  const int32_t flags = (b.all ? kFlagAll : 0) | (b.hidden ? kFlagHidden : 0) | (argmax ? kFlagArgmax : 0) |
                        (ahead ? kFlagContinues : 0);
  int32_t hdr[8] = {kPlanMagic, kPlanForward, T, S, mb, flags, 0, 0};
  comm_->broadcast(hdr, sizeof hdr, 0);
  std::vector<int32_t> payload;
  payload.reserve((size_t)T + 2 * S + (size_t)S * mb);
  payload.insert(payload.end(), b.tokens.begin(), b.tokens.end());
  payload.insert(payload.end(), b.seqLens.begin(), b.seqLens.end());
  payload.insert(payload.end(), b.contextLens.begin(), b.contextLens.end());
  payload.insert(payload.end(), b.blockTables.begin(), b.blockTables.end());
  comm_->broadcast(payload.data(), payload.size() * sizeof(int32_t), 0);
}

void Engine::sendStop() {
  int32_t hdr[8] = {kPlanMagic, kPlanStop, 0, 0, 0, 0, 0, 0};
  try {
    comm_->broadcast(hdr, sizeof hdr, 0, 2000);
  } catch (const std::exception&) {
    // Shutting down: a follower that is gone or busy learns it from the failed group instead.
  }
}

bool Engine::follow() {
  if (world_ < 2 || rank_ == 0)
    fail("NATIVE_INVALID_ARG", "follow() is for the followers (rank > 0) of a tensor-parallel group");
  std::shared_ptr<Collective> comm = comm_;
  {
    std::lock_guard<std::mutex> lk(mu_);
    requireReady();
  }
  int32_t hdr[8] = {};
  comm->broadcast(hdr, sizeof hdr, 0, 0);  // idle: wait as long as the leader lives
  if (hdr[0] != kPlanMagic || (hdr[1] != kPlanForward && hdr[1] != kPlanStop)) {
    comm->abort("rank " + std::to_string(rank_) + " received a corrupt step plan header");
    fail("NATIVE_TP_FAILED", "corrupt step plan header from the leader");
  }
  if (hdr[1] == kPlanStop) {
    stopped_ = true;
    return false;
  }
  const int T = hdr[2], S = hdr[3], mb = hdr[4];
  if (T < 1 || T > o_.maxBatchTokens || S < 1 || S > T || mb < 1 || mb > (1 << 20)) {
    comm->abort("rank " + std::to_string(rank_) + " received a step plan outside its limits (different "
                "--max-batch-tokens on the ranks?)");
    fail("NATIVE_TP_FAILED", "step plan of " + std::to_string(T) + " tokens is outside this rank's limits");
  }
  std::vector<int32_t> payload((size_t)T + 2 * S + (size_t)S * mb);
  comm->broadcast(payload.data(), payload.size() * sizeof(int32_t), 0);
  BatchIn b;
  const int32_t* p = payload.data();
  b.tokens.assign(p, p + T), p += T;
  b.seqLens.assign(p, p + S), p += S;
  b.contextLens.assign(p, p + S), p += S;
  b.blockTables.assign(p, p + (size_t)S * mb);
  b.maxBlocksPerSeq = mb;
  b.all = (hdr[5] & kFlagAll) != 0, b.hidden = (hdr[5] & kFlagHidden) != 0;
  b.continues = (hdr[5] & kFlagContinues) != 0;
  std::lock_guard<std::mutex> lk(mu_);
  int rows;
  try {
    rows = validate(b);
  } catch (const NativeError& e) {
    comm->abort("rank " + std::to_string(rank_) + " rejected the leader's step plan: " + e.what());
    throw;
  }
  // A GPU follower keeps its logits on the device (only the leader samples), but takes the argmax where the leader
  // does, as the tokens of a step decoded ahead; the CPU one fills a host buffer.
  if (!gpu_) followOut_.resize((size_t)rows * (b.hidden ? o_.s.hidden : o_.s.vocab));
  const bool argmax = gpu_ && (hdr[5] & kFlagArgmax) != 0;
  if (argmax) followIds_.resize((size_t)rows);
  following_ = true;
  try {
    if (gpu_) gpuStep(b, nullptr, argmax ? followIds_.data() : nullptr, nullptr);
    else forward(b, followOut_.data());
  } catch (...) {
    following_ = false;
    throw;
  }
  following_ = false;
  return true;
}

void Engine::embedTokens(const BatchIn& b) {
  const size_t H = (size_t)o_.s.hidden, T = b.tokens.size();
  for (size_t t = 0; t < T; t++) {
    const int tok = b.tokens[t] - vocabBegin_;
    if (tok >= 0 && tok < ls_.vocab) embed_.rowF32((size_t)tok, &x_[t * H]);
    else std::memset(&x_[t * H], 0, H * sizeof(float));
  }
}

void Engine::lmHead(int rows, float* out) {
  const Weight* w = lmHead_.present ? &lmHead_ : &embed_;
  if (world_ == 1) {
    const Job head[1] = {{w, out}};
    matmuls(h_.data(), rows, head, 1);
    tick(kLmHead);
    return;
  }
  const Job head[1] = {{w, lmLocal_.data()}};  // (rows, vocab / world): this rank's logits columns
  matmuls(h_.data(), rows, head, 1);
  tick(kLmHead);
  gatherCols(lmLocal_.data(), rows, (size_t)ls_.vocab, out, gathered_.data());
}

void Engine::gatherCols(const float* local, int rows, size_t cols, float* out, float* scratch) {
  const size_t full = cols * (size_t)world_;
  comm_->allGather(local, (size_t)rows * cols * sizeof(float), scratch);  // (world, rows, cols)
  for (int j = 0; j < world_; j++)
    for (int r = 0; r < rows; r++)
      std::memcpy(out + (size_t)r * full + (size_t)j * cols, scratch + ((size_t)j * rows + r) * cols,
                  cols * sizeof(float));
  tick(kTpComm);
}

const float* Engine::gatherInput(const Weight& w, const float* local, int T) {
  if (w.permCols <= w.cols) return local;
  const size_t full = (size_t)T * (size_t)w.permCols;
  if (wideParts_.size() < full) wideParts_.resize(full), wideIn_.resize(full);
  gatherCols(local, T, (size_t)w.cols, wideIn_.data(), wideParts_.data());
  return wideIn_.data();
}

}  // namespace tpserve
