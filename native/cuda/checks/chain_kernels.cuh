// The persistent-kernel variants of check_chain.cu (docs/gpu-runs.md run 33): round-robin tiles with grid barriers,
// spread counters or dataflow counters; tiles claimed from counters; balanced shares; a shared-memory ring.
#pragma once
#include <type_traits>

#include "chain_common.cuh"

namespace {

/** Hopper's bulk prefetch of `bytes` (a multiple of 16, 16-byte aligned) into L2; nothing waits for it. */
__device__ __forceinline__ void prefetch_l2(const void* p, uint32_t bytes) {
  asm volatile("cp.async.bulk.prefetch.L2.global [%0], %1;" ::"l"(p), "r"(bytes) : "memory");
}

// PF > 0 (run 106): one more warp, outside every block_sync, walks the block's tiles ahead of the others and pulls
// each into L2 (bulk prefetches) while fewer than PF tiles separate it from the last tile the block finished, so
// the weights keep coming while the block waits at a grid barrier.
template <bool Barrier, int Spread = 1, bool Flow = false, int PF = 0>
__global__ void __launch_bounds__(PF ? kThreads + 32 : kThreads, 2)
    chain_kernel(const Mat* __restrict__ gmats, int nMats, Bar bar, unsigned* __restrict__ done = nullptr) {
  __shared__ Mat mats[kMaxMats];
  __shared__ float red[2][kWarps][16];
  __shared__ int doneTiles;
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  if (threadIdx.x == 0) doneTiles = 0;
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  if (PF && warp == kWarps) {
    if (lane == 0) {
      int p = 0;
      for (int j = 0; j < nMats; ++j) {
        const Mat& m = mats[j];
        const int tiles = (m.rows + 15) / 16, KB = m.cols >> 6, NG = m.cols / kGroup;
        for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++p) {
          while (p >= *reinterpret_cast<volatile int*>(&doneTiles) + PF) __nanosleep(256);
          prefetch_l2(m.q + (size_t)tile * KB * 32, (uint32_t)KB * 512u);
          prefetch_l2(m.scales + (size_t)tile * NG * 16, (uint32_t)NG * 64u);
        }
      }
    }
    return;
  }
  // Two-slot register ring; slots are compile-time indices (std::integral_constant) so the ring stays in registers.
  uint4 q[2][2];
  float s0[2], s1[2];
  const auto load = [&](auto S, int j, int tile, int u) {
    constexpr int s = decltype(S)::value;
    load_group(mats[j], tile, warp + u * kWarps, lane, g, q[s], s0[s], s1[s]);
  };
  // The next item to load: this warp's first (matrix, tile, group index).
  int nj = 0, nt = blockIdx.x, nu = 0;
  while (nj < nMats && (nt >= (mats[nj].rows + 15) / 16 || groups_of(mats[nj], warp) == 0))
    if (++nj < nMats) nt = blockIdx.x;
  bool more = nj < nMats;
  if (more) {
    load(std::integral_constant<int, 0>(), nj, nt, nu);
    more = next_item(mats, nMats, warp, nj, nt, nu);
  }
  unsigned ready = 0;  // Flow: bit u = this warp's group u of the current matrix has its input
  int curJ = 0;
  // One item in slot S: the next item's load goes into the other slot first, then this one is multiplied.
  const auto item = [&](auto S, const Mat& m, int u, float(&acc)[4]) {
    constexpr int s = decltype(S)::value;
    if (more) {
      load(std::integral_constant<int, 1 - s>(), nj, nt, nu);
      more = next_item(mats, nMats, warp, nj, nt, nu);
    }
    const int gi = warp + u * kWarps;
    if (Flow && curJ > 0 && !((ready >> u) & 1u)) {
      if (lane == 0) {
        const int T = (mats[curJ - 1].rows + 15) / 16, G = m.cols / kGroup;
        const unsigned need = (unsigned)(chunk_lo(gi + 1, T, G) - chunk_lo(gi, T, G));
        const unsigned* c = done + (size_t)(curJ - 1) * kChunkStride + gi;
        wait_at_least(c, need, bar.timedOut);
      }
      __syncwarp();
      ready |= 1u << u;
    }
    group_mma(q[s][0], q[s][1], s0[s], s1[s], m.xp, gi, g, t, acc);
  };
  int par = 0, tileCount = 0;  // par: the slot of this warp's next item

  for (int j = 0; j < nMats; ++j) {
    const Mat& m = mats[j];
    const int tiles = (m.rows + 15) / 16, U = groups_of(m, warp);
    curJ = j, ready = 0;
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++tileCount) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      ring_items([&](auto S, int u) { item(S, m, u, acc); }, U, par);
      tile_to_red(red, tileCount & 1, warp, g, t, acc);  // red is double-buffered: tile n + 2 follows n's sums
      if (PF && threadIdx.x == 0) *reinterpret_cast<volatile int*>(&doneTiles) = tileCount + 1;
      if (threadIdx.x < 16 && tile * 16 + (int)threadIdx.x < m.rows)
        m.y[tile * 16 + threadIdx.x] = red_sum(red, tileCount & 1);
      if (Flow && j + 1 < nMats && threadIdx.x < 32) {
        __syncwarp();  // warp 0's y stores come before the release
        if (threadIdx.x == 0) {
          unsigned* c = done + (size_t)j * kChunkStride + chunk_of(tile, tiles, mats[j + 1].cols / kGroup);
          asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory");
        }
      }
    }
    if (Barrier && j + 1 < nMats) grid_barrier<Spread>(bar, (unsigned)j);
  }
}

// ---- the register-ring chain with tiles taken dynamically: a counter per matrix, blocks claim the next tile with
// atomicAdd (thread 0, claims made 3-4 tiles ahead so that the ring always knows its next tile), so a block that
// its DRAM serves faster takes more tiles.
constexpr int kClaims = 8;

template <bool Barrier>
__global__ void __launch_bounds__(kThreads, 2) chain_kernel_dyn(const Mat* __restrict__ gmats, int nMats, Bar bar,
                                                                unsigned* __restrict__ ctr) {
  __shared__ Mat mats[kMaxMats];
  __shared__ int2 claim[kClaims];  // entry k of this block's stream: (matrix, tile); matrix nMats = the end
  __shared__ float red[2][kWarps][16];
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  // Claims (thread 0 only): gj = the matrix being claimed from, pend = an atomicAdd result not looked at yet.
  int gj = 0;
  unsigned pend = 0;
  const auto claim_sync = [&](int k) {  // a claim of entry k, waiting for the atomics
    while (gj < nMats) {
      const unsigned tl = atomicAdd(ctr + gj, 1u);
      if (tl < (unsigned)((mats[gj].rows + 15) / 16)) {
        claim[k % kClaims] = make_int2(gj, (int)tl);
        return;
      }
      ++gj;
    }
    claim[k % kClaims] = make_int2(nMats, 0);
  };
  const auto claim_finish = [&](int k) {  // entry k from the pending atomicAdd
    if (gj < nMats && pend < (unsigned)((mats[gj].rows + 15) / 16)) claim[k % kClaims] = make_int2(gj, (int)pend);
    else {
      if (gj < nMats) ++gj;
      claim_sync(k);
    }
  };
  if (threadIdx.x == 0) {
    claim_sync(0), claim_sync(1), claim_sync(2);
    pend = gj < nMats ? atomicAdd(ctr + gj, 1u) : 0u;
  }
  __syncthreads();

  uint4 q[2][2];
  float s0[2], s1[2];
  const auto load = [&](auto S, int j, int tile, int u) {
    constexpr int s = decltype(S)::value;
    load_group(mats[j], tile, warp + u * kWarps, lane, g, q[s], s0[s], s1[s]);
  };
  // Stream cursor of this warp: claim entry nk, group index nu.
  int nk = 0, nu = 0;
  const auto valid = [&]() {  // skips entries whose matrix gives this warp no group
    for (;; ++nk, nu = 0) {
      const int2 c = claim[nk % kClaims];
      if (c.x >= nMats) return false;
      if (nu < groups_of(mats[c.x], warp)) return true;
    }
  };
  bool more = valid();
  if (more) {
    const int2 c = claim[nk % kClaims];
    load(std::integral_constant<int, 0>(), c.x, c.y, nu);
    ++nu;
    more = valid();
  }
  const auto item = [&](auto S, const Mat& m, int u, float(&acc)[4]) {
    constexpr int s = decltype(S)::value;
    if (more) {
      const int2 c = claim[nk % kClaims];
      load(std::integral_constant<int, 1 - s>(), c.x, c.y, nu);
      ++nu;
      more = valid();
    }
    const int gi = warp + u * kWarps;
    group_mma(q[s][0], q[s][1], s0[s], s1[s], m.xp, gi, g, t, acc);
  };
  int par = 0, k = 0;
  for (int j = 0; j < nMats; ++j) {
    const Mat& m = mats[j];
    const int U = groups_of(m, warp);
    for (;;) {
      const int2 c = claim[k % kClaims];
      if (c.x != j) break;
      const int tile = c.y;
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      ring_items([&](auto S, int u) { item(S, m, u, acc); }, U, par);
      tile_to_red(red, k & 1, warp, g, t, acc);  // the sync also publishes the claim made at the previous tile's
      if (threadIdx.x == 0) {
        claim_finish(k + 3);
        pend = gj < nMats ? atomicAdd(ctr + gj, 1u) : 0u;
      }
      if (threadIdx.x < 16 && tile * 16 + (int)threadIdx.x < m.rows) {
        m.y[tile * 16 + threadIdx.x] = red_sum(red, k & 1);
      }
      ++k;
    }
    if (Barrier && j + 1 < nMats) grid_barrier<1>(bar, (unsigned)j);
  }
}

// ---- the register-ring chain with balanced work: block b takes groups [T b / B, T (b + 1) / B) of a matrix's
// T = tiles x groups-per-tile (tile-major), so blocks differ by at most one group. A tile split between two
// blocks is summed with atomicAdd into y (zeroed first; two addends, so the order does not change the bits).
struct Span {
  int tileLo, tileHi;  // tiles [tileLo, tileHi], empty when tileLo > tileHi
  int lo, hi;          // the block's groups
};

__device__ __forceinline__ Span span_of(const Mat& m, const float* cum) {
  const int NG = m.cols / kGroup, tiles = (m.rows + 15) / 16;
  const long long T = (long long)tiles * NG;
  Span s;
  if (cum) {  // weighted shares; cum[0] = 0 and cum[gridDim.x] = 1 exactly
    s.lo = (int)((double)T * cum[blockIdx.x]), s.hi = (int)((double)T * cum[blockIdx.x + 1]);
  } else {
    s.lo = (int)(T * blockIdx.x / gridDim.x), s.hi = (int)(T * (blockIdx.x + 1) / gridDim.x);
  }
  s.tileLo = s.lo / NG, s.tileHi = s.hi > s.lo ? (s.hi - 1) / NG : s.tileLo - 1;
  return s;
}

/** Groups [ga, gb) of `tile` in the block's span; this warp takes ga + warp, ga + warp + kWarps, ... */
__device__ __forceinline__ void tile_groups(const Mat& m, const Span& s, int tile, int warp, int& ga, int& U) {
  const int NG = m.cols / kGroup;
  ga = max(s.lo - tile * NG, 0);
  const int gb = min(s.hi - tile * NG, NG);
  U = gb - ga > warp ? (gb - ga - warp + kWarps - 1) / kWarps : 0;
}

template <bool Barrier>
__global__ void __launch_bounds__(kThreads, 2) chain_kernel_bal(const Mat* __restrict__ gmats, int nMats, Bar bar) {
  __shared__ Mat mats[kMaxMats];
  __shared__ Span spans[kMaxMats];
  __shared__ float red[2][kWarps][16];
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i], spans[i] = span_of(gmats[i], bar.cum);
  if (bar.smids && threadIdx.x == 0) {
    unsigned id;
    asm volatile("mov.u32 %0, %%smid;" : "=r"(id));
    bar.smids[blockIdx.x] = (int)id;
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  uint4 q[2][2];
  float s0[2], s1[2];
  const auto load = [&](auto S, int j, int tile, int gi) {
    constexpr int s = decltype(S)::value;
    load_group(mats[j], tile, gi, lane, g, q[s], s0[s], s1[s]);
  };
  // Stream cursor: matrix nj, tile nt, this warp's u-th group of that tile (group index ngi).
  int nj = 0, nt = 0, nu = 0, ngi = 0;
  const auto settle = [&]() -> bool {  // from (nj, nt, nu) to the first valid item at or after it
    while (nj < nMats) {
      const Mat& m = mats[nj];
      const Span& sp = spans[nj];
      if (nt < sp.tileLo) nt = sp.tileLo, nu = 0;
      for (; nt <= sp.tileHi; ++nt, nu = 0) {
        int ga, U;
        tile_groups(m, sp, nt, warp, ga, U);
        if (nu < U) {
          ngi = ga + warp + nu * kWarps;
          return true;
        }
      }
      ++nj, nt = 0, nu = 0;
    }
    return false;
  };
  bool more = settle();
  if (more) {
    load(std::integral_constant<int, 0>(), nj, nt, ngi);
    ++nu;
    more = settle();
  }
  const auto item = [&](auto S, const Mat& m, int gi, float(&acc)[4]) {
    constexpr int s = decltype(S)::value;
    if (more) {
      load(std::integral_constant<int, 1 - s>(), nj, nt, ngi);
      ++nu;
      more = settle();
    }
    group_mma(q[s][0], q[s][1], s0[s], s1[s], m.xp, gi, g, t, acc);
  };
  int par = 0, tileCount = 0;
  for (int j = 0; j < nMats; ++j) {
    const Mat& m = mats[j];
    const Span& sp = spans[j];
    const int NG = m.cols / kGroup;
    for (int tile = sp.tileLo; tile <= sp.tileHi; ++tile, ++tileCount) {
      int ga, U;
      tile_groups(m, sp, tile, warp, ga, U);
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      ring_items([&](auto S, int u) { item(S, m, ga + warp + u * kWarps, acc); }, U, par);
      tile_to_red(red, tileCount & 1, warp, g, t, acc);
      if (threadIdx.x < 16 && tile * 16 + (int)threadIdx.x < m.rows) {
        const float v = red_sum(red, tileCount & 1);
        const bool whole = tile * NG >= sp.lo && (tile + 1) * NG <= sp.hi;
        if (whole) m.y[tile * 16 + threadIdx.x] = v;
        else atomicAdd(m.y + tile * 16 + threadIdx.x, v);
      }
    }
    if (Barrier && j + 1 < nMats) grid_barrier<1>(bar, (unsigned)j);
  }
}

// ---- the same chain with a ring of K items per warp in shared memory (cp.async), so that a warp waiting at a
// barrier (or for its tile's sums) still has K items of the next matrix on the way.
__device__ __forceinline__ void cp16(uint32_t dst, const void* src) {
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(dst), "l"(src) : "memory");
}
__device__ __forceinline__ void cp_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

constexpr int kSlotBytes = 1024 + 64;  // one item: a group's two 512-byte chunks of the tile, its 16 scales

template <int K>
constexpr int smem_ring_bytes() {
  return kWarps * K * kSlotBytes;
}

template <bool Barrier, int K, int Spread = 1>
__global__ void __launch_bounds__(kThreads, 2) chain_kernel_smem(const Mat* __restrict__ gmats, int nMats, Bar bar) {
  extern __shared__ __align__(16) unsigned char ring[];
  __shared__ Mat mats[kMaxMats];
  __shared__ float red[2][kWarps][16];
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  unsigned char* myRing = ring + (size_t)warp * K * kSlotBytes;
  const uint32_t ringAddr = (uint32_t)__cvta_generic_to_shared(myRing);

  int nj = 0, nt = blockIdx.x, nu = 0;
  while (nj < nMats && (nt >= (mats[nj].rows + 15) / 16 || groups_of(mats[nj], warp) == 0))
    if (++nj < nMats) nt = blockIdx.x;
  bool more = nj < nMats;
  // Issues the next item of the stream into `slot` (or nothing past the end); always one commit group.
  const auto issue = [&](int slot) {
    if (more) {
      const Mat& m = mats[nj];
      const int KB = m.cols >> 6, NG = m.cols / kGroup, gi = warp + nu * kWarps;
      const uint4* wq = m.q + (size_t)nt * KB * 32 + lane;
      const uint32_t d = ringAddr + slot * kSlotBytes;
      cp16(d + lane * 16, wq + (size_t)(gi * 2) * 32);
      cp16(d + 512 + lane * 16, wq + (size_t)(gi * 2 + 1) * 32);
      if (lane < 4) cp16(d + 1024 + lane * 16, m.scales + (size_t)nt * NG * 16 + gi * 16 + lane * 4);
      more = next_item(mats, nMats, warp, nj, nt, nu);
    }
    cp_commit();
  };
#pragma unroll
  for (int k = 0; k < K; ++k) issue(k);
  int slot = 0, tileCount = 0;

  for (int j = 0; j < nMats; ++j) {
    const Mat& m = mats[j];
    const int tiles = (m.rows + 15) / 16, U = groups_of(m, warp);
    for (int tile = blockIdx.x; tile < tiles; tile += gridDim.x, ++tileCount) {
      float acc[4] = {0.f, 0.f, 0.f, 0.f};
      for (int u = 0; u < U; ++u) {
        cp_wait<K - 1>();
        __syncwarp();  // the scales came through lanes 0-3
        const unsigned char* sl = myRing + slot * kSlotBytes;
        const uint4 q0 = *reinterpret_cast<const uint4*>(sl + lane * 16);
        const uint4 q1 = *reinterpret_cast<const uint4*>(sl + 512 + lane * 16);
        const float s0 = reinterpret_cast<const float*>(sl + 1024)[g];
        const float s1 = reinterpret_cast<const float*>(sl + 1024)[g + 8];
        __syncwarp();  // every lane has read the slot before it is refilled
        issue(slot);
        slot = slot + 1 == K ? 0 : slot + 1;
        const int gi = warp + u * kWarps;
        group_mma(q0, q1, s0, s1, m.xp, gi, g, t, acc);
      }
      tile_to_red(red, tileCount & 1, warp, g, t, acc);
      if (threadIdx.x < 16 && tile * 16 + (int)threadIdx.x < m.rows)
        m.y[tile * 16 + threadIdx.x] = red_sum(red, tileCount & 1);
    }
    if (Barrier && j + 1 < nMats) grid_barrier<Spread>(bar, (unsigned)j);
  }
  cp_wait<0>();
}

}  // namespace
