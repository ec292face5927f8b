// check_allreduce --chain: what the exchange inside the one-token GEMV (Int4Epilogue::comm) costs in a chain of
// decode GEMVs, apart from the rest of the step (attention, RoPE, the pair epilogues, the host). Each rank (GPUs 0
// and 1 in this process) captures one CUDA graph of `layers` layers of Llama-2-7B's TP = 2 shards: QKV 6144x4096,
// O 4096x2048, gate/up 11008x4096, down 4096x5504, each a plain one-token GEMV but O and down, which fold into the
// residual stream as in the step, with the exchange or (for comparison) without it. Four copies of each weight,
// taken in turn, so the chain streams from DRAM as the step does (more than the 50 MB L2). "O only" runs 2 * layers
// O GEMVs back to back. Microseconds per layer (two exchanges) with and without the exchange, median of replays.
// Benchmark only; check_gemv_fold checks the same kernels' results.
#pragma once
#include <cstdio>
#include <vector>

#include "../kernels/kernels.cuh"
#include "../kernels/xprep.cuh"
#include "int4t_check.cuh"
#include "p2p_check_group.cuh"

namespace {

struct ChainShape {
  int rows, cols;
  bool fold;  // O and down: accumulate into x with the folded norm's producer side (and the exchange when on)
};

struct ChainRank {
  tpserve::check::DevT d;  // every shape's copies: d.t[shape * kChainCopies + copy]
  float *x = nullptr, *w = nullptr, *ssq = nullptr, *y = nullptr;
  __half *xpIn = nullptr, *xpOut = nullptr;
};

constexpr int kChainCopies = 4;

/** One replay's enqueue on rank r: `layers` of the shapes in order (or O alone when oOnly), with or without comm. */
bool chain_enqueue(Group& G, int r, ChainRank& k, const std::vector<ChainShape>& shapes, int layers, bool comm,
                   bool oOnly) {
  for (int l = 0; l < layers; l++) {
    for (size_t s = 0; s < shapes.size(); s++) {
      if (oOnly && s != 1) continue;
      for (int rep = 0; rep < (oOnly ? 2 : 1); rep++) {
        const ChainShape& sh = shapes[s];
        const tpserve::cuda::Int4Tiled& tw = k.d.t[s * kChainCopies + (size_t)((2 * l + rep) % kChainCopies)];
        tpserve::cuda::Int4Epilogue ep;
        if (sh.fold) {
          ep.accumulate = true, ep.normW = k.w, ep.xpOut = k.xpOut, ep.ssqOut = k.ssq;
          if (comm) ep.comm = G.g[r];
        }
        float* y = sh.fold ? k.x : k.y;
        const cudaError_t e = tpserve::cuda::int4_tiled_matmul(nullptr, k.xpIn, true, tw, y, 1, nullptr, G.streams[r],
                                                               false, ep, nullptr, 0);
        if (e != cudaSuccess) return false;
      }
    }
  }
  return true;
}

/** Median microseconds per layer of the chain's graph replayed on both ranks at once; -1 on failure. */
double chain_time(Group& G, std::vector<ChainRank>& R, const std::vector<ChainShape>& shapes, int layers, bool comm,
                  bool oOnly) {
  std::vector<cudaGraphExec_t> ex;
  const auto enqueue = [&](int r) { return chain_enqueue(G, r, R[r], shapes, layers, comm, oOnly); };
  if (!G.capture(enqueue, ex)) return -1;
  const double us = G.replayMedianUs(ex, 5, 20, layers);
  G.destroyGraphs(ex);
  for (int r = 0; r < G.world; r++)
    if (G.flags[r][0]) return -1;  // a wait failed
  return us;
}

/** Sets up both ranks' weights and buffers, then times the chains; prints a table and records g_bench rows. */
int gemv_chain_bench(Group& G, tpserve::check::Rng& rng, int layers) {
  const std::vector<ChainShape> shapes = {
      {6144, 4096, false}, {4096, 2048, true}, {11008, 4096, false}, {4096, 5504, true}};
  const int W = G.world, H = 4096;
  std::vector<ChainRank> R(W);
  for (int r = 0; r < W; r++) {
    CUDA_CHECK(cudaSetDevice(r));
    ChainRank& k = R[r];
    for (const ChainShape& sh : shapes) {
      const tpserve::check::HostW hw = tpserve::check::make_weight(rng, sh.rows, sh.cols, 128, false);
      if (tpserve::check::upload(hw, k.d, kChainCopies)) return 1;
    }
    k.x = k.d.alloc<float>(H * 4), k.w = k.d.alloc<float>(H * 4), k.ssq = k.d.alloc<float>(H / 16 * 4);
    k.y = k.d.alloc<float>(11008 * 4);
    k.xpIn = k.d.alloc<__half>(tpserve::cuda::xprep_halves(1, 11008) * 2);
    k.xpOut = k.d.alloc<__half>(tpserve::cuda::xprep_halves(1, H) * 2);
    std::vector<float> xin(11008), w(H, 1.f), x(H);
    for (auto& e : xin) e = rng.uniform(-1.f, 1.f);
    for (auto& e : x) e = rng.uniform(-1.f, 1.f);
    float* xd = k.d.alloc<float>(11008 * 4);
    CUDA_CHECK(cudaMemcpy(xd, xin.data(), 11008 * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(k.w, w.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(k.x, x.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(tpserve::cuda::xprep(xd, 1, 11008, k.xpIn, 0));  // every shape reads its first cols columns
    CUDA_CHECK(cudaDeviceSynchronize());
  }
  std::printf("GEMV chain, Llama-2-7B TP = 2 shards, %d layers a replay, us a layer (median of 20 replays):\n", layers);
  std::printf("  %-34s %10s %10s %12s\n", "chain", "exchange", "none", "per exchange");
  for (const bool oOnly : {false, true}) {
    const double with = chain_time(G, R, shapes, layers, true, oOnly);
    const double without = chain_time(G, R, shapes, layers, false, oOnly);
    const char* name = oOnly ? "O only (2 a layer)" : "QKV, O, gate/up, down";
    std::printf("  %-34s %10.3f %10.3f %12.3f\n", name, with, without,
                with > 0 && without > 0 ? (with - without) / 2 : -1.0);
    const std::string key = oOnly ? "gemv_chain_o_only" : "gemv_chain_layer";
    g_bench.push_back({key + "_exchange_us_per_layer", W, 0, with});
    g_bench.push_back({key + "_none_us_per_layer", W, 0, without});
    if (with < 0 || without < 0) report("gemv chain " + key + " ran", false);
  }
  return 0;
}

}  // namespace
