// check_chain's barrier time stamps, read back: per matrix role, where a grid barrier's time goes (used for the
// register ring's stamps, Bar::stamps, and the lean kernel's, Bar::stamps3), and the lean kernel's report.
#pragma once
#include <algorithm>
#include <climits>
#include <cmath>
#include <cstdio>
#include <vector>

#include "chain_variants.cuh"

namespace {

const char* const kRoleNames[4] = {"QKV", "O", "gate/up", "down"};

/**
 * Means in us per matrix role (barrier j follows matrix j, role j % 4) over the barriers: the spread of the blocks'
 * entries (work imbalance, the claims' tail), a block's time from entry to arrival, the spread of the arrivals, the
 * last arrival to the first departure (the counter's round trip), and a block's wait from arrival to departure.
 */
struct BarrierStats {
  double entry[4] = {}, drain[4] = {}, arrive[4] = {}, release[4] = {}, wait[4] = {};
  int cnt[4] = {};
  double mean(const double (&v)[4], int r) const { return cnt[r] ? v[r] / cnt[r] / 1e3 : 0.0; }
};

/** From stamps h of `per` entries a (barrier, block), nb blocks: per 2 = arrival, departure (entry = arrival);
 * per 3 = entry, arrival, departure. */
inline BarrierStats barrier_stats(const std::vector<long long>& h, int nMats, int nb, int per) {
  BarrierStats bs;
  const int ai = per - 2, di = per - 1;
  for (int j = 0; j + 1 < nMats; j++) {
    long long e0 = LLONG_MAX, e1 = LLONG_MIN, a0 = LLONG_MAX, a1 = LLONG_MIN, d0 = LLONG_MAX;
    double dr = 0, w = 0;
    for (int b = 0; b < nb; b++) {
      const long long* s = &h[((size_t)j * nb + b) * per];
      e0 = std::min(e0, s[0]), e1 = std::max(e1, s[0]), a0 = std::min(a0, s[ai]), a1 = std::max(a1, s[ai]);
      d0 = std::min(d0, s[di]), dr += (double)(s[ai] - s[0]), w += (double)(s[di] - s[ai]);
    }
    const int r = j % 4;
    bs.entry[r] += (double)(e1 - e0), bs.drain[r] += dr / nb, bs.arrive[r] += (double)(a1 - a0);
    bs.release[r] += (double)(d0 - a1), bs.wait[r] += w / nb, bs.cnt[r]++;
  }
  return bs;
}

/**
 * Where the lean consumer's grid barriers go (runs 118-119): one launch of a chain_kernel_lean (fn) with stamps,
 * and barrier_stats' means per matrix role.
 */
int lean_barrier_report(void* fn, const char* how, Mat* dm, int nMats, const Bar& bar, unsigned* dctr, int sms,
                        cudaStream_t st) {
  const int smem = tma_ring_bytes<16, 2, 4>(), threads = 18 * 32, nb = sms;
  long long* d;
  const size_t n = (size_t)(nMats - 1) * nb * 3;
  CUDA_CHECK(cudaMalloc(&d, n * sizeof(long long)));
  CUDA_CHECK(cudaMemset(d, 0, n * sizeof(long long)));
  Bar sb = bar;
  sb.stamps3 = d;
  void* args[] = {&dm, &nMats, &sb, &dctr};
  CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CUDA_CHECK(cudaMemsetAsync(bar.count, 0, 32 * 32 * sizeof(unsigned), st));
  CUDA_CHECK(cudaMemsetAsync(dctr, 0, kMaxMats * sizeof(unsigned), st));
  CUDA_CHECK(cudaLaunchCooperativeKernel(fn, dim3(nb), dim3(threads), args, smem, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<long long> h(n);
  CUDA_CHECK(cudaMemcpy(h.data(), d, n * sizeof(long long), cudaMemcpyDeviceToHost));
  cudaFree(d);
  const BarrierStats bs = barrier_stats(h, nMats, nb, 3);
  std::printf("%s, its grid barriers, us (mean over the barriers after each matrix):\n", how);
  for (int r = 0; r < 4; r++)
    if (bs.cnt[r])
      std::printf("after %-8s entries spread %5.2f, reducer's last tile %5.2f, arrivals spread %5.2f, last arrival to "
                  "first departure %5.2f, mean wait %5.2f (%d barriers)\n",
                  kRoleNames[r], bs.mean(bs.entry, r), bs.mean(bs.drain, r), bs.mean(bs.arrive, r),
                  bs.mean(bs.release, r), bs.mean(bs.wait, r), bs.cnt[r]);
  return 0;
}

/**
 * Are the late blocks the same ones each time (stamps of 2 a barrier and block, arrival first)? A block stays on its
 * SM for the whole kernel, so a lateness that persists from one layer to the next (same matrix role) points at slower
 * SMs, which a static weighting of the shares could offset; a correlation near 0 means the stragglers are random.
 */
inline void lateness_report(const std::vector<long long>& h, int nMats, int nb) {
  const auto lateness = [&](int j) {
    std::vector<double> v(nb);
    long long amin = LLONG_MAX;
    for (int b = 0; b < nb; b++) amin = std::min(amin, h[((size_t)j * nb + b) * 2]);
    for (int b = 0; b < nb; b++) v[b] = (double)(h[((size_t)j * nb + b) * 2] - amin);
    return v;
  };
  const auto corr = [](const std::vector<double>& x, const std::vector<double>& y) {
    double mx = 0, my = 0, sxy = 0, sxx = 0, syy = 0;
    for (size_t i = 0; i < x.size(); i++) mx += x[i], my += y[i];
    mx /= (double)x.size(), my /= (double)y.size();
    for (size_t i = 0; i < x.size(); i++)
      sxy += (x[i] - mx) * (y[i] - my), sxx += (x[i] - mx) * (x[i] - mx), syy += (y[i] - my) * (y[i] - my);
    return sxx > 0 && syy > 0 ? sxy / std::sqrt(sxx * syy) : 0.0;
  };
  double cSame[4] = {}, cNext = 0;
  int nSame[4] = {}, nNext = 0;
  for (int j = 0; j + 1 < nMats; j++) {
    if (j + 4 + 1 < nMats) cSame[j % 4] += corr(lateness(j), lateness(j + 4)), nSame[j % 4]++;
    if (j + 2 < nMats) cNext += corr(lateness(j), lateness(j + 1)), nNext++;
  }
  std::printf("lateness correlation across blocks, next layer same matrix: QKV %.2f, O %.2f, gate/up %.2f, down %.2f; "
              "next barrier %.2f\n",
              nSame[0] ? cSame[0] / nSame[0] : 0.0, nSame[1] ? cSame[1] / nSame[1] : 0.0,
              nSame[2] ? cSame[2] / nSame[2] : 0.0, nSame[3] ? cSame[3] / nSame[3] : 0.0,
              nNext ? cNext / nNext : 0.0);
}

/** chain_kernel_lean's signaller (run 122): how long its fence.acq_rel.gpu takes while the ring streams. */
inline int lean_signal_report(void* fn, int threads, const char* how, Mat* dm, int nMats, const Bar& bar,
                              unsigned* dctr, int sms, cudaStream_t st) {
  const int smem = tma_ring_bytes<16, 2, 4>(), nb = sms;
  long long* d;
  CUDA_CHECK(cudaMalloc(&d, (size_t)nb * 3 * sizeof(long long)));
  CUDA_CHECK(cudaMemset(d, 0, (size_t)nb * 3 * sizeof(long long)));
  Bar sb = bar;
  sb.sigStats = d;
  void* args[] = {&dm, &nMats, &sb, &dctr};
  CUDA_CHECK(cudaFuncSetAttribute(fn, cudaFuncAttributeMaxDynamicSharedMemorySize, smem));
  CUDA_CHECK(cudaMemsetAsync(dctr, 0, kMaxMats * sizeof(unsigned), st));
  CUDA_CHECK(cudaMemsetAsync(bar.chunks, 0, (size_t)kMaxMats * kChunkStride * sizeof(unsigned), st));
  CUDA_CHECK(cudaLaunchCooperativeKernel(fn, dim3(nb), dim3(threads), args, smem, st));
  CUDA_CHECK(cudaStreamSynchronize(st));
  std::vector<long long> h((size_t)nb * 3);
  CUDA_CHECK(cudaMemcpy(h.data(), d, h.size() * sizeof(long long), cudaMemcpyDeviceToHost));
  cudaFree(d);
  double fences = 0, ns = 0, tiles = 0;
  for (int b = 0; b < nb; b++) fences += (double)h[b * 3], ns += (double)h[b * 3 + 1], tiles += (double)h[b * 3 + 2];
  std::printf("%s: the signaller's fence.acq_rel.gpu takes %.2f us on average (%.0f fences, %.1f tiles a fence, "
              "%.0f us a block in all)\n",
              how, fences > 0 ? ns / fences / 1e3 : 0.0, fences, fences > 0 ? tiles / fences : 0.0, ns / nb / 1e3);
  return 0;
}

}  // namespace
