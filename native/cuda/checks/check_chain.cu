// The batch-1 decode GEMVs of a whole Llama-2-7B step (32 layers x QKV, O, gate/up, down, int4 g128, distinct
// weights, 3.44 GB: cold, as in the step) run several ways, to measure what the persistent decode kernel plan
// (docs/gpu-runs.md run 33) could gain:
//  - as now: one int4_tiled_matmul launch each (programmatic launch), all 128 in one CUDA graph; and the same with
//    a simpler GEMV that splits each tile's k across 1, 2 or 4 blocks of 4, 8 or 16 warps (partial sums added
//    into y), chosen per matrix role, optionally with the small kernel a split QKV or gate/up would need after it
//    for its epilogue (split_tail: each sum read once, turned into a hi/lo pair); and the engine's own split
//    (Int4Epilogue::splitParts, int4_tiled_split.cu) against it;
//  - one persistent kernel (cooperative launch, 2 blocks of 16 warps per SM): block b takes tiles b, b + grid, ...
//    of every matrix, each warp every 16th group of a tile, and a two-slot register ring runs on across tiles and
//    matrices (the next matrix's first weights are in flight before the boundary). Between matrices: a grid
//    barrier (one growing counter, release/acquire; or 16 counters), or nothing (the inputs here do not depend on
//    the previous matrix, so the results hold either way: an upper bound, not a usable kernel);
//  - the same with a ring of 4 items per warp in shared memory (cp.async); with each block's share balanced to
//    within one group (tiles split between two blocks add into y); with tiles claimed from a counter per matrix;
//    with dataflow counters per input chunk instead of barriers.
// For the barrier variants it also prints where a barrier's time goes: the spread of the blocks' arrivals, the last
// arrival to the first departure, a block's mean wait, and whether the late blocks are late again a layer later
// (correlation across blocks). From the balanced run's per-block speeds it derives weighted shares (slower blocks
// get fewer groups) and times them. Every matrix's y is checked against the graph's (O and
// down bit for bit where k is split the same way; within 1e-5 relative otherwise).
//  - the deep-ring variants (chain_tma.cuh, chain_lean.cuh; runs 106-121): one block an SM, a producer warp
//    streaming every matrix's weights through a ring of bulk copies in shared memory, consumer warps waiting at the
//    grid barriers; chain_stamps.cuh reads their barriers' time stamps back.
//   check_chain [--json out.json] [--layers N] [--tma [--only TEXT]] (--tma: only the graph, the register-ring
//   persistent kernels and the deep-ring variants; --only: those whose name contains TEXT)
// The persistent kernels are in chain_kernels.cuh, the pieces they share with this file in chain_common.cuh.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <algorithm>
#include <cmath>
#include <string>
#include <type_traits>
#include <vector>

#include "chain_kernels.cuh"
#include "chain_stamps.cuh"
#include "chain_variants.cuh"
#include "check_util.cuh"
#include "kernels/kernels.cuh"
#include "kernels/pdl.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {

// ---- the graph of launches with k split across blocks: block (tile, part) takes groups [part G / SPLIT, (part + 1)
// G / SPLIT) of its tile with KS warps (each warp every KS-th group, a two-slot register ring, the first load
// before the wait as int4t_gemv does); SPLIT > 1 adds its partial sums into y (zeroed at the graph's start).
template <int KS, int SPLIT>
__global__ void __launch_bounds__(KS * 32) split_gemv(Mat m) {
  __shared__ float red[KS][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tile = blockIdx.x / SPLIT, part = blockIdx.x % SPLIT;
  const int NG = m.cols / kGroup;
  const int g0 = part * NG / SPLIT, g1 = (part + 1) * NG / SPLIT;
  const int U = g1 - g0 > warp ? (g1 - g0 - warp + KS - 1) / KS : 0;
  const uint4* wq = tile_q(m, tile, lane);
  const float* wsc = tile_scales(m, tile);
  uint4 q[2][2];
  float s0[2], s1[2];
  const auto load = [&](auto S, int u) {
    constexpr int s = decltype(S)::value;
    load_group(wq, wsc, g0 + warp + u * KS, g, q[s], s0[s], s1[s]);
  };
  if (U > 0) load(std::integral_constant<int, 0>(), 0);
  tc::pdl_trigger();
  tc::pdl_wait();
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  int par = 0;
  ring_items(
      [&](auto S, int u) {
        constexpr int s = decltype(S)::value;
        if (u + 1 < U) load(std::integral_constant<int, 1 - s>(), u + 1);
        group_mma(q[s][0], q[s][1], s0[s], s1[s], m.xp, g0 + warp + u * KS, g, t, acc);
      },
      U, par);
  if (t == 0) red[warp][g] = acc[0] + acc[1], red[warp][g + 8] = acc[2] + acc[3];
  __syncthreads();
  if (threadIdx.x < 16 && tile * 16 + (int)threadIdx.x < m.rows) {
    float v = 0.f;
    for (int k = 0; k < KS; ++k) v += red[k][threadIdx.x];
    if (SPLIT == 1) m.y[tile * 16 + threadIdx.x] = v;
    else atomicAdd(m.y + tile * 16 + threadIdx.x, v);
  }
}

// The epilogue a split GEMV (partial sums added into y) would need after it as a kernel of its own: every element
// read once, turned into a hi/lo pair for the next GEMV (as xprep does) and written to a scratch buffer.
__global__ void split_tail(const float* __restrict__ y, int n, __half2* __restrict__ out) {
  tc::pdl_trigger();
  tc::pdl_wait();
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) {
    const float v = y[i] / (1.f + __expf(-y[i]));
    const __half hi = __float2half_rn(v);
    out[i] = __halves2half2(hi, __float2half_rn(v - __half2float(hi)));
  }
}

__global__ void fill_words(uint32_t* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t x = (uint32_t)i * 2654435761u ^ seed;
    x ^= x >> 15, x *= 2246822519u, x ^= x >> 13, x *= 3266489917u, x ^= x >> 16;
    p[i] = x;
  }
}

__global__ void fill_scales(float* p, size_t n, uint32_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint32_t x = (uint32_t)i * 2246822519u ^ seed;
    x ^= x >> 15, x *= 3266489917u, x ^= x >> 13;
    p[i] = 0.002f + 0.004f * (float)(x & 0xffff) / 65536.f;
  }
}

/** Each matrix role's second half of y (a variant's) against its first (the graph's): relative L2, values differing. */
struct YDiff {
  double rel[4];
  unsigned long long differ[4];
};

int y_diff(float* const (&ys)[4], const int (&shapes)[4][2], int layers, YDiff& d) {
  for (int r = 0; r < 4; r++) {
    const size_t n = (size_t)layers * shapes[r][0];
    std::vector<float> h(2 * n);
    CUDA_CHECK(cudaMemcpy(h.data(), ys[r], 2 * n * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0;
    d.differ[r] = 0;
    for (size_t i = 0; i < n; i++) {
      const double e = (double)h[n + i] - h[i];
      num += e * e, den += (double)h[i] * h[i];
      d.differ[r] += !(h[n + i] == h[i]);
    }
    d.rel[r] = den > 0 ? std::sqrt(num / den) : (num > 0 ? 1 : 0);
  }
  return 0;
}

struct Timing {
  std::string how;
  double ms = 0;
  bool ok = true;
};

template <class Launch>
int time_best(cudaStream_t st, Launch&& launch, double& bestMs) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  float best = 1e30f;
  for (int rep = 0; rep < 6; rep++) {
    CUDA_CHECK(cudaEventRecord(a, st));
    CUDA_CHECK(launch());
    CUDA_CHECK(cudaEventRecord(b, st));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    if (rep > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  bestMs = best;
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = arg_value(argc, argv, "--json");
  const int layers = std::atoi(arg_value(argc, argv, "--layers", "32"));
  const bool tmaOnly = has_flag(argc, argv, "--tma");
  const char* only = arg_value(argc, argv, "--only");  // with --tma: the variants whose name contains this
  if (layers < 1 || layers * 4 > kMaxMats) {
    std::printf("--layers must be 1..%d\n", kMaxMats / 4);
    return 1;
  }
  int dev = 0, sms = 0, coop = 0, perSm = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, chain_kernel<true>, kThreads, 0));
  std::printf("device: %s, %d SMs, %d blocks of %d threads per SM; %d layers\n", device_name().c_str(), sms, perSm,
              kThreads, layers);
  if (!coop || perSm < 1) {
    std::printf("no cooperative launch of the chain kernel on this device\n");
    return 1;
  }
  const int shapes[4][2] = {{12288, 4096}, {4096, 4096}, {22016, 4096}, {4096, 11008}};  // QKV, O, gate/up, down
  std::vector<Mat> mats;
  std::vector<void*> allocs;
  __half* xps[4];
  uint4* xqs[4];  // x's int8 pieces, scales, piece sums and x itself (XPieces: the int8 consumers)
  float* sxs[4];
  int* pss[4];
  float* xfs[4];
  float* ys[4];
  size_t bytes = 0;
  Rng rng(7);
  for (int r = 0; r < 4; r++) {
    const int rows = shapes[r][0], cols = shapes[r][1];
    std::vector<float> x(cols);
    rng.fill_normal(x);
    float* dx;
    CUDA_CHECK(cudaMalloc(&dx, cols * 4));
    CUDA_CHECK(cudaMemcpy(dx, x.data(), cols * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMalloc(&xps[r], tc::xprep_halves(1, cols) * 2));
    CUDA_CHECK_LAUNCH(tc::xprep(dx, 1, cols, xps[r], 0));
    CUDA_CHECK(cudaMalloc(&xqs[r], (size_t)cols * int8_check::kPieces));
    CUDA_CHECK(cudaMalloc(&sxs[r], (size_t)cols / kGroup * 4));
    CUDA_CHECK(cudaMalloc(&pss[r], (size_t)cols / kGroup * 8 * 4));
    CUDA_CHECK_LAUNCH((int8_check::quantize_x<true><<<(cols / kGroup * 32 + 255) / 256, 256>>>(
                           dx, cols, reinterpret_cast<int8_t*>(xqs[r]), sxs[r], pss[r]),
                       cudaGetLastError()));
    xfs[r] = dx;
    CUDA_CHECK(cudaMalloc(&ys[r], (size_t)2 * layers * rows * 4));  // per layer: graph's y, then the kernel's
  }
  for (int l = 0; l < layers; l++)
    for (int r = 0; r < 4; r++) {
      const int rows = shapes[r][0], cols = shapes[r][1];
      size_t words = 0, entries = 0;
      tc::int4_tiled_sizes(rows, cols, kGroup, &words, &entries);
      uint32_t* q;
      float* sc;
      CUDA_CHECK(cudaMalloc(&q, words * 4));
      CUDA_CHECK(cudaMalloc(&sc, entries * 4));
      allocs.push_back(q), allocs.push_back(sc);
      fill_words<<<1024, 256>>>(q, words, 0x1234u + 77u * (l * 4 + r));
      fill_scales<<<256, 256>>>(sc, entries, 0x9876u + 31u * (l * 4 + r));
      CUDA_CHECK(cudaGetLastError());
      bytes += words * 4 + entries * 4;
      mats.push_back(Mat{reinterpret_cast<const uint4*>(q), sc, xps[r], ys[r] + (size_t)l * rows, rows, cols});
    }
  CUDA_CHECK(cudaDeviceSynchronize());
  const int nMats = (int)mats.size();
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));

  // As now: one launch per matrix in a graph.
  cudaGraph_t graph;
  cudaGraphExec_t exec;
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (const Mat& m : mats) {
    const tc::Int4Tiled w{m.q, m.scales, nullptr, m.rows, m.cols, kGroup};
    CUDA_CHECK(tc::int4_tiled_matmul(nullptr, const_cast<__half*>(m.xp), true, w, m.y, 1, nullptr, st));
  }
  CUDA_CHECK(cudaStreamEndCapture(st, &graph));
  CUDA_CHECK(cudaGraphInstantiate(&exec, graph, 0));
  CUDA_CHECK(cudaGraphDestroy(graph));
  std::vector<Timing> out;
  Timing tg{"graph of launches (PDL)"};
  if (time_best(st, [&] { return cudaGraphLaunch(exec, st); }, tg.ms)) return 1;
  out.push_back(tg);
  // The engine's kernel with the SiLU pair epilogue on QKV and gate/up (as the step's gate/up), without and with k
  // split across two blocks a tile (Int4Epilogue::splitParts and its finishing kernel), and mixed with split_gemv
  // (below) to tell which half of a difference is whose: timing only. split_gemv adds both halves into slot 0
  // (slot 1 stays zero for int4_pair_finish to add).
  if (!tmaOnly) {
    float *pairY, *parts;
    __half2* tailOut0;
    const size_t rowsMax = shapes[2][0];
    CUDA_CHECK(cudaMalloc(&pairY, rowsMax / 2 * 4));
    CUDA_CHECK(cudaMalloc(&parts, 2 * rowsMax * 4));
    CUDA_CHECK(cudaMalloc(&tailOut0, rowsMax * sizeof(__half2)));
    CUDA_CHECK(cudaMemset(parts, 0, 2 * rowsMax * 4));
    const char* names[] = {"engine GEMV, silu pairs on QKV, gate/up",
                           "engine GEMV, silu pairs on QKV, gate/up, k split (splitParts)",
                           "split_gemv halves (8w) + tail on QKV, gate/up; engine GEMV on O, down",
                           "engine GEMV k split on QKV, gate/up; split_gemv 16w on O, down",
                           "split_gemv halves (8w) + int4_pair_finish on QKV, gate/up; engine GEMV on O, down",
                           "engine GEMV k split + split_tail on QKV, gate/up; engine GEMV on O, down"};
    for (int mode = 0; mode < 6; mode++) {
      cudaGraph_t pg;
      cudaGraphExec_t px;
      CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < nMats; i++) {
        Mat m = mats[i];
        const bool pairRole = i % 2 == 0;  // QKV, gate/up
        if ((mode == 2 || mode == 4) && pairRole) {
          m.y = parts;
          CUDA_CHECK(tc::launch_pdl(split_gemv<8, 2>, dim3((m.rows + 15) / 16 * 2), dim3(256), 0, st, m));
          if (mode == 2)
            CUDA_CHECK(tc::launch_pdl(split_tail, dim3((m.rows + 255) / 256), dim3(256), 0, st, (const float*)parts,
                                      m.rows, tailOut0));
          else {
            tc::Int4Epilogue fe;
            fe.kind = tc::Int4Epilogue::kSiluPairs, fe.splitParts = parts;
            CUDA_CHECK(tc::int4_pair_finish(fe, m.rows, 1, pairY, st));
          }
          continue;
        }
        if (mode == 3 && !pairRole) {
          CUDA_CHECK(tc::launch_pdl(split_gemv<16, 1>, dim3((m.rows + 15) / 16), dim3(512), 0, st, m));
          continue;
        }
        const tc::Int4Tiled w{m.q, m.scales, nullptr, m.rows, m.cols, kGroup};
        tc::Int4Epilogue ep;
        float* y = m.y;
        if (pairRole) {
          ep.kind = tc::Int4Epilogue::kSiluPairs, y = pairY;
          if (mode != 0) ep.splitParts = parts;
          ep.splitDeferFinish = mode == 5;
        }
        CUDA_CHECK(tc::int4_tiled_matmul(nullptr, const_cast<__half*>(m.xp), true, w, y, 1, nullptr, st, false, ep));
        if (mode == 5 && pairRole)
          CUDA_CHECK(tc::launch_pdl(split_tail, dim3((m.rows + 255) / 256), dim3(256), 0, st, (const float*)parts,
                                    m.rows, tailOut0));
      }
      CUDA_CHECK(cudaStreamEndCapture(st, &pg));
      CUDA_CHECK(cudaGraphInstantiate(&px, pg, 0));
      CUDA_CHECK(cudaGraphDestroy(pg));
      Timing tq{names[mode]};
      if (time_best(st, [&] { return cudaGraphLaunch(px, st); }, tq.ms)) return 1;
      CUDA_CHECK(cudaGraphExecDestroy(px));
      out.push_back(tq);
    }
    cudaFree(pairY), cudaFree(parts), cudaFree(tailOut0);
  }

  // The persistent kernels (and the split graphs) write the second half of each y buffer.
  std::vector<Mat> pm = mats;
  for (int i = 0; i < nMats; i++) pm[i].y += (size_t)layers * pm[i].rows;
  int failed = 0;
  // y (second halves) against the graph's: relative L2 per matrix role, within 1e-5.
  const auto compare = [&](Timing& tp) -> int {
    YDiff d;
    if (y_diff(ys, shapes, layers, d)) return 1;
    double worst = 0;
    for (int r = 0; r < 4; r++)
      if (!(d.rel[r] <= worst)) worst = d.rel[r];
    if (!(worst <= 1e-5)) tp.ok = false;
    std::printf("  %s: y vs graph rel %.2e\n", tp.how.c_str(), worst);
    return 0;
  };
  // Per matrix role (QKV, O, gate/up, down): which split_gemv, with its warps a block and blocks a tile.
  struct SplitGemv {
    void (*fn)(Mat);
    int ks, split;
  };
  const SplitGemv w8s1{split_gemv<8, 1>, 8, 1}, w16s1{split_gemv<16, 1>, 16, 1}, w8s2{split_gemv<8, 2>, 8, 2},
      w16s2{split_gemv<16, 2>, 16, 2}, w4s2{split_gemv<4, 2>, 4, 2}, w4s4{split_gemv<4, 4>, 4, 4},
      w8s4{split_gemv<8, 4>, 8, 4};
  struct SplitVariant {
    const char* how;
    SplitGemv role[4];
    bool tails = false;  // a split_tail kernel after each QKV and gate/up
  };
  const SplitVariant splits[] = {
      {"graph, one tile a block, 8 warps", {w8s1, w8s1, w8s1, w8s1}},
      {"graph, one tile a block, 16 warps", {w16s1, w16s1, w16s1, w16s1}},
      {"graph, half a tile a block, 8 warps", {w8s2, w8s2, w8s2, w8s2}},
      {"graph, half a tile a block, 16 warps", {w16s2, w16s2, w16s2, w16s2}},
      {"graph, half a tile a block, 4 warps", {w4s2, w4s2, w4s2, w4s2}},
      {"graph, quarter tile a block, 4 warps", {w4s4, w4s4, w4s4, w4s4}},
      {"graph, halves (8w) in QKV, gate/up only; O, down 16w", {w8s2, w16s1, w8s2, w16s1}},
      {"graph, halves (8w) in O, down only; QKV, gate/up 16w", {w16s1, w8s2, w16s1, w8s2}},
      {"graph, halves (8w) in O only; rest 1 tile (16w)", {w16s1, w8s2, w16s1, w16s1}},
      {"graph, halves (8w), down in quarters (8w)", {w8s2, w8s2, w8s2, w8s4}},
      {"graph, halves (8w) in QKV, gate/up + an epilogue kernel each; O, down 16w", {w8s2, w16s1, w8s2, w16s1}, true},
      {"graph, one tile 16w + an epilogue kernel after QKV, gate/up", {w16s1, w16s1, w16s1, w16s1}, true},
  };
  __half2* tailOut;
  CUDA_CHECK(cudaMalloc(&tailOut, (size_t)shapes[2][0] * sizeof(__half2)));
  for (const SplitVariant& v : splits) {
    if (tmaOnly) break;
    cudaGraph_t sg;
    cudaGraphExec_t sx;
    CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
    for (int r = 0; r < 4; r++)
      CUDA_CHECK(cudaMemsetAsync(ys[r] + (size_t)layers * shapes[r][0], 0, (size_t)layers * shapes[r][0] * 4, st));
    for (int i = 0; i < nMats; i++) {
      const Mat& m = pm[i];
      const int r = i % 4;
      const SplitGemv& g = v.role[r];
      CUDA_CHECK(tc::launch_pdl(g.fn, dim3((m.rows + 15) / 16 * g.split), dim3(g.ks * 32), 0, st, m));
      if (v.tails && (r == 0 || r == 2))
        CUDA_CHECK(tc::launch_pdl(split_tail, dim3((m.rows + 255) / 256), dim3(256), 0, st, (const float*)m.y, m.rows,
                                  tailOut));
    }
    CUDA_CHECK(cudaStreamEndCapture(st, &sg));
    CUDA_CHECK(cudaGraphInstantiate(&sx, sg, 0));
    CUDA_CHECK(cudaGraphDestroy(sg));
    Timing tv{v.how};
    if (time_best(st, [&] { return cudaGraphLaunch(sx, st); }, tv.ms)) return 1;
    CUDA_CHECK(cudaGraphExecDestroy(sx));
    if (compare(tv)) return 1;
    failed += !tv.ok;
    out.push_back(tv);
  }
  cudaFree(tailOut);
  Mat* dm;
  CUDA_CHECK(cudaMalloc(&dm, nMats * sizeof(Mat)));
  CUDA_CHECK(cudaMemcpy(dm, pm.data(), nMats * sizeof(Mat), cudaMemcpyHostToDevice));
  Bar bar{};
  bar.stamps = nullptr;
  CUDA_CHECK(cudaMalloc(&bar.count, 32 * 32 * sizeof(unsigned)));  // up to 32 counters, one per 128 bytes
  CUDA_CHECK(cudaMalloc(&bar.timedOut, sizeof(int)));
  CUDA_CHECK(cudaMemset(bar.timedOut, 0, sizeof(int)));
  {
    const XPieces hp[4] = {{xqs[0], sxs[0], pss[0], xfs[0]},
                           {xqs[1], sxs[1], pss[1], xfs[1]},
                           {xqs[2], sxs[2], pss[2], xfs[2]},
                           {xqs[3], sxs[3], pss[3], xfs[3]}};
    XPieces* dp;
    CUDA_CHECK(cudaMalloc(&dp, sizeof hp));
    CUDA_CHECK(cudaMemcpy(dp, hp, sizeof hp, cudaMemcpyHostToDevice));
    bar.pieces = dp;
  }
  using Variant = ChainVariant;
  const std::vector<Variant> tmaVariants = deep_ring_variants();
  const Variant variants[] = {
      {"persistent, grid barriers", reinterpret_cast<void*>(chain_kernel<true>), 0},
      {"persistent, no barriers", reinterpret_cast<void*>(chain_kernel<false>), 0},
      {"persistent, barriers over 16 counters", reinterpret_cast<void*>(chain_kernel<true, 16>), 0},
      {"balanced, grid barriers", reinterpret_cast<void*>(chain_kernel_bal<true>), 0, true},
      {"tiles claimed, grid barriers", reinterpret_cast<void*>(chain_kernel_dyn<true>), 0, false, true},
      {"dataflow counters per input chunk", reinterpret_cast<void*>(chain_kernel<false, 1, true>), 0, false, false,
       true},
      {"tiles claimed, no barriers", reinterpret_cast<void*>(chain_kernel_dyn<false>), 0, false, true},
      {"smem ring 4, barriers over 16 counters", reinterpret_cast<void*>(chain_kernel_smem<true, 4, 16>),
       smem_ring_bytes<4>()},
      {"smem ring 4, no barriers", reinterpret_cast<void*>(chain_kernel_smem<false, 4>), smem_ring_bytes<4>()},
  };
  unsigned *dctr, *ddone;
  CUDA_CHECK(cudaMalloc(&dctr, kMaxMats * sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&ddone, (size_t)kMaxMats * kChunkStride * sizeof(unsigned)));
  bar.chunks = ddone;  // chain_kernel_lean's dataflow (its ctr argument stays the claim counters)
  // Times one persistent variant (cum: chain_kernel_bal's weighted shares, or null) and checks its y against the
  // graph's; 1 only on a CUDA error.
  const auto timeVariant = [&](const Variant& v, const float* cum) -> int {
    Bar vb = bar;
    vb.cum = cum;
    void* args[] = {&dm, const_cast<int*>(&nMats), &vb, v.flow ? &ddone : &dctr};
    int per = 0;
    if (v.smem) CUDA_CHECK(cudaFuncSetAttribute(v.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, v.smem));
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&per, v.fn, v.threads, v.smem));
    const int vBlocks = sms * std::min(per, v.perSmCap);
    if (per < 1) {
      std::printf("FAIL  %s: does not fit on an SM\n", v.how);
      failed++;
      return 0;
    }
    for (int r = 0; r < 4; r++)
      CUDA_CHECK(poison_nan(ys[r] + (size_t)layers * shapes[r][0], (size_t)layers * shapes[r][0] * 4, st));
    Timing tp{std::string(v.how) + " (" + std::to_string(vBlocks) + " blocks)" + (v.timingOnly ? ", timing only" : "")};
    const auto launch = [&]() -> cudaError_t {
      cudaError_t e = cudaMemsetAsync(bar.count, 0, 32 * 32 * sizeof(unsigned), st);
      if (e == cudaSuccess && v.counters) e = cudaMemsetAsync(dctr, 0, kMaxMats * sizeof(unsigned), st);
      if (e == cudaSuccess && (v.flow || v.chunks)) e = cudaMemsetAsync(ddone, 0, (size_t)kMaxMats * kChunkStride * 4, st);
      for (int r = 0; r < 4 && v.zeroY && e == cudaSuccess; r++)
        e = cudaMemsetAsync(ys[r] + (size_t)layers * shapes[r][0], 0, (size_t)layers * shapes[r][0] * 4, st);
      if (e != cudaSuccess) return e;
      return cudaLaunchCooperativeKernel(v.fn, dim3(vBlocks), dim3(v.threads), args, v.smem, st);
    };
    if (time_best(st, launch, tp.ms)) return 1;
    int to = 0;
    CUDA_CHECK(cudaMemcpy(&to, bar.timedOut, sizeof(int), cudaMemcpyDeviceToHost));
    // Compare every matrix's y with the graph's.
    YDiff d;
    if (y_diff(ys, shapes, layers, d)) return 1;
    for (int r = 0; r < 4; r++) {
      // the graph's O and down also split k 16 ways
      const bool sameSplit = (r == 1 || r == 3) && !v.zeroY && !v.otherOrder;
      if (!(d.rel[r] <= 1e-5) || (sameSplit && d.differ[r] != 0)) tp.ok = false;
    }
    if (to) tp.ok = false;
    if (v.timingOnly) tp.ok = !to;
    std::printf("  y vs graph: QKV rel %.2e (%llu differ), O %llu differ, gate/up rel %.2e, down %llu differ%s\n",
                d.rel[0], d.differ[0], d.differ[1], d.rel[2], d.differ[3], to ? "; a barrier timed out" : "");
    failed += !tp.ok;
    out.push_back(tp);
    return 0;
  };
  if (tmaOnly) {
    for (const Variant& v : tmaVariants)
      if ((!only || std::strstr(v.how, only)) && timeVariant(v, nullptr)) return 1;
    if (lean_barrier_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6>), "lean, 16 warps, 4 stages", dm,
                            nMats, bar, dctr, sms, st) ||
        lean_barrier_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6, true, 1>),
                            "lean, 16 warps, 4 stages, claims paced (K = 1)", dm, nMats, bar, dctr, sms, st) ||
        lean_barrier_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6, true, 2>),
                            "lean, 16 warps, 4 stages, claims paced (K = 2)", dm, nMats, bar, dctr, sms, st) ||
        lean_barrier_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6, true, 4>),
                            "lean, 16 warps, 4 stages, claims paced (K = 4)", dm, nMats, bar, dctr, sms, st) ||
        lean_signal_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6, false, 4, 2>), 19 * 32,
                           "lean dataflow paired (FLOW 2)", dm, nMats, bar, dctr, sms, st) ||
        lean_signal_report(reinterpret_cast<void*>(chain_kernel_lean<16, 4, 6, false, 4, 6>), 19 * 32,
                           "lean dataflow whole matrix (FLOW 6)", dm, nMats, bar, dctr, sms, st))
      return 1;
  } else {
    for (const Variant& v : variants)
      if (timeVariant(v, nullptr)) return 1;
  }
  // Where a barrier's time goes (register ring, one counter): per matrix that just ended, the spread of the blocks'
  // arrivals (work imbalance and stragglers), the last arrival to the first departure (the barrier itself), and
  // the mean wait of a block.
  // bal 3: balanced shares weighted by each block's speed in the balanced run (bal 1), so that slower SMs get less.
  const int nbAll = sms * kBlocksPerSm;
  float* dcum;
  int* dsm;
  CUDA_CHECK(cudaMalloc(&dcum, (nbAll + 1) * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&dsm, 2 * nbAll * sizeof(int)));
  for (int bal = 0; bal < 4 && !tmaOnly; bal++) {
    const int nb = nbAll;
    std::printf("%s:\n", bal == 3   ? "balanced, shares weighted by each block's speed in the balanced run"
                         : bal == 2 ? "tiles claimed"
                         : bal      ? "balanced"
                                    : "tiles round robin");
    long long* dst;
    CUDA_CHECK(cudaMalloc(&dst, (size_t)nMats * nb * 2 * sizeof(long long)));
    Bar sb = bar;
    sb.stamps = dst;
    if (bal == 1) sb.smids = dsm;
    if (bal == 3) sb.smids = dsm + nbAll, sb.cum = dcum;
    void* args[] = {&dm, const_cast<int*>(&nMats), &sb, &dctr};
    CUDA_CHECK(cudaMemsetAsync(bar.count, 0, 32 * 32 * sizeof(unsigned), st));
    CUDA_CHECK(cudaMemsetAsync(dctr, 0, kMaxMats * sizeof(unsigned), st));
    void* sfn = bal == 2   ? reinterpret_cast<void*>(chain_kernel_dyn<true>)
                : bal != 0 ? reinterpret_cast<void*>(chain_kernel_bal<true>)
                           : reinterpret_cast<void*>(chain_kernel<true>);
    CUDA_CHECK(cudaLaunchCooperativeKernel(sfn, dim3(nb), dim3(kThreads), args,
                                           0, st));
    CUDA_CHECK(cudaStreamSynchronize(st));
    std::vector<long long> h((size_t)nMats * nb * 2);
    CUDA_CHECK(cudaMemcpy(h.data(), dst, h.size() * sizeof(long long), cudaMemcpyDeviceToHost));
    cudaFree(dst);
    const BarrierStats bs = barrier_stats(h, nMats, nb, 2);
    for (int r = 0; r < 4; r++)
      if (bs.cnt[r])
        std::printf("barrier after %-8s arrivals spread %6.2f us, last arrival to first departure %5.2f us, mean wait "
                    "%5.2f us (%d barriers)\n",
                    kRoleNames[r], bs.mean(bs.arrive, r), bs.mean(bs.release, r), bs.mean(bs.wait, r), bs.cnt[r]);
    lateness_report(h, nMats, nb);
    if (bal == 1) {  // each block's time on its (equal) share, barrier waits left out -> the weights of bal 3
      std::vector<double> speed(nb);
      double sum = 0;
      for (int b = 0; b < nb; b++) {
        double work = 0;
        for (int j = 1; j + 1 < nMats; j++)
          work += (double)(h[((size_t)j * nb + b) * 2] - h[((size_t)(j - 1) * nb + b) * 2 + 1]);
        speed[b] = work > 0 ? 1.0 / work : 0.0, sum += speed[b];
      }
      std::vector<float> cum(nb + 1, 0.f);
      double acc = 0;
      for (int b = 0; b < nb; b++) acc += speed[b] / sum, cum[b + 1] = (float)acc;
      cum[nb] = 1.f;
      const auto [lo, hi] = std::minmax_element(speed.begin(), speed.end());
      std::printf("block speeds: slowest %.3f of the fastest\n", *hi > 0 ? *lo / *hi : 0.0);
      CUDA_CHECK(cudaMemcpy(dcum, cum.data(), cum.size() * sizeof(float), cudaMemcpyHostToDevice));
    }
    if (bal == 3) {  // the weights assume each block lands on the same SM as in the balanced run
      std::vector<int> sm(2 * nb);
      CUDA_CHECK(cudaMemcpy(sm.data(), dsm, sm.size() * sizeof(int), cudaMemcpyDeviceToHost));
      int same = 0;
      for (int b = 0; b < nb; b++) same += sm[b] == sm[nb + b];
      std::printf("blocks on the same SM as in the balanced run: %d of %d\n", same, nb);
    }
  }
  // The weighted shares timed and checked like the other persistent variants (a fresh launch: the weights hold only
  // if the blocks land on the same SMs again, which the stamps run above reports).
  if (!tmaOnly && timeVariant({"balanced, shares weighted by block speed, grid barriers",
                               reinterpret_cast<void*>(chain_kernel_bal<true>), 0, true},
                              dcum))
    return 1;
  cudaFree(dcum), cudaFree(dsm);
  for (const Timing& t : out)
    std::printf("%-5s %-28s %8.3f ms  %7.1f GB/s of weights  (%d matrices, %.2f GB)\n", t.ok ? "ok" : "FAIL",
                t.how.c_str(), t.ms, bytes / (t.ms * 1e6), nMats, bytes / 1e9);
  if (json) {
    Json j;
    j.begin_obj().kv("device", device_name()).kv("layers", layers).kv("bytes", (double)bytes).kv("failed", failed);
    j.key("runs").begin_arr();
    for (const Timing& t : out) j.begin_obj().kv("how", t.how).kv("ms", t.ms).kv("ok", t.ok).end_obj();
    j.end_arr().end_obj();
    if (!j.write(json)) return 1;
  }
  cudaGraphExecDestroy(exec);
  for (void* p : allocs) cudaFree(p);
  return failed ? 1 : 0;
}
