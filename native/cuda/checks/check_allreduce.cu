// Checks and times the one-shot p2p collectives (kernels/allreduce.cu) across every GPU of this machine, all ranks
// in this process with peer pointers (the worker maps the same buffers with CUDA IPC instead): all-reduce and
// column gather against a CPU reference (bitwise: the kernel adds in rank order, as the reference does), the
// act-order shard's gathered, permuted and prepared decode input against the three steps apart (bitwise), the
// fused all-reduce + residual + RMSNorm against the unfused kernels (bitwise), the one-token GEMV that exchanges its
// partial sums in its epilogue (Int4Epilogue::comm) against the GEMV then all_reduce_fold (bitwise), the step's first
// kernel (embedding, its all-reduce and layer 0's norm) against the kernels apart (bitwise), reuse of the
// three slots over many calls, replay inside CUDA graphs, and the timeout when a rank never arrives (and the abort
// through a device-memory flag that GpuComm uses).
// Then latency per call at decode sizes, and NCCL's in the same run when libnccl.so.2 loads; at two ranks the
// latency floor of one push (pingpong_bench.cuh).
//   check_allreduce [--json out.json]      (needs 2+ GPUs with peer access; with fewer it says so and exits 0)
//   check_allreduce --ipc-role 0|1 --ipc-dir DIR   (two processes at once: the exchange over a CUDA IPC mapping)
//   check_allreduce --chain [--layers N] [--json out.json]   (GPUs 0 and 1: the exchange in a chain of decode GEMVs,
//                                                             gemv_chain_bench.cuh; nothing else)
//   check_allreduce --virtual-ranks N [--json out.json]   (groups of 2, 4 .. N ranks all on GPU 0, in this process:
//       the kernels' logic at more ranks than the machine has GPUs, checked as above; every rank's kernels of a call
//       must be resident together, so the shapes are smaller (virtual_checks below), and nothing is timed)
#include <chrono>
#include <thread>

#include "../kernels/allreduce.cuh"
#include "../kernels/kernels.cuh"
#include "../kernels/xprep.cuh"
#include "../nccl_api.h"
#include "check_util.cuh"
#include "embed_norm_check.cuh"
#include "gather_xprep_check.cuh"
#include "gemv_chain_bench.cuh"
#include "int4t_check.cuh"
#include "p2p_check_group.cuh"
#include "pingpong_bench.cuh"
#include "wait_check.cuh"

using namespace tpserve;
using namespace tpserve::check;

namespace {

/** `iters` all-reduces of n floats with fresh data each time, compared bitwise with the rank-order sum. */
bool check_sum(Group& G, Rng& rng, size_t n, int iters) {
  const int W = G.world;
  std::vector<float*> d(W);
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaMalloc(&d[r], n * sizeof(float));
  bool ok = true;
  for (int it = 0; it < iters && ok; it++) {
    std::vector<std::vector<float>> in(W, std::vector<float>(n));
    for (auto& v : in)
      for (auto& x : v) x = rng.uniform(-4.f, 4.f);
    for (int r = 0; r < W; r++) {
      cudaSetDevice(rank_dev(r));
      cudaMemcpy(d[r], in[r].data(), n * sizeof(float), cudaMemcpyHostToDevice);
    }
    for (int r = 0; r < W; r++) {
      cudaSetDevice(rank_dev(r));
      if (cuda::p2p_all_reduce(d[r], n, G.g[r], G.streams[r]) != cudaSuccess) ok = false;
    }
    if (!G.syncAll()) ok = false;
    std::vector<float> ref(n, 0.f), out(n);
    for (size_t i = 0; i < n; i++) {
      float s = 0.f;
      for (int r = 0; r < W; r++) s += in[r][i];
      ref[i] = s;
    }
    for (int r = 0; r < W && ok; r++) {
      cudaSetDevice(rank_dev(r));
      cudaMemcpy(out.data(), d[r], n * sizeof(float), cudaMemcpyDeviceToHost);
      if (std::memcmp(out.data(), ref.data(), n * sizeof(float)) != 0) ok = false;
      if (G.flags[r][0]) ok = false;
      if (!ok) {  // say how: a failed wait, or which values differ
        size_t bad = 0, first = n;
        for (size_t i = 0; i < n; i++)
          if (std::memcmp(&out[i], &ref[i], 4) != 0) bad++, first = std::min(first, i);
        std::printf("  call %d rank %d: wait failed %d, %zu of %zu values differ", it, r, G.flags[r][0], bad, n);
        if (bad) std::printf(" (first at %zu: %a, expected %a)", first, out[first], ref[first]);
        std::printf("\n");
      }
    }
  }
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(d[r]);
  report("all_reduce world " + std::to_string(W) + " n " + std::to_string(n) + " x" + std::to_string(iters) +
             " (bitwise vs rank-order sum)",
         ok);
  return ok;
}

bool check_gather(Group& G, Rng& rng, int rows, int cols) {
  const int W = G.world;
  const size_t n = (size_t)rows * cols;
  std::vector<float*> d(W), o(W);
  std::vector<std::vector<float>> in(W, std::vector<float>(n));
  for (auto& v : in)
    for (auto& x : v) x = rng.uniform(-1.f, 1.f);
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMalloc(&d[r], n * sizeof(float)), cudaMalloc(&o[r], n * W * sizeof(float));
    cudaMemcpy(d[r], in[r].data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  bool ok = true;
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    if (cuda::p2p_gather_cols(d[r], rows, cols, o[r], G.g[r], G.streams[r]) != cudaSuccess) ok = false;
  }
  if (!G.syncAll()) ok = false;
  std::vector<float> out(n * W);
  for (int r = 0; r < W && ok; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMemcpy(out.data(), o[r], out.size() * sizeof(float), cudaMemcpyDeviceToHost);
    for (int i = 0; i < rows && ok; i++)
      for (int j = 0; j < W && ok; j++)
        if (std::memcmp(&out[(size_t)i * W * cols + (size_t)j * cols], &in[j][(size_t)i * cols], cols * sizeof(float)))
          ok = false;
  }
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(d[r]), cudaFree(o[r]);
  report("gather_cols world " + std::to_string(W) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols),
         ok);
  return ok;
}

/**
 * The fused all-reduce + residual + RMSNorm on every rank against cuda::rmsnorm with the CPU's rank-order sum as
 * the residual (on GPU 0): x, y and the prepared GEMV input must be the same bits.
 */
bool check_fused(Group& G, Rng& rng, int rows, int dim) {
  const int W = G.world;
  const size_t n = (size_t)rows * dim;
  const bool prep = rows <= 16 && dim % 64 == 0;
  const size_t nxp = prep ? cuda::xprep_halves(rows, dim) : 0;
  std::vector<std::vector<float>> part(W, std::vector<float>(n));
  std::vector<float> x(n), w(dim), sum(n, 0.f);
  for (auto& v : part)
    for (auto& e : v) e = rng.uniform(-1.f, 1.f);
  for (auto& e : x) e = rng.uniform(-2.f, 2.f);
  for (auto& e : w) e = rng.uniform(0.5f, 1.5f);
  for (size_t i = 0; i < n; i++)
    for (int r = 0; r < W; r++) sum[i] += part[r][i];
  // Reference: the unfused kernel on GPU 0.
  float *rx, *rs, *rw, *ry;
  __half* rxp = nullptr;
  cudaSetDevice(0);
  cudaMalloc(&rx, n * 4), cudaMalloc(&rs, n * 4), cudaMalloc(&rw, dim * 4), cudaMalloc(&ry, n * 4);
  if (prep) cudaMalloc(&rxp, nxp * 2);
  cudaMemcpy(rx, x.data(), n * 4, cudaMemcpyHostToDevice), cudaMemcpy(rs, sum.data(), n * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(rw, w.data(), dim * 4, cudaMemcpyHostToDevice);
  bool ok = cuda::rmsnorm(rx, rs, rw, ry, rows, dim, 1e-5f, 0, rxp) == cudaSuccess && cudaDeviceSynchronize() == 0;
  std::vector<float> ex(n), ey(n);
  std::vector<__half> exp_(nxp);
  cudaMemcpy(ex.data(), rx, n * 4, cudaMemcpyDeviceToHost), cudaMemcpy(ey.data(), ry, n * 4, cudaMemcpyDeviceToHost);
  if (prep) cudaMemcpy(exp_.data(), rxp, nxp * 2, cudaMemcpyDeviceToHost);
  cudaFree(rx), cudaFree(rs), cudaFree(rw), cudaFree(ry), cudaFree(rxp);
  std::vector<float*> dp(W), dx(W), dw(W), dy(W);
  std::vector<__half*> dxp(W, nullptr);
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMalloc(&dp[r], n * 4), cudaMalloc(&dx[r], n * 4), cudaMalloc(&dw[r], dim * 4), cudaMalloc(&dy[r], n * 4);
    if (prep) cudaMalloc(&dxp[r], nxp * 2);
    cudaMemcpy(dp[r], part[r].data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dx[r], x.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dw[r], w.data(), dim * 4, cudaMemcpyHostToDevice);
  }
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    if (cuda::p2p_all_reduce_rmsnorm(dp[r], dx[r], dw[r], dy[r], dxp[r], rows, dim, 1e-5f, G.g[r], G.streams[r]) !=
        cudaSuccess)
      ok = false;
  }
  if (!G.syncAll()) ok = false;
  std::vector<float> ox(n), oy(n);
  std::vector<__half> oxp(nxp);
  for (int r = 0; r < W && ok; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMemcpy(ox.data(), dx[r], n * 4, cudaMemcpyDeviceToHost), cudaMemcpy(oy.data(), dy[r], n * 4, cudaMemcpyDeviceToHost);
    if (prep) cudaMemcpy(oxp.data(), dxp[r], nxp * 2, cudaMemcpyDeviceToHost);
    ok = std::memcmp(ox.data(), ex.data(), n * 4) == 0 && std::memcmp(oy.data(), ey.data(), n * 4) == 0 &&
         (!prep || std::memcmp(oxp.data(), exp_.data(), nxp * 2) == 0) && !G.flags[r][0];
  }
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(dp[r]), cudaFree(dx[r]), cudaFree(dw[r]), cudaFree(dy[r]), cudaFree(dxp[r]);
  report("all_reduce_rmsnorm world " + std::to_string(W) + " rows " + std::to_string(rows) + " dim " +
             std::to_string(dim) + (prep ? " +xprep" : "") + " (bitwise vs reduce, then rmsnorm)",
         ok);
  return ok;
}

/**
 * The folded norm (all_reduce_fold) on every rank, and its local form (no exchange, the sum given) on GPU 0: x
 * bitwise equal to x + the rank-order sum, xp bitwise equal to cuda::xprep of x * w, and each part's sum of squares
 * within 1e-5 (relative) of a double-precision sum over its columns.
 */
bool check_fold(Group& G, Rng& rng, int rows, int dim) {
  const int W = G.world, parts = cuda::fold_parts(dim);
  const size_t n = (size_t)rows * dim, nxp = cuda::xprep_halves(rows, dim);
  std::vector<std::vector<float>> part(W, std::vector<float>(n));
  std::vector<float> x(n), w(dim), ex(n), xw(n);
  for (auto& v : part)
    for (auto& e : v) e = rng.uniform(-1.f, 1.f);
  for (auto& e : x) e = rng.uniform(-2.f, 2.f);
  for (auto& e : w) e = rng.uniform(0.5f, 1.5f);
  std::vector<float> sum(n, 0.f);
  for (size_t i = 0; i < n; i++) {
    for (int r = 0; r < W; r++) sum[i] += part[r][i];
    ex[i] = x[i] + sum[i];
    xw[i] = ex[i] * w[i % dim];
  }
  std::vector<double> essq((size_t)rows * parts, 0.0);
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < dim; c++) essq[(size_t)r * parts + c / (dim / parts)] += (double)ex[(size_t)r * dim + c] * ex[(size_t)r * dim + c];
  std::vector<__half> exp_(nxp);
  bool ok = parts > 0;
  {
    cudaSetDevice(0);
    float* d;
    __half* dxp;
    cudaMalloc(&d, n * 4), cudaMalloc(&dxp, nxp * 2);
    cudaMemcpy(d, xw.data(), n * 4, cudaMemcpyHostToDevice);
    ok = ok && cuda::xprep(d, rows, dim, dxp, 0) == cudaSuccess && cudaDeviceSynchronize() == 0;
    cudaMemcpy(exp_.data(), dxp, nxp * 2, cudaMemcpyDeviceToHost);
    cudaFree(d), cudaFree(dxp);
  }
  // rank r < W runs the p2p kernel; "rank" W is the local form on GPU 0 with the sum as its partial.
  std::vector<float*> dp(W + 1), dx(W + 1), dw(W + 1), dss(W + 1);
  std::vector<__half*> dxp(W + 1);
  for (int r = 0; r <= W; r++) {
    cudaSetDevice(rank_dev(r < W ? r : 0));
    cudaMalloc(&dp[r], n * 4), cudaMalloc(&dx[r], n * 4), cudaMalloc(&dw[r], dim * 4), cudaMalloc(&dxp[r], nxp * 2);
    cudaMalloc(&dss[r], (size_t)rows * parts * 4 + 4);
    cudaMemcpy(dp[r], r < W ? part[r].data() : sum.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dx[r], x.data(), n * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dw[r], w.data(), dim * 4, cudaMemcpyHostToDevice);
  }
  for (int r = 0; r <= W && ok; r++) {
    cudaSetDevice(rank_dev(r < W ? r : 0));
    if (cuda::all_reduce_fold(dp[r], dx[r], dw[r], dxp[r], dss[r], rows, dim, r < W ? &G.g[r] : nullptr,
                              r < W ? G.streams[r] : G.streams[0]) != cudaSuccess)
      ok = false;
  }
  if (!G.syncAll()) ok = false;
  std::vector<float> ox(n), oss((size_t)rows * parts);
  std::vector<__half> oxp(nxp);
  double worst = 0;
  for (int r = 0; r <= W && ok; r++) {
    cudaSetDevice(rank_dev(r < W ? r : 0));
    cudaMemcpy(ox.data(), dx[r], n * 4, cudaMemcpyDeviceToHost), cudaMemcpy(oxp.data(), dxp[r], nxp * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(oss.data(), dss[r], oss.size() * 4, cudaMemcpyDeviceToHost);
    ok = std::memcmp(ox.data(), ex.data(), n * 4) == 0 && std::memcmp(oxp.data(), exp_.data(), nxp * 2) == 0 &&
         (r == W || !G.flags[r][0]);
    for (size_t i = 0; i < oss.size(); i++) worst = std::max(worst, std::fabs(oss[i] - essq[i]) / essq[i]);
  }
  ok = ok && worst <= 1e-5;
  for (int r = 0; r <= W; r++) {
    cudaSetDevice(rank_dev(r < W ? r : 0));
    cudaFree(dp[r]), cudaFree(dx[r]), cudaFree(dw[r]), cudaFree(dxp[r]), cudaFree(dss[r]);
  }
  char msg[160];
  std::snprintf(msg, sizeof msg, "all_reduce_fold world %d rows %d dim %d, and local (x, xp bitwise; ssq rel %.1e)", W,
                rows, dim, worst);
  report(msg, ok);
  return ok;
}

/**
 * The one-token GEMV with the exchange in its epilogue (Int4Epilogue::comm, the row-parallel O / down of a decode
 * step): every rank multiplies its own weight (rows x cols, its shard) and the fused epilogue adds the ranks' sums in
 * rank order to x, writes the next GEMV's prepared input x * w and per-tile sums of squares. Against the plain GEMV
 * into a partial and all_reduce_fold (the unfused path): x and xp bitwise, the total sum of squares within 1e-5
 * (it is split into other parts). Two rounds, so the calls of both paths share the group's slots in turn.
 */
bool check_gemv_fold(Group& G, Rng& rng, int rows, int cols) {
  const int W = G.world, parts = cuda::fold_parts(rows), tiles = rows / 16;
  const size_t nxp = cuda::xprep_halves(1, rows), nxin = cuda::xprep_halves(1, cols);
  if (!cuda::int4_gemv_allreduce_ok(rows, cols, 128, false, 1)) {
    char msg[120];
    std::snprintf(msg, sizeof msg, "gemv + exchange world %d %dx%d: int4_gemv_allreduce_ok says no", W, rows, cols);
    report(msg, false);
    return false;
  }
  std::vector<float> x0(rows), w(rows);
  for (auto& e : x0) e = rng.uniform(-2.f, 2.f);
  for (auto& e : w) e = rng.uniform(0.5f, 1.5f);
  struct Rank {
    check::DevT d;
    float *xin, *part, *xa, *xb, *w, *ssa, *ssb;
    __half *xpin, *xpa, *xpb;
  };
  std::vector<Rank> R(W);
  bool ok = true;
  for (int r = 0; r < W && ok; r++) {
    CUDA_CHECK_BOOL(cudaSetDevice(rank_dev(r)));
    check::HostW hw = check::make_weight(rng, rows, cols, 128, false);
    if (check::upload(hw, R[r].d, 1)) return false;
    std::vector<float> xin(cols);
    for (auto& e : xin) e = rng.uniform(-1.f, 1.f);
    Rank& k = R[r];
    k.xin = k.d.alloc<float>(cols * 4), k.part = k.d.alloc<float>(rows * 4), k.xa = k.d.alloc<float>(rows * 4);
    k.xb = k.d.alloc<float>(rows * 4), k.w = k.d.alloc<float>(rows * 4), k.ssa = k.d.alloc<float>(tiles * 4);
    k.ssb = k.d.alloc<float>(parts * 4 + 4), k.xpin = k.d.alloc<__half>(nxin * 2), k.xpa = k.d.alloc<__half>(nxp * 2);
    k.xpb = k.d.alloc<__half>(nxp * 2);
    CUDA_CHECK_BOOL(cudaMemcpy(k.xin, xin.data(), cols * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK_BOOL(cudaMemcpy(k.w, w.data(), rows * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK_BOOL(cuda::xprep(k.xin, 1, cols, k.xpin, 0));
    CUDA_CHECK_BOOL(cudaDeviceSynchronize());
  }
  double worst = 0;
  for (int round = 0; round < 2 && ok; round++) {
    for (int r = 0; r < W; r++) {
      cudaSetDevice(rank_dev(r));
      CUDA_CHECK_BOOL(cudaMemcpy(R[r].xa, x0.data(), rows * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK_BOOL(cudaMemcpy(R[r].xb, x0.data(), rows * 4, cudaMemcpyHostToDevice));
    }
    for (int r = 0; r < W && ok; r++) {  // fused: every rank's kernel must run at once (they wait for each other)
      cudaSetDevice(rank_dev(r));
      cuda::Int4Epilogue ep;
      ep.accumulate = true, ep.normW = R[r].w, ep.xpOut = R[r].xpa, ep.ssqOut = R[r].ssa, ep.comm = G.g[r];
      ok = cuda::int4_tiled_matmul(nullptr, R[r].xpin, true, R[r].d.t[0], R[r].xa, 1, nullptr, G.streams[r], false,
                                   ep, nullptr, 0) == cudaSuccess;
    }
    if (!G.syncAll()) ok = false;
    for (int r = 0; r < W && ok; r++) {  // unfused: the plain GEMV, then the fold with its exchange
      cudaSetDevice(rank_dev(r));
      ok = cuda::int4_tiled_matmul(nullptr, R[r].xpin, true, R[r].d.t[0], R[r].part, 1, nullptr, G.streams[r], false,
                                   cuda::Int4Epilogue(), nullptr, 0) == cudaSuccess &&
           cuda::all_reduce_fold(R[r].part, R[r].xb, R[r].w, R[r].xpb, R[r].ssb, 1, rows, &G.g[r], G.streams[r]) ==
               cudaSuccess;
    }
    if (!G.syncAll()) ok = false;
    std::vector<float> xa(rows), xb(rows), ssa(tiles), ssb(parts);
    std::vector<__half> pa(nxp), pb(nxp);
    for (int r = 0; r < W && ok; r++) {
      cudaSetDevice(rank_dev(r));
      cudaMemcpy(xa.data(), R[r].xa, rows * 4, cudaMemcpyDeviceToHost), cudaMemcpy(xb.data(), R[r].xb, rows * 4, cudaMemcpyDeviceToHost);
      cudaMemcpy(pa.data(), R[r].xpa, nxp * 2, cudaMemcpyDeviceToHost), cudaMemcpy(pb.data(), R[r].xpb, nxp * 2, cudaMemcpyDeviceToHost);
      cudaMemcpy(ssa.data(), R[r].ssa, tiles * 4, cudaMemcpyDeviceToHost), cudaMemcpy(ssb.data(), R[r].ssb, parts * 4, cudaMemcpyDeviceToHost);
      double ta = 0, tb = 0, exact = 0;
      for (float v : ssa) ta += v;
      for (float v : ssb) tb += v;
      for (float v : xb) exact += (double)v * v;
      worst = std::max({worst, std::fabs(ta - exact) / exact, std::fabs(tb - exact) / exact});
      ok = std::memcmp(xa.data(), xb.data(), rows * 4) == 0 && std::memcmp(pa.data(), pb.data(), nxp * 2) == 0 &&
           !G.flags[r][0];
      if (r > 0) {  // every rank the same x
        std::vector<float> x0r(rows);
        cudaSetDevice(0);
        cudaMemcpy(x0r.data(), R[0].xa, rows * 4, cudaMemcpyDeviceToHost);
        ok = ok && std::memcmp(x0r.data(), xa.data(), rows * 4) == 0;
      }
    }
  }
  ok = ok && worst <= 1e-5;
  char msg[160];
  std::snprintf(msg, sizeof msg, "gemv + exchange world %d %dx%d vs gemv, all_reduce_fold (x, xp bitwise; ssq %.1e)",
                W, rows, cols, worst);
  report(msg, ok);
  return ok;
}

/** Captures 3 all-reduces per rank into a graph and replays it: epochs live on the device, so replays stay in step. */
bool check_graph(Group& G, Rng& rng, size_t n) {
  const int W = G.world;
  std::vector<float*> d(W);
  std::vector<cudaGraphExec_t> ex;
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaMalloc(&d[r], n * sizeof(float));
  bool ok = G.capture(
      [&](int r) {
        for (int k = 0; k < 3; k++)
          if (cuda::p2p_all_reduce(d[r], n, G.g[r], G.streams[r]) != cudaSuccess) return false;
        return true;
      },
      ex);
  for (int rep = 0; rep < 5 && ok; rep++) {
    std::vector<std::vector<float>> in(W, std::vector<float>(n));
    for (auto& v : in)
      for (auto& x : v) x = (float)(int)rng.uniform(-8.f, 8.f);  // integers: three rounds of sums stay exact
    // Every input first: a synchronous copy between the launches would wait, on a GPU that holds several ranks
    // (--virtual-ranks), for the graph of a rank that waits for this one.
    for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaMemcpy(d[r], in[r].data(), n * sizeof(float), cudaMemcpyHostToDevice);
    for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaGraphLaunch(ex[r], G.streams[r]);
    if (!G.syncAll()) ok = false;
    std::vector<float> out(n);
    for (int r = 0; r < W && ok; r++) {
      cudaSetDevice(rank_dev(r));
      cudaMemcpy(out.data(), d[r], n * sizeof(float), cudaMemcpyDeviceToHost);
      for (size_t i = 0; i < n && ok; i++) {
        float s = 0.f;
        for (int j = 0; j < W; j++) s += in[j][i];
        if (out[i] != s * W * W) ok = false;  // after 3 rounds: sum * W * W
      }
    }
  }
  G.destroyGraphs(ex);
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(d[r]);
  report("all_reduce in a CUDA graph, world " + std::to_string(W) + " n " + std::to_string(n) + " x5 replays", ok);
  return ok;
}

/**
 * Median microseconds per call of `op` (mode 0: all-reduce of n floats; 1: all-reduce + rmsnorm of n / dim rows
 * of dim; 2: the same unfused, all-reduce then rmsnorm; 3: the folded norm, all_reduce_fold): 200 back-to-back
 * calls captured in one CUDA graph per
 * rank (as in a decode step's graph), the graphs launched together.
 */
double time_p2p(Group& G, size_t n, int mode = 0, int dim = 4096) {
  const int W = G.world, iters = 200, rows = (int)(n / dim);
  std::vector<float*> d(W), x(W), y(W), ss(W);
  std::vector<__half*> xp(W);
  std::vector<cudaGraphExec_t> ex(W);
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r)), cudaMalloc(&d[r], n * sizeof(float)), cudaMemset(d[r], 0, n * 4);
    cudaMalloc(&xp[r], cuda::xprep_halves(16, dim) * 2), cudaMalloc(&ss[r], 16 * 64 * 4);
    cudaMalloc(&x[r], n * 4), cudaMemset(x[r], 0, n * 4), cudaMalloc(&y[r], (n + dim) * 4);  // y: w, then the output
    cudaMemset(y[r], 0, (n + dim) * 4);
  }
  // One rank's calls, captured into its graph.
  const auto enqueue = [&](int r) {
    for (int k = 0; k < iters; k++) {
      if (mode == 3) {
        cuda::all_reduce_fold(d[r], x[r], y[r], xp[r], ss[r], rows, dim, &G.g[r], G.streams[r]);
      } else if (mode == 1) {
        cuda::p2p_all_reduce_rmsnorm(d[r], x[r], y[r], y[r] + dim, nullptr, rows, dim, 1e-5f, G.g[r], G.streams[r]);
      } else {
        cuda::p2p_all_reduce(d[r], n, G.g[r], G.streams[r]);
        if (mode == 2) cuda::rmsnorm(x[r], d[r], y[r], y[r] + dim, rows, dim, 1e-5f, G.streams[r]);
      }
    }
    return true;
  };
  const double us = G.capture(enqueue, ex) ? G.replayMedianUs(ex, 1, 5, iters) : -1;
  G.destroyGraphs(ex);
  for (int r = 0; r < W; r++)
    cudaSetDevice(rank_dev(r)), cudaFree(d[r]), cudaFree(x[r]), cudaFree(y[r]), cudaFree(xp[r]), cudaFree(ss[r]);
  return us;
}

/** The same with NCCL (eager, one group call per all-reduce over every rank); -1 when NCCL is unavailable. */
double time_nccl(int W, size_t n) {
  std::string why;
  const nccl::Api* api = nccl::load(why);
  if (!api || !api->commInitAll || !api->groupStart) return -1;
  std::vector<nccl::Comm> comms(W);
  std::vector<int> devs(W);
  for (int r = 0; r < W; r++) devs[r] = r;
  if (api->commInitAll(comms.data(), W, devs.data()) != 0) return -1;
  std::vector<float*> d(W);
  std::vector<cudaStream_t> s(W);
  for (int r = 0; r < W; r++)
    cudaSetDevice(rank_dev(r)), cudaMalloc(&d[r], n * 4), cudaMemset(d[r], 0, n * 4), cudaStreamCreate(&s[r]);
  auto one = [&] {
    api->groupStart();
    for (int r = 0; r < W; r++) api->allReduce(d[r], d[r], n, nccl::kFloat32, nccl::kSum, comms[r], s[r]);
    api->groupEnd();
  };
  auto syncAll = [&] {
    for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaStreamSynchronize(s[r]);
  };
  for (int k = 0; k < 20; k++) one();
  syncAll();
  std::vector<double> per;
  for (int rep = 0; rep < 5; rep++) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int k = 0; k < 100; k++) one();
    syncAll();
    per.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count() / 100);
  }
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(d[r]), cudaStreamDestroy(s[r]), api->commDestroy(comms[r]);
  std::sort(per.begin(), per.end());
  return per[per.size() / 2];
}

}  // namespace

/**
 * --virtual-ranks: the checks above at shapes whose blocks, times the W ranks sharing GPU 0, are all resident at once
 * (a rank's blocks poll for their peers' blocks, which must be able to run beside them): at most about 128 blocks of
 * 512-1024 threads, or 1,000 of 256, a call. The real models' widths stay (4096, 8192, down's 5504 shard columns).
 */
void virtual_checks(Group& G, Rng& rng) {
  for (size_t n : {(size_t)1, (size_t)1000, (size_t)4096, (size_t)4096 * 8 + 5}) check_sum(G, rng, n, 3);
  check_gather(G, rng, 1, 16000), check_gather(G, rng, 3, 4097);
  check_gather_xprep(G, rng, 1, 2048), check_gather_xprep(G, rng, 1, 5504), check_gather_xprep(G, rng, 3, 2048);
  check_gather_xprep(G, rng, 9, 5504);
  check_gather_xprep_stream(G, rng, 128, 256, 200), check_gather_xprep_stream(G, rng, 2048, 4096, 50);
  check_graph(G, rng, 4096 * 4);
  check_fused(G, rng, 1, 4096), check_fused(G, rng, 8, 4096), check_fused(G, rng, 16, 8192), check_fused(G, rng, 3, 256);
  check_fold(G, rng, 1, 4096), check_fold(G, rng, 1, 8192), check_fold(G, rng, 8, 4096), check_fold(G, rng, 3, 5120);
  check_fold(G, rng, 2, 256), check_fold(G, rng, 16, 1024);
  check_gemv_fold(G, rng, 256, 2048), check_gemv_fold(G, rng, 256, 5504), check_gemv_fold(G, rng, 128, 8192);
  check_embed_norm(G, rng, 1, 4096, 16000), check_embed_norm(G, rng, 1, 8192, 1000);
  check_embed_norm(G, rng, 16, 4096, 1000), check_embed_norm(G, rng, 3, 256, 50), check_embed_norm(G, rng, 40, 256, 300);
  for (size_t n : {(size_t)4096, (size_t)3}) check_sum(G, rng, n, 4);  // slots still in step after the above
}

int main(int argc, char** argv) {
  const char* json = arg_value(argc, argv, "--json");
  if (const char* role = arg_value(argc, argv, "--ipc-role")) {
    const char* dir = arg_value(argc, argv, "--ipc-dir");
    return ipc_exchange(std::atoi(role), dir ? dir : "/tmp");
  }
  int count = 0;
  CUDA_CHECK(cudaGetDeviceCount(&count));
  if (const char* v = arg_value(argc, argv, "--virtual-ranks")) {
    g_virtualRanks = std::atoi(v);
    if (g_virtualRanks < 2 || g_virtualRanks > cuda::kP2pMaxRanks) {
      std::printf("check_allreduce: --virtual-ranks takes 2 to %d, not %s\n", cuda::kP2pMaxRanks, v);
      return 2;
    }
  }
  const int ranks = g_virtualRanks ? g_virtualRanks : count;  // the largest group
  if (ranks < 2) {
    std::printf("check_allreduce: %d GPU(s) visible; the p2p collectives need 2 or more: nothing checked\n", count);
    return 0;
  }
  for (int a = 0; a < count && !g_virtualRanks; a++)
    for (int b = 0; b < count; b++) {
      int can = 1;
      if (a != b) cudaDeviceCanAccessPeer(&can, a, b);
      if (!can) {
        std::printf("GPU %d cannot access GPU %d peer to peer: the p2p path is off on this machine\n", a, b);
        return 1;
      }
    }
  if (g_virtualRanks)
    std::printf("devices: %d x %s; ranks of up to %d, all on GPU 0\n", count, device_name().c_str(), g_virtualRanks);
  else
    std::printf("devices: %d x %s\n", count, device_name().c_str());
  Rng rng(7);
  const bool chainOnly = has_flag(argc, argv, "--chain");
  std::vector<int> worlds;
  for (int w = 2; w <= ranks && !(chainOnly && w > 2); w *= 2) worlds.push_back(w);
  for (int W : worlds) {
    Group G;
    if (G.init(W, 100'000'000LL)) return 1;  // 100 ms: the timeout check below
    if (g_virtualRanks) {
      virtual_checks(G, rng);
      check_timeout(G);
      G.destroy();
      continue;
    }
    if (chainOnly) {
      const char* layers = arg_value(argc, argv, "--layers");
      if (gemv_chain_bench(G, rng, layers ? std::atoi(layers) : 32)) return 1;
      G.destroy();
      continue;
    }
    for (size_t n : {(size_t)1, (size_t)1000, (size_t)4096, (size_t)4096 * 8 + 5, (size_t)4096 * 32, kCap})
      check_sum(G, rng, n, 3);
    check_gather(G, rng, 1, 16000), check_gather(G, rng, 8, 16000), check_gather(G, rng, 3, 4097);
    // Act-order O and down shards of Llama-2-7B at TP = 2 (2048 and 5504 stored columns), batches 1, 3 and 16.
    check_gather_xprep(G, rng, 1, 2048), check_gather_xprep(G, rng, 1, 5504), check_gather_xprep(G, rng, 3, 2048);
    check_gather_xprep(G, rng, 16, 1024), check_gather_xprep(G, rng, 9, 5504);
    check_gather_xprep_stream(G, rng, 128, 256, 200), check_gather_xprep_stream(G, rng, 2048, 4096, 50);
    check_graph(G, rng, 4096 * 4);
    check_fused(G, rng, 1, 4096), check_fused(G, rng, 8, 4096), check_fused(G, rng, 16, 8192);
    check_fused(G, rng, 32, 4096), check_fused(G, rng, 3, 256);
    check_fold(G, rng, 1, 4096), check_fold(G, rng, 1, 8192), check_fold(G, rng, 8, 4096), check_fold(G, rng, 3, 5120);
    check_fold(G, rng, 2, 256), check_fold(G, rng, 16, 1024);
    // O and down of Llama-2-7B at TP = 2, O of Llama-2-70B at TP = 4 (its shard shapes at any world here).
    check_gemv_fold(G, rng, 4096, 2048), check_gemv_fold(G, rng, 4096, 5504), check_gemv_fold(G, rng, 8192, 2048);
    // The step's first kernel: Llama-2-7B and -70B rows, a prefill-sized batch, a narrow row (256 threads).
    check_embed_norm(G, rng, 1, 4096, 16000), check_embed_norm(G, rng, 1, 8192, 1000);
    check_embed_norm(G, rng, 16, 4096, 1000), check_embed_norm(G, rng, 24, 4096, 300), check_embed_norm(G, rng, 3, 256, 50);
    check_embed_norm(G, rng, 17, 4096, 300), check_embed_norm(G, rng, 24, 256, 300), check_embed_norm(G, rng, 40, 256, 300);
    for (size_t n : {(size_t)4096, (size_t)3}) check_sum(G, rng, n, 4);  // slots still in step after the above
    for (size_t n : {(size_t)4096, (size_t)8192, (size_t)4096 * 32, (size_t)8192 * 32}) {
      const double us = time_p2p(G, n), nus = time_nccl(W, n);
      std::printf("world %d  %8zu bytes  p2p %7.2f us  nccl %7.2f us\n", W, n * 4, us, nus);
      g_bench.push_back({"p2p_all_reduce", W, n * 4, us});
      if (nus > 0) g_bench.push_back({"nccl_all_reduce", W, n * 4, nus});
    }
    // Rows of 4096 (Llama-2-7B) and one row of 8192 (Llama-2-70B at batch 1).
    for (auto [n, dim] : {std::pair<size_t, int>{4096, 4096}, {4096 * 32, 4096}, {8192, 8192}, {8192 * 8, 8192}}) {
      const double fused = time_p2p(G, n, 1, dim), apart = time_p2p(G, n, 2, dim);
      const double folded = n / dim <= 16 ? time_p2p(G, n, 3, dim) : -1;
      std::printf("world %d  %8zu bytes  all-reduce + rmsnorm (dim %d): fused %7.2f us, apart %7.2f us, folded %7.2f us\n",
                  W, n * 4, dim, fused, apart, folded);
      g_bench.push_back({"p2p_all_reduce_rmsnorm", W, n * 4, fused});
      g_bench.push_back({"p2p_all_reduce_then_rmsnorm", W, n * 4, apart});
      if (folded > 0) g_bench.push_back({"p2p_all_reduce_fold", W, n * 4, folded});
    }
    if (W == 2) pingpong_bench(G);
    check_timeout(G);  // last: it leaves rank 0 one epoch ahead
    G.destroy();
  }
  if (!chainOnly) check_abort_device();
  if (json) {
    Json j;
    j.begin_obj().kv("device", device_name()).kv("gpus", (long long)count);
    if (g_virtualRanks) j.kv("virtualRanks", (long long)g_virtualRanks);
    j.kv("pass", !g_failed);
    j.key("checks").begin_arr();
    for (auto& c : g_checks) j.begin_obj().kv("name", c.first).kv("pass", c.second).end_obj();
    j.end_arr().key("bench").begin_arr();
    for (auto& b : g_bench)
      j.begin_obj().kv("name", b.name).kv("world", (long long)b.world).kv("bytes", (long long)b.bytes).kv("us_per_call", b.us).end_obj();
    j.end_arr().end_obj();
    if (!j.write(json)) g_failed = true;
  }
  std::printf("%s\n", g_failed ? "check_allreduce: FAILED" : "check_allreduce: all passed");
  return g_failed ? 1 : 0;
}
