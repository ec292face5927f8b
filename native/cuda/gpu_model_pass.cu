// CudaModel, the forward pass (cuda_model.h): every kernel of one pass in order, the matmul dispatch over weight
// kinds, the norms (folded into the GEMVs for decode), and the tensor-parallel collectives inside the pass.
#include <algorithm>

#include "../src/errors.h"
#include "cuda_check.h"
#include "cuda_model.h"
#include "kernels/xprep.cuh"

namespace tpserve {

void CudaModel::enqueue(const Ptrs& p) {
  const ModelShape& s = o_.s;
  const int H = s.hidden;
  mark(-1);
  // Vocab-parallel embedding: rows of other ranks' tokens are zero here, and the all-reduce fills them in. Where it
  // can (one GPU, or a group on the p2p path), one kernel does the lookup, that all-reduce and layer 0's norm
  // (cuda::embed_rmsnorm, same bits); TPSERVE_EMBED_NORM=0 runs them apart.
  const bool prepQkv0 = p.T <= 16 && layers_[0].qkv.kind == DWeight::kInt4Tiled;
  const cuda::P2pGroup* embGroup = comm_ ? comm_->p2pGroup((size_t)p.T * H) : nullptr;
  const bool embedNorm = embedNormOn_ && !(ablate_ & kAblNorm) && (!comm_ || embGroup);
  if (embedNorm) {
    checkLaunch(cuda::embed_rmsnorm(p.tok, p.T, embed_.f.p, vocabBegin_, s.vocab, layers_[0].attnNorm.f.p, x_.p, h_.p,
                                    prepQkv0 ? xp_.p : nullptr, H, s.eps, embGroup, stream_,
                                    xpMap(layers_[0].qkv)),
                "embed_rmsnorm");
    mark(comm_ ? Engine::kTpComm : Engine::kEmbed);
  } else {
    checkLaunch(cuda::embedding(p.tok, p.T, embed_.f.p, H, x_.p, stream_, vocabBegin_, s.vocab), "embedding");
    mark(Engine::kEmbed);
    allReduce(x_.p, (size_t)p.T * H);
  }
  // Folded RMSNorms (docs/gpu-runs.md run 26): O and down add into x_ in place and prepare the next GEMV's input as
  // x * (norm weight) with per-block sums of squares; QKV and gate/up scale their rows by 1 / rms(x). Decode steps
  // of up to kFoldMaxTokens tokens, every layer in the tiled layout. In a tensor-parallel group O and down write
  // this rank's partial sums, and the all-reduce kernel does the add and the preparation (foldReduce;
  // docs/tensor-parallel.md).
  const bool fold = foldNorm_ && foldable(p);
  // One token in a tensor-parallel group on the p2p path: O and down exchange their partial sums in their own
  // epilogue and fold them there as at TP = 1, so no all-reduce kernel runs between them and the next GEMV
  // (Int4Epilogue::comm; docs/tensor-parallel.md, "The all-reduce inside the GEMV").
  // Groups of up to four (run on 4x H200: Llama-2-70B TP=4 4.66 -> 4.14 ms, docs/gpu-runs.md run 56); eight only
  // with TPSERVE_TP_FUSE=all (no 8-GPU machine has run it).
  const cuda::P2pGroup* arGroup =
      fold && comm_ && p.T == 1 && (comm_->world() <= 4 || tpFuseAll_) && tpFuse() ? comm_->p2pGroup(H) : nullptr;
  const bool fuseAr = arGroup != nullptr && !tpLocalFold_;
  const bool foldInGemv = arGroup != nullptr;  // O and down fold in their epilogue (exchanging, or the diagnostic)
  const int ssqParts = comm_ && !foldInGemv ? cuda::fold_parts(H) : H / 16;
  const auto foldIn = [&](cuda::Int4Epilogue& ep) {
    ep.ssqIn = ssq_.p, ep.ssqParts = ssqParts, ep.normCols = H, ep.eps = s.eps;
  };
  const auto foldReduce = [&](const float* normW) {
    comm_->allReduceFold(tmp_.p, x_.p, normW, xp_.p, ssq_.p, p.T, H, stream_);
    mark(Engine::kTpComm);
  };
  const auto foldOut = [&](const float* nextNormW, const DWeight* next) {
    cuda::Int4Epilogue ep;
    ep.accumulate = true;
    if (nextNormW) ep.normW = nextNormW, ep.xpOut = xp_.p, ep.ssqOut = ssq_.p, ep.xpMap = xpMap(*next);
    if (fuseAr) ep.comm = *arGroup;
    return ep;
  };
  const bool foldHere = fold && (!comm_ || foldInGemv);  // O and down fold in their epilogue
  for (int l = 0; l < s.layers; l++) {
    Layer& Ly = layers_[l];
    cuda::kv_t* kc = kv_.p + (size_t)2 * l * kvPerLayer_;
    cuda::kv_t* vc = kc + kvPerLayer_;
    // Decode-sized steps: the norm and SiLU kernels also write the tiled GEMV's prepared input (xp_).
    const bool prepQkv = p.T <= 16 && Ly.qkv.kind == DWeight::kInt4Tiled;
    // Layers after the first add the previous down projection (summed over the ranks first) to x.
    const bool folded = fold && l > 0;  // this norm's input came prepared from the previous down GEMV
    if (folded && comm_ && !foldInGemv) foldReduce(Ly.attnNorm.f.p);
    if (!folded && !(ablate_ & kAblNorm) && !(l == 0 && embedNorm))
      residualNorm(p.T, l > 0, Ly.attnNorm.f.p, prepQkv ? xp_.p : nullptr, Engine::kRmsNorm, xpMap(Ly.qkv));
    if (ablate_ & kAblQkv) {
    } else if (Ly.qkv.kind == DWeight::kInt4Tiled && Ly.qkv.order == cuda::Int4RowOrder::kRopePairs) {
      cuda::Int4Epilogue ep;  // RoPE and the KV-cache write in the GEMV's epilogue
      ep.kind = cuda::Int4Epilogue::kRopeQkv, ep.positions = p.pos, ep.slots = p.slot, ep.q = q_.p;
      ep.kCache = kc, ep.vCache = vc, ep.ropeCos = ropeCos_.p, ep.ropeSin = ropeSin_.p;
      ep.heads = s.heads, ep.kvHeads = s.kvHeads, ep.headDim = s.headDim, ep.splitParts = splitPairs();
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
    a.kvEarly = !comm_ || attnEarlyGroup_;  // off in a group (kernels.cuh)
    a.group = comm_ != nullptr;
    // Decode: attention also writes O's prepared input.
    const bool prepO = p.maxQ == 1 && p.T <= 16 && Ly.o.kind == DWeight::kInt4Tiled && !Ly.o.wideInput();
    if (prepO) a.xpOut = xp2_.p, a.xpMap = xpMap(Ly.o);
    if (!(ablate_ & kAblAttn)) checkLaunch(cuda::attention(a, stream_), "attention");
    mark(Engine::kAttention);
    const float* oIn = att_.p;
    const bool oPrep = gatherInput(Ly.o, oIn, p.T, xp2_.p) || prepO;
    if (foldHere) matmul(oIn, Ly.o, x_.p, p.T, oPrep, nullptr, foldOut(Ly.mlpNorm.f.p, &Ly.gateUp), xp2_.p);
    else if (!(ablate_ & kAblO)) matmul(oIn, Ly.o, tmp_.p, p.T, oPrep, nullptr, cuda::Int4Epilogue(), xp2_.p);
    if (fold && comm_ && !foldInGemv) foldReduce(Ly.mlpNorm.f.p);
    mark(Engine::kOProj);
    const bool prepGu = p.T <= 16 && Ly.gateUp.kind == DWeight::kInt4Tiled;
    const bool prepDown =
        p.T <= 16 && Ly.down.kind == DWeight::kInt4Tiled && s.inter % 64 == 0 && !Ly.down.wideInput();
    if (!fold && !(ablate_ & kAblNorm))
      residualNorm(p.T, true, Ly.mlpNorm.f.p, prepGu ? xp_.p : nullptr, Engine::kRmsNorm, xpMap(Ly.gateUp));
    if (ablate_ & kAblGateUp) {
    } else if (Ly.gateUp.kind == DWeight::kInt4Tiled && Ly.gateUp.order == cuda::Int4RowOrder::kGateUpPairs) {
      cuda::Int4Epilogue ep;  // SiLU-and-multiply in the GEMV's epilogue, which also prepares down's input
      ep.kind = cuda::Int4Epilogue::kSiluPairs, ep.xpOut = prepDown ? xp2_.p : nullptr, ep.splitParts = splitPairs();
      if (fold) foldIn(ep);
      matmul(h_.p, Ly.gateUp, act_.p, p.T, prepGu, nullptr, ep);
      mark(Engine::kGateUp);
    } else {
      matmul(h_.p, Ly.gateUp, gu_.p, p.T, prepGu);
      mark(Engine::kGateUp);
      checkLaunch(cuda::silu_mul(gu_.p, act_.p, p.T, s.inter, stream_, prepDown ? xp2_.p : nullptr), "silu_mul");
      mark(Engine::kSilu);
    }
    const float* downIn = act_.p;
    const bool downPrep = gatherInput(Ly.down, downIn, p.T, xp2_.p) || prepDown;
    if (foldHere) {
      const bool last = l + 1 == s.layers;
      matmul(downIn, Ly.down, x_.p, p.T, downPrep, nullptr,
             foldOut(last ? nullptr : layers_[l + 1].attnNorm.f.p, last ? nullptr : &layers_[l + 1].qkv), xp2_.p);
    } else if (!(ablate_ & kAblDown)) {
      matmul(downIn, Ly.down, tmp_.p, p.T, downPrep, nullptr, cuda::Int4Epilogue(), xp2_.p);
    }
    mark(Engine::kDown);
  }
  // Folded at TP = 1 (or with the exchange in the GEMV): x_ holds the sum already; in a group otherwise the last
  // down's partial sums are still to reduce.
  residualNorm(p.T, !foldHere, finalNorm_.f.p, nullptr, Engine::kFinalNorm);
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
  } else if (!(ablate_ & kAblHead)) {
    matmul(head, lm, lo, p.rows);
  }
  mark(Engine::kLmHead);
  if (comm_) {
    comm_->gatherCols(lmLocal_.p, p.rows, s.vocab, logits_.p, gatherWs_.p, stream_);
    mark(Engine::kTpComm);
  }
}

bool CudaModel::foldable(const Ptrs& p) const {
  const ModelShape& s = o_.s;
  // Leaving out attention or the LM head keeps the fold's data flow (their outputs are read stale), so those two
  // ablations measure their kernels inside the folded step; the others fall back to unfolded norms.
  if ((ablate_ & ~(unsigned)(kAblAttn | kAblHead)) || p.T > kFoldMaxTokens || p.maxQ != 1 || p.all) return false;
  if (comm_ && (!tpFold_ || cuda::fold_parts(s.hidden) == 0)) return false;
  if (s.hidden % 64 != 0 || s.inter % 64 != 0) return false;
  for (const Layer& Ly : layers_)
    if (Ly.qkv.kind != DWeight::kInt4Tiled || Ly.qkv.order != cuda::Int4RowOrder::kRopePairs ||
        Ly.gateUp.kind != DWeight::kInt4Tiled || Ly.gateUp.order != cuda::Int4RowOrder::kGateUpPairs ||
        Ly.o.kind != DWeight::kInt4Tiled || Ly.down.kind != DWeight::kInt4Tiled)
      return false;
  return true;
}

bool CudaModel::tpFuse() {
  if (tpFuse_ < 0) {
    tpFuse_ = 1;
    for (const Layer& Ly : layers_)
      for (const DWeight* w : {&Ly.o, &Ly.down})
        if (w->kind != DWeight::kInt4Tiled ||
            !cuda::int4_gemv_allreduce_ok(w->rows, w->cols, w->group, w->zeros.p != nullptr, 1))
          tpFuse_ = 0;
  }
  return tpFuse_ == 1;
}

void CudaModel::allReduce(float* x, size_t n) {
  if (!comm_) return;
  comm_->allReduceSum(x, n, stream_);
  mark(Engine::kTpComm);
}

bool CudaModel::gatherInput(const DWeight& w, const float*& x, int T, __half* xp) {
  if (!w.wideInput()) return false;
  // Decode on the p2p path: gathered, permuted and prepared in one kernel, straight into xp (not for all-position
  // passes, whose matmul reads x itself).
  if (T <= 16 && !allLogits_ && w.kind == DWeight::kInt4Tiled && w.cols % 64 == 0 &&
      comm_->gatherPrepared(x, T, w.cols, w.perm.p, w.cols, xp, stream_)) {
    mark(Engine::kTpComm);
    return true;
  }
  comm_->gatherCols(x, T, w.cols, wideIn_.p, wideWs_.p, stream_);  // w.cols: this rank's input columns
  mark(Engine::kTpComm);
  x = wideIn_.p;
  return false;
}

void CudaModel::residualNorm(int T, bool residual, const float* w, __half* xp, int op, const int32_t* map) {
  const int H = o_.s.hidden;
  if (residual && comm_) {
    const bool fused = comm_->allReduceAddNorm(tmp_.p, x_.p, w, h_.p, xp, T, H, o_.s.eps, stream_);
    mark(Engine::kTpComm);
    if (fused) return;
  }
  checkLaunch(cuda::rmsnorm(x_.p, residual ? tmp_.p : nullptr, w, h_.p, T, H, o_.s.eps, stream_, xp, map),
              "rmsnorm");
  mark(op);
}

void CudaModel::matmul(const float* x, const DWeight& w, float* y, int m, bool xpReady, const float* residual,
                       const cuda::Int4Epilogue& ep, __half* xpIn) {
  // All-position passes (teacher-forced checks, perplexity, prompt logprobs): near-fp32 activations in the int4
  // GEMV (8-token slices). Serving prefill and decode take 16-token slices (fp16 activations, 2e-4 relative).
  const bool exact = allLogits_;
  if (residual && w.kind != DWeight::kInt4Tiled) fail("NATIVE_INTERNAL", "residual matmul needs a tiled weight");
  // Act-order int4 (GPTQ desc_act): the weight's columns are stored in group order. On one GPU the producers of a
  // decode-sized prepared input write it in that order (xpMap), so it is read as it is; in a group (whose
  // collectives write it in x's order) it is gathered first; without a prepared input x itself is gathered, and
  // the matmul prepares it. (Down's input comes in order from gate/up, whose rows take down's order at load.)
  // A row-parallel act-order shard's prepared decode input comes in its order from gatherInput's fused kernel.
  if (w.wideInput() && xpReady && m > 16) fail("NATIVE_INTERNAL", "a row-parallel act-order shard takes its input gathered");
  const bool decodeInput = xpReady && m <= 16;
  const bool gather = w.perm.p && !(decodeInput && (xpMap(w) || w.wideInput()));  // else already in w's order
  if (gather && decodeInput) {
    if (cuda::xprep_halves(m, w.cols) > permXp_.n) fail("NATIVE_INTERNAL", "act-order input buffer too small");
    checkLaunch(cuda::permute_xprep(xpIn ? xpIn : xp_.p, m, w.cols, w.perm.p, permXp_.p, stream_), "permute_xprep");
    xpIn = permXp_.p;
  } else if (gather) {
    if ((size_t)m * w.cols > permX_.n) fail("NATIVE_INTERNAL", "act-order input buffer too small");
    checkLaunch(cuda::permute_cols(x, m, w.cols, w.perm.p, permX_.p, stream_, w.permCols), "permute_cols");
    x = permX_.p, xpReady = false;
    // A row-parallel act-order shard's decode input (gathered from every rank, then permuted) is prepared here, for
    // the epilogues that take only a prepared input (the folded norm, the exchange inside the GEMV).
    if (w.wideInput() && m <= 16 && w.kind == DWeight::kInt4Tiled && w.cols % 64 == 0) {
      checkLaunch(cuda::xprep(x, m, w.cols, xpIn ? xpIn : xp_.p, stream_), "xprep");
      xpReady = true;
    }
  }
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

void CudaModel::mark(int op) {
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

}  // namespace tpserve
