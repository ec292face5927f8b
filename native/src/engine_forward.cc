// Batch validation and the Llama forward pass.
#include <algorithm>
#include <cmath>
#include <functional>
#include <cstring>

#include "engine.h"
#include "gpu_model.h"
#include "errors.h"

namespace tpserve {

void Engine::requireReady() const {
  if (closed_) fail("NATIVE_CLOSED", "engine is closed: create a new Engine");
  if (!finalized_) fail("NATIVE_NOT_FINALIZED", "engine is not finalized: set every tensor, then call finalize()");
}

int Engine::validate(const BatchIn& b) const {
  requireReady();
  const size_t T = b.tokens.size(), S = b.seqLens.size();
  const std::string mbt = std::to_string(o_.maxBatchTokens);
  if (T == 0) fail("NATIVE_INVALID_ARG", "batch.tokens is empty: expected 1.." + mbt + " tokens");
  if (T > (size_t)o_.maxBatchTokens)
    fail("NATIVE_INVALID_ARG", "batch has " + std::to_string(T) + " tokens, more than maxBatchTokens " + mbt);
  for (size_t i = 0; i < T; i++)
    if (b.tokens[i] < 0 || b.tokens[i] >= o_.s.vocab)
      fail("NATIVE_INVALID_ARG", "batch.tokens[" + std::to_string(i) + "] = " + std::to_string(b.tokens[i]) +
                                     " is out of range, expected 0.." + std::to_string(o_.s.vocab - 1));
  if (S == 0) fail("NATIVE_INVALID_ARG", "batch.seqLens is empty: expected one entry per sequence");
  if (b.contextLens.size() != S)
    fail("NATIVE_SHAPE", "batch.contextLens has " + std::to_string(b.contextLens.size()) +
                             " entries, expected one per sequence (" + std::to_string(S) + ")");
  if (b.maxBlocksPerSeq <= 0) fail("NATIVE_INVALID_ARG", "batch.maxBlocksPerSeq must be a positive integer");
  if (b.blockTables.size() != S * (size_t)b.maxBlocksPerSeq)
    fail("NATIVE_SHAPE", "batch.blockTables has " + std::to_string(b.blockTables.size()) +
                             " entries, expected numSeqs * maxBlocksPerSeq = " +
                             std::to_string(S * (size_t)b.maxBlocksPerSeq));
  size_t sum = 0;
  for (size_t s = 0; s < S; s++) {
    const std::string ss = std::to_string(s);
    const int len = b.seqLens[s], ctx = b.contextLens[s];
    if (len <= 0) fail("NATIVE_INVALID_ARG", "batch.seqLens[" + ss + "] = " + std::to_string(len) + ", expected >= 1");
    if (ctx < len)
      fail("NATIVE_INVALID_ARG", "batch.contextLens[" + ss + "] = " + std::to_string(ctx) + " is below seqLens[" + ss +
                                     "] = " + std::to_string(len) + ": the context includes this step's tokens");
    if ((size_t)ctx > maxCtx_)
      fail("NATIVE_PAGE_RANGE", "batch.contextLens[" + ss + "] = " + std::to_string(ctx) +
                                    (maxCtx_ == (size_t)o_.maxContext
                                         ? " exceeds the engine's maxContext " + std::to_string(maxCtx_)
                                         : " exceeds the KV pool, at most (numPages-1)*blockSize = " +
                                               std::to_string(maxCtx_)));
    const long long blocks = ((long long)ctx + o_.blockSize - 1) / o_.blockSize;
    if (blocks > b.maxBlocksPerSeq)
      fail("NATIVE_PAGE_RANGE", "sequence " + ss + " needs " + std::to_string(blocks) + " pages for context " +
                                    std::to_string(ctx) + " but maxBlocksPerSeq is " +
                                    std::to_string(b.maxBlocksPerSeq));
    for (long long j = 0; j < blocks; j++) {
      const int p = b.blockTables[s * b.maxBlocksPerSeq + j];
      if (p <= 0 || p >= pages_)
        fail("NATIVE_PAGE_RANGE", "blockTables[" + ss + "][" + std::to_string(j) + "] = " + std::to_string(p) +
                                      ": used pages must be 1.." + std::to_string(pages_ - 1) +
                                      " (page 0 is reserved)");
    }
    sum += len;
  }
  if (sum != T)
    fail("NATIVE_SHAPE", "sum of batch.seqLens is " + std::to_string(sum) + " but batch.tokens has " +
                             std::to_string(T) + " tokens");
  return b.all ? (int)T : (int)S;
}

const char* Engine::opName(int op) {
  static const char* names[kNumOps] = {"embed", "rmsnorm", "qkv_matmul", "rope", "kv_write", "attention",
                                       "o_matmul", "residual", "mlp_gate_up", "silu_mul", "mlp_down",
                                       "final_norm", "lm_head", "int4_prep", "pool_wait", "forward", "tp_comm"};
  return op >= 0 && op < kNumOps ? names[op] : "?";
}

void Engine::setProfiling(bool on) {
  profiling_ = on;
  if (pool_) pool_->setProfiling(on);
  if (gpu_) gpu_->setProfiling(on);
}

void Engine::resetProfile() {
  for (int i = 0; i < kNumOps; i++) profNs_[i] = 0, profCalls_[i] = 0;
  if (pool_) pool_->resetWait();
  if (gpu_) gpu_->resetProfile();
}

void Engine::profile(double* ms, long long* calls) {
  if (gpu_) {
    gpu_->profile(ms, calls);
    ms[kForward] = profNs_[kForward] / 1e6, calls[kForward] = profCalls_[kForward];
    return;
  }
  for (int i = 0; i < kNumOps; i++) ms[i] = profNs_[i] / 1e6, calls[i] = profCalls_[i];
  if (pool_) ms[kPoolWait] = pool_->waitNs() / 1e6, calls[kPoolWait] = pool_->waitCalls();
}

void Engine::matmuls(const float* x, int m, const Job* jobs, int n) {
  const KernelTable& dense = kernelsFor(simd_);
  const KernelTable* tabs[3];
  const float* xps[3];
  const float* xss[3];
  int slotKey[3][2];
  const float* slotSrc[3];
  int slots = 0, total = 0;
  for (int j = 0; j < n; j++) {
    const Weight& w = *jobs[j].w;
    total += w.rows;
    if (!w.int4) continue;
    tabs[j] = &int4KernelsFor(simd_, w.group);
    const float* src = permuteInput(w, x, m, permx_[j]);  // act-order weights read x in their column order
    int s = 0;
    while (s < slots && !(slotKey[s][0] == tabs[j]->chunk && slotKey[s][1] == w.group && slotSrc[s] == src)) s++;
    if (s == slots) {
      tabs[j]->prepI4(src, m, w.cols, w.group, xp_[s].data(), xsum_[s].data());
      slotKey[s][0] = tabs[j]->chunk, slotKey[s][1] = w.group, slotSrc[s] = src;
      slots++;
    }
    xps[j] = xp_[s].data(), xss[j] = xsum_[s].data();
  }
  if (slots) tick(kInt4Prep);
  pool_->parallelFor(total, 16, [&](int b, int e) {
    int off = 0;
    for (int j = 0; j < n; j++) {
      const Weight& w = *jobs[j].w;
      const int lo = std::max(b, off), hi = std::min(e, off + w.rows);
      if (lo < hi) {
        if (w.nf4.present) gemmNf4(dense, x, m, w, jobs[j].y, w.rows, lo - off, hi - off);
        else if (w.int4) tabs[j]->gemmI4(xps[j], xss[j], m, w.view(), jobs[j].y, w.rows, lo - off, hi - off);
        else if (!w.b.empty()) dense.gemmBf16(x, m, w.cols, w.b.data(), jobs[j].y, w.rows, lo - off, hi - off);
        else dense.gemmF32(x, m, w.cols, w.f.data(), jobs[j].y, w.rows, lo - off, hi - off);
      }
      off += w.rows;
    }
  });
}

void Engine::forwardSample(const BatchIn& b, int32_t* ids) {
  requireReady();
  if (!gpu_)
    fail("NATIVE_INVALID_ARG", "forwardSample needs a GPU engine (device \"cuda\"); on the CPU call forward() and "
                               "sample the logits in JavaScript");
  gpuStep(b, nullptr, ids, b.sampling.data());
}

void Engine::forwardArgmax(const BatchIn& b, int32_t* ids) {
  requireReady();
  if (gpu_) {
    gpuStep(b, nullptr, ids, nullptr);
    return;
  }
  const size_t rows = b.all ? b.tokens.size() : b.seqLens.size(), V = (size_t)o_.s.vocab;
  argmaxLogits_.resize(rows * V);
  forward(b, argmaxLogits_.data());
  for (size_t r = 0; r < rows; r++) {
    const float* row = argmaxLogits_.data() + r * V;
    size_t best = 0;
    for (size_t v = 1; v < V; v++)
      if (row[v] > row[best]) best = v;
    ids[r] = (int32_t)best;
  }
}

void Engine::gpuStep(const BatchIn& b, float* out, int32_t* ids, const SampleParams* sampling) {
  const Clock::time_point start = Clock::now();
  groupStep(b, [&] { gpu_->forward(b, out, ids, sampling); }, ids && !sampling && !out);
  if (profiling_) {  // whole passes of every GPU entry (forward, forwardArgmax, forwardSample)
    profNs_[kForward] += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    profCalls_[kForward]++;
  }
}

void Engine::groupStep(const BatchIn& b, const std::function<void()>& run, bool argmax) {
  if (world_ == 1) return run();
  if (rank_ > 0 && !following_)
    fail("NATIVE_INVALID_ARG", "this engine is rank " + std::to_string(rank_) + " of a tensor-parallel group: it runs "
                               "the steps its leader (rank 0) broadcasts, through follow(), not forward()");
  if (rank_ == 0) sendPlan(b, argmax);
  try {
    run();
  } catch (const NativeError& e) {
    // Peers are inside this step's collectives: a local failure must fail the group, not leave them waiting.
    if (e.code.rfind("NATIVE_TP_", 0) != 0) comm_->abort(std::string(e.code) + ": " + e.what());
    throw;
  } catch (const std::exception& e) {
    comm_->abort(std::string("internal error: ") + e.what());
    throw;
  }
}

void Engine::forward(const BatchIn& b, float* out) {
  requireReady();
  if (gpu_) {
    gpuStep(b, out, nullptr, nullptr);
    return;
  }
  groupStep(b, [&] { forwardLocal(b, out); });
}

void Engine::forwardLocal(const BatchIn& b, float* out) {
  Clock::time_point start{};
  if (profiling_) start = last_ = Clock::now();
  const ModelShape& s = ls_;  // this rank's shard (the whole model when world is 1)
  const int T = (int)b.tokens.size(), S = (int)b.seqLens.size(), H = s.hidden, hd = s.headDim;
  const int qd = s.heads * hd, kvd = s.kvHeads * hd, I = s.inter, bs = o_.blockSize;
  const size_t layerStride = (size_t)2 * o_.numPages * bs * kvd, halfStride = layerStride / 2;
  // Positions, sequence of each token, attention views.
  args_.clear();
  for (int sq = 0, t = 0; sq < S; sq++) {
    const int len = b.seqLens[sq], ctx = b.contextLens[sq];
    AttnArgs a{};
    a.q = q_.data() + (size_t)t * qd, a.out = att_.data() + (size_t)t * qd;
    a.blockTable = b.blockTables.data() + (size_t)sq * b.maxBlocksPerSeq;
    a.qLen = len, a.numHeads = s.heads, a.numKvHeads = s.kvHeads, a.headDim = hd, a.blockSize = bs;
    a.contextLen = ctx, a.qStride = qd;
    args_.push_back(a);
    for (int i = 0; i < len; i++, t++) pos_[t] = ctx - len + i, seqOf_[t] = sq;
  }
  ropeTables(pos_.data(), T, hd, s.theta, cos_.data(), sin_.data());
  if (world_ > 1) embedTokens(b);
  else for (int t = 0; t < T; t++) embed_.rowF32((size_t)b.tokens[t], &x_[(size_t)t * H]);
  tick(kEmbed);
  if (world_ > 1) comm_->allReduceSum(x_.data(), (size_t)T * H), tick(kTpComm);  // vocab-parallel embedding
  auto rowsParallel = [&](int rows, const std::function<void(int, int)>& fn) {
    if (rows < 16) fn(0, rows);
    else pool_->parallelFor(rows, 4, fn);
  };
  for (int l = 0; l < s.layers; l++) {
    const Layer& L = layers_[l];
    float* kc = o_.kvInt8 ? nullptr : kv_.data() + l * layerStride;
    float* vc = o_.kvInt8 ? nullptr : kc + halfStride;
    rowsParallel(T, [&](int r0, int r1) {
      rmsNormRows(&x_[(size_t)r0 * H], L.attnNorm.f.data(), &h_[(size_t)r0 * H], r1 - r0, H, s.eps);
    });
    tick(kRmsNorm);
    if (l == b.captureLayer) captureSite(b, s, 0, h_.data(), T);
    const Job qkv[3] = {{&L.q, q_.data()}, {&L.k, k_.data()}, {&L.v, v_.data()}};
    matmuls(h_.data(), T, qkv, 3);
    tick(kQkv);
    ropeApply(q_.data(), T, s.heads, hd, qd, cos_.data(), sin_.data());
    ropeApply(k_.data(), T, s.kvHeads, hd, kvd, cos_.data(), sin_.data());
    tick(kRope);
    for (int t = 0; t < T; t++) {
      const int p = pos_[t];
      const int page = args_[seqOf_[t]].blockTable[p / bs];
      const size_t off = ((size_t)page * bs + p % bs) * kvd;
      if (o_.kvInt8) {
        writeKvInt8(l, off, &k_[(size_t)t * kvd], &v_[(size_t)t * kvd]);
        continue;
      }
      std::memcpy(kc + off, &k_[(size_t)t * kvd], kvd * sizeof(float));
      std::memcpy(vc + off, &v_[(size_t)t * kvd], kvd * sizeof(float));
    }
    tick(kKvWrite);
    const KernelTable& kt = kernelsFor(simd_);
    for (AttnArgs& a : args_) a.k = kc, a.v = vc;
    const int items = T * s.heads;
    auto attn = [&](int part, int parts) {
      float* scratch = scratch_.data() + (size_t)part * maxCtx_;
      for (int i = part; i < items; i += parts) {
        const int t = i / s.heads, h = i % s.heads;
        const AttnArgs& a = args_[seqOf_[t]];
        const int first = (int)((a.q - q_.data()) / qd);
        if (o_.kvInt8) attentionInt8(a, kvInt8View(l), t - first, h, scratch);
        else kt.attention(a, t - first, h, scratch);
      }
    };
    if (items < 2) attn(0, 1);
    else pool_->run(attn);
    tick(kAttention);
    if (l == b.captureLayer) captureSite(b, s, 1, att_.data(), T);
    const Job o[1] = {{&L.o, h2_.data()}};
    matmuls(gatherInput(L.o, att_.data(), T), T, o, 1);
    tick(kOProj);
    if (world_ > 1) comm_->allReduceSum(h2_.data(), (size_t)T * H), tick(kTpComm);  // row-parallel: sum partials
    rowsParallel(T, [&](int r0, int r1) {
      for (size_t i = (size_t)r0 * H; i < (size_t)r1 * H; i++) x_[i] += h2_[i];
      rmsNormRows(&x_[(size_t)r0 * H], L.mlpNorm.f.data(), &h_[(size_t)r0 * H], r1 - r0, H, s.eps);
    });
    tick(kRmsNorm);
    if (l == b.captureLayer) captureSite(b, s, 2, h_.data(), T);
    const Job gu[2] = {{&L.gate, gate_.data()}, {&L.up, up_.data()}};
    matmuls(h_.data(), T, gu, 2);
    tick(kGateUp);
    rowsParallel(T, [&](int r0, int r1) {
      siluMul(&gate_[(size_t)r0 * I], &up_[(size_t)r0 * I], &gate_[(size_t)r0 * I], (size_t)(r1 - r0) * I);
    });
    tick(kSilu);
    if (l == b.captureLayer) {  // calibration wants this layer's inputs only
      captureSite(b, s, 3, gate_.data(), T);
      return;
    }
    const Job d[1] = {{&L.down, h2_.data()}};
    matmuls(gatherInput(L.down, gate_.data(), T), T, d, 1);
    tick(kDown);
    if (world_ > 1) comm_->allReduceSum(h2_.data(), (size_t)T * H), tick(kTpComm);
    rowsParallel(T, [&](int r0, int r1) {
      for (size_t i = (size_t)r0 * H; i < (size_t)r1 * H; i++) x_[i] += h2_[i];
    });
    tick(kResidual);
  }
  // Final norm on the rows that produce logits, then the LM head straight into the output.
  const int rows = b.all ? T : S;
  for (int r = 0, t = 0; r < rows; r++) {
    int src = r;
    if (!b.all) t += b.seqLens[r], src = t - 1;
    rmsNormRows(&x_[(size_t)src * H], finalNorm_.f.data(), &h_[(size_t)r * H], 1, H, s.eps);
  }
  tick(kFinalNorm);
  if (b.hidden) {  // embeddings: the final-norm hidden state of every token, no LM head
    std::memcpy(out, h_.data(), (size_t)rows * H * sizeof(float));
    return;
  }
  lmHead(rows, out);  // ticks lm_head (and tp_comm for the gather)
  if (profiling_) {
    profNs_[kForward] += std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();
    profCalls_[kForward]++;
  }
}

}  // namespace tpserve
