// check_allreduce's cases for cuda::p2p_gather_xprep (an act-order row-parallel shard's decode input gathered,
// permuted and prepared in one kernel): against the gather done on the host, permuted, then cuda::xprep (bitwise), and
// back to back with all-reduces.
#pragma once
#include <cstring>
#include <string>
#include <utility>
#include <vector>

#include "../kernels/allreduce.cuh"
#include "../kernels/kernels.cuh"
#include "../kernels/xprep.cuh"
#include "check_util.cuh"
#include "p2p_check_group.cuh"

namespace {

/**
 * p2p_gather_xprep (a row-parallel act-order shard's decode input: gathered, permuted, prepared in one kernel)
 * against the gather done on the host, permuted, then cuda::xprep: bitwise, on every rank. Rank r's stored columns
 * are the range [r cols, (r + 1) cols) of a random permutation of the whole input, as a checkpoint's shard.
 */
bool check_gather_xprep(Group& G, tpserve::check::Rng& rng, int rows, int cols) {
  using namespace tpserve;
  const int W = G.world, K = W * cols;
  const size_t n = (size_t)rows * cols;
  std::vector<std::vector<float>> in(W, std::vector<float>(n));
  for (auto& v : in)
    for (auto& x : v) x = rng.uniform(-3.f, 3.f);
  std::vector<int32_t> perm(K);
  for (int i = 0; i < K; i++) perm[i] = i;
  for (int i = K - 1; i > 0; i--) std::swap(perm[i], perm[rng.below((uint32_t)i + 1)]);
  const size_t halves = cuda::xprep_halves(rows, cols);
  std::vector<float*> d(W), xs(W);
  std::vector<int32_t*> pm(W);
  std::vector<__half*> got(W), want(W);
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMalloc(&d[r], n * sizeof(float)), cudaMalloc(&xs[r], n * sizeof(float)), cudaMalloc(&pm[r], cols * 4);
    cudaMalloc(&got[r], halves * 2), cudaMalloc(&want[r], halves * 2);
    cudaMemcpy(d[r], in[r].data(), n * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(pm[r], perm.data() + (size_t)r * cols, cols * 4, cudaMemcpyHostToDevice);
    std::vector<float> x(n);  // this rank's stored columns of the whole input
    for (int t = 0; t < rows; t++)
      for (int i = 0; i < cols; i++) {
        const int src = perm[(size_t)r * cols + i];
        x[(size_t)t * cols + i] = in[src / cols][(size_t)t * cols + src % cols];
      }
    cudaMemcpy(xs[r], x.data(), n * sizeof(float), cudaMemcpyHostToDevice);
  }
  bool ok = true;
  // Every rank's gather first: a reference kernel launched between them could keep the host (lazy module loading)
  // past the group's 100 ms timeout while rank 0 waits for rank 1.
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    if (cuda::p2p_gather_xprep(d[r], rows, cols, pm[r], cols, got[r], G.g[r], G.streams[r]) != cudaSuccess) ok = false;
  }
  if (!G.syncAll()) ok = false;
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    if (cuda::xprep(xs[r], rows, cols, want[r], G.streams[r]) != cudaSuccess) ok = false;
  }
  if (!G.syncAll()) ok = false;
  std::vector<uint16_t> a(halves), b(halves);
  for (int r = 0; r < W && ok; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMemcpy(a.data(), got[r], halves * 2, cudaMemcpyDeviceToHost);
    cudaMemcpy(b.data(), want[r], halves * 2, cudaMemcpyDeviceToHost);
    if (G.flags[r][0]) std::printf("  rank %d: a poll timed out\n", r), ok = false;
    for (size_t k = 0; k < halves; k++)
      if (a[k] != b[k]) {
        std::printf("  rank %d: half %zu of %zu is %04x, want %04x\n", r, k, halves, a[k], b[k]);
        ok = false;
        break;
      }
  }
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaFree(d[r]), cudaFree(xs[r]), cudaFree(pm[r]), cudaFree(got[r]), cudaFree(want[r]);
  }
  report("gather_xprep world " + std::to_string(W) + " rows " + std::to_string(rows) + " cols " + std::to_string(cols) +
             " (bitwise vs gather, permute, xprep)",
         ok);
  return ok;
}

/**
 * p2p_gather_xprep and p2p_all_reduce back to back, `rounds` times with no host sync between them (as a pass runs
 * them): every all-reduce must still be the rank-order sum, bitwise. (Each rank reads only some of a peer's gathered
 * values; the kernel waits for the rest too, or a slot could be reset before a late push lands. This check did not
 * catch that race without the wait; the act-order equality of bench/gpu-tp.ts did: docs/gpu-runs.md run 71.)
 */
bool check_gather_xprep_stream(Group& G, tpserve::check::Rng& rng, int cols, size_t n, int rounds) {
  using namespace tpserve;
  const int W = G.world, K = W * cols;
  std::vector<int32_t> perm(K);
  for (int i = 0; i < K; i++) perm[i] = i;
  for (int i = K - 1; i > 0; i--) std::swap(perm[i], perm[rng.below((uint32_t)i + 1)]);
  std::vector<std::vector<float>> in(W, std::vector<float>((size_t)rounds * n)), loc(W, std::vector<float>(cols));
  for (auto& v : in)
    for (auto& x : v) x = rng.uniform(-4.f, 4.f);
  for (auto& v : loc)
    for (auto& x : v) x = rng.uniform(-1.f, 1.f);
  std::vector<float*> d(W), l(W);
  std::vector<int32_t*> pm(W);
  std::vector<__half*> xp(W);
  for (int r = 0; r < W; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMalloc(&d[r], in[r].size() * sizeof(float)), cudaMalloc(&l[r], cols * sizeof(float));
    cudaMalloc(&pm[r], cols * 4), cudaMalloc(&xp[r], cuda::xprep_halves(1, cols) * 2);
    cudaMemcpy(d[r], in[r].data(), in[r].size() * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(l[r], loc[r].data(), cols * sizeof(float), cudaMemcpyHostToDevice);
    cudaMemcpy(pm[r], perm.data() + (size_t)r * cols, cols * 4, cudaMemcpyHostToDevice);
  }
  bool ok = true;
  for (int k = 0; k < rounds; k++)
    for (int r = 0; r < W; r++) {
      cudaSetDevice(rank_dev(r));
      if (cuda::p2p_gather_xprep(l[r], 1, cols, pm[r], cols, xp[r], G.g[r], G.streams[r]) != cudaSuccess) ok = false;
      if (cuda::p2p_all_reduce(d[r] + (size_t)k * n, n, G.g[r], G.streams[r]) != cudaSuccess) ok = false;
    }
  if (!G.syncAll()) ok = false;
  std::vector<float> ref((size_t)rounds * n), out(ref.size());
  for (size_t i = 0; i < ref.size(); i++) {
    float s = 0.f;
    for (int r = 0; r < W; r++) s += in[r][i];
    ref[i] = s;
  }
  for (int r = 0; r < W && ok; r++) {
    cudaSetDevice(rank_dev(r));
    cudaMemcpy(out.data(), d[r], out.size() * sizeof(float), cudaMemcpyDeviceToHost);
    if (std::memcmp(out.data(), ref.data(), out.size() * sizeof(float)) != 0) ok = false;
    if (G.flags[r][0]) std::printf("  rank %d: a poll timed out\n", r), ok = false;
  }
  for (int r = 0; r < W; r++) cudaSetDevice(rank_dev(r)), cudaFree(d[r]), cudaFree(l[r]), cudaFree(pm[r]), cudaFree(xp[r]);
  report("gather_xprep + all_reduce back to back, world " + std::to_string(W) + " cols " + std::to_string(cols) +
             " n " + std::to_string(n) + " x" + std::to_string(rounds),
         ok);
  return ok;
}

}  // namespace
