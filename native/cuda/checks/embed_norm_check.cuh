// check_allreduce's case for cuda::embed_rmsnorm (kernels/embed_norm.cu): the step's first kernel against the three
// it replaces (embedding of the whole table, then rmsnorm; the all-reduce of zero and one row is that row), bitwise:
// x, y and the prepared input on every rank of the group, and on GPU 0 alone without a group.
#pragma once
#include <cstring>
#include <string>
#include <vector>

#include "../kernels/allreduce.cuh"
#include "../kernels/kernels.cuh"
#include "../kernels/xprep.cuh"
#include "p2p_check_group.cuh"

namespace {

bool check_embed_norm(Group& G, tpserve::check::Rng& rng, int rows, int dim, int vocabPerRank) {
  using namespace tpserve;
  const int W = G.world, V = W * vocabPerRank;
  const size_t n = (size_t)rows * dim;
  const bool prep = rows <= 16 && dim % 64 == 0;
  const size_t nxp = prep ? cuda::xprep_halves(rows, dim) : 0;
  std::vector<float> table((size_t)V * dim), w(dim);
  for (auto& e : table) e = rng.uniform(-1.f, 1.f);
  for (auto& e : w) e = rng.uniform(0.5f, 1.5f);
  std::vector<int32_t> ids(rows);
  for (auto& id : ids) id = (int32_t)rng.below((uint32_t)V);
  // Reference on GPU 0: the whole table, embedding then rmsnorm.
  cudaSetDevice(0);
  float *rt, *rw, *rx, *ry;
  int32_t* rid;
  __half* rxp = nullptr;
  cudaMalloc(&rt, table.size() * 4), cudaMalloc(&rw, dim * 4), cudaMalloc(&rx, n * 4), cudaMalloc(&ry, n * 4);
  cudaMalloc(&rid, rows * 4);
  if (prep) cudaMalloc(&rxp, nxp * 2);
  cudaMemcpy(rt, table.data(), table.size() * 4, cudaMemcpyHostToDevice);
  cudaMemcpy(rw, w.data(), dim * 4, cudaMemcpyHostToDevice), cudaMemcpy(rid, ids.data(), rows * 4, cudaMemcpyHostToDevice);
  bool ok = cuda::embedding(rid, rows, rt, dim, rx, 0, 0, V) == cudaSuccess &&
            cuda::rmsnorm(rx, nullptr, rw, ry, rows, dim, 1e-5f, 0, rxp) == cudaSuccess && cudaDeviceSynchronize() == 0;
  std::vector<float> ex(n), ey(n), ox(n), oy(n);
  std::vector<__half> exp_(nxp), oxp(nxp);
  cudaMemcpy(ex.data(), rx, n * 4, cudaMemcpyDeviceToHost), cudaMemcpy(ey.data(), ry, n * 4, cudaMemcpyDeviceToHost);
  if (prep) cudaMemcpy(exp_.data(), rxp, nxp * 2, cudaMemcpyDeviceToHost);
  const auto same = [&](float* x, float* y, __half* xp) {
    cudaMemcpy(ox.data(), x, n * 4, cudaMemcpyDeviceToHost), cudaMemcpy(oy.data(), y, n * 4, cudaMemcpyDeviceToHost);
    if (prep) cudaMemcpy(oxp.data(), xp, nxp * 2, cudaMemcpyDeviceToHost);
    const bool okx = std::memcmp(ox.data(), ex.data(), n * 4) == 0, oky = std::memcmp(oy.data(), ey.data(), n * 4) == 0;
    const bool okp = !prep || std::memcmp(oxp.data(), exp_.data(), nxp * 2) == 0;
    if (!okx || !oky) {  // where it differs, for the log
      size_t bad = 0, first = n;
      for (size_t i = 0; i < n; i++)
        if (std::memcmp(&ox[i], &ex[i], 4) != 0 || std::memcmp(&oy[i], &ey[i], 4) != 0) bad++, first = std::min(first, i);
      std::printf("  x %s, y %s: %zu of %zu differ, first at row %zu col %zu: x %g (want %g), y %g (want %g)\n",
                  okx ? "same" : "differs", oky ? "same" : "differs", bad, n, first / dim, first % dim,
                  ox[first], ex[first], oy[first], ey[first]);
    }
    return okx && oky && okp;
  };
  // One GPU, no group: the whole table.
  cudaMemset(rx, 0, n * 4), cudaMemset(ry, 0, n * 4);
  bool alone = ok && cuda::embed_rmsnorm(rid, rows, rt, 0, V, rw, rx, ry, rxp, dim, 1e-5f, nullptr, 0) == cudaSuccess &&
               cudaDeviceSynchronize() == 0 && same(rx, ry, rxp);
  cudaFree(rt), cudaFree(rw), cudaFree(rx), cudaFree(ry), cudaFree(rid), cudaFree(rxp);
  // The group: rank r holds rows [r * vocabPerRank, (r + 1) * vocabPerRank).
  std::vector<float*> dt(W), dw(W), dx(W), dy(W);
  std::vector<int32_t*> did(W);
  std::vector<__half*> dxp(W, nullptr);
  const size_t shard = (size_t)vocabPerRank * dim;
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMalloc(&dt[r], shard * 4), cudaMalloc(&dw[r], dim * 4), cudaMalloc(&dx[r], n * 4), cudaMalloc(&dy[r], n * 4);
    cudaMalloc(&did[r], rows * 4);
    if (prep) cudaMalloc(&dxp[r], nxp * 2);
    cudaMemcpy(dt[r], table.data() + r * shard, shard * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(dw[r], w.data(), dim * 4, cudaMemcpyHostToDevice);
    cudaMemcpy(did[r], ids.data(), rows * 4, cudaMemcpyHostToDevice);
  }
  bool group = ok;
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    if (cuda::embed_rmsnorm(did[r], rows, dt[r], r * vocabPerRank, vocabPerRank, dw[r], dx[r], dy[r], dxp[r], dim,
                            1e-5f, &G.g[r], G.streams[r]) != cudaSuccess)
      group = false;
  }
  if (!G.syncAll()) group = false;
  for (int r = 0; r < W && group; r++) {
    cudaSetDevice(rank_dev(r));
    group = same(dx[r], dy[r], dxp[r]) && !G.flags[r][0];
    if (G.flags[r][0]) std::printf("  rank %d: a poll timed out\n", r);
  }
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaFree(dt[r]), cudaFree(dw[r]), cudaFree(dx[r]), cudaFree(dy[r]), cudaFree(did[r]), cudaFree(dxp[r]);
  }
  const std::string shape = " rows " + std::to_string(rows) + " dim " + std::to_string(dim) + (prep ? " +xprep" : "");
  report("embed_rmsnorm one GPU" + shape + " (bitwise vs embedding, rmsnorm)", alone);
  report("embed_rmsnorm world " + std::to_string(W) + shape + " (bitwise vs embedding, rmsnorm)", group);
  return alone && group;
}

}  // namespace
