// The batch-1 (one token) decode GEMVs (docs/gpu-runs.md runs 36-37, 50):
//  - int4t_gemv_one, the default: a block a whole tile with 8 or 16 warps, the epilogue inside, plain (O, down) or
//    pair (QKV with RoPE, gate/up with SiLU).
//  - int4t_gemv_half + int4t_pair_finish, when the caller sets Int4Epilogue::splitParts (the engine with
//    TPSERVE_T_SPLIT=1): pair weights with k split across two 8-warp blocks a tile, each storing its 16 sums in its
//    slot; the next kernel adds the two slots in order (the same bits every run), applies a folded norm's 1 / rms and
//    runs the pair epilogue. Faster than int4t_gemv on the H100 (run 37), slower than int4t_gemv_one (run 50).
// Both share one_token_groups, the main loop: compile-time warps, a two-slot register ring, the first group's loads
// issued before pdl_wait(). In a tensor-parallel group, int4t_gemv_one's plain epilogue can also do the all-reduce
// of the row-parallel O and down (Int4Epilogue::comm: each block pushes its 16 partial sums to the peers and adds
// theirs in rank order, p2p_device.cuh), which replaces the all_reduce_fold kernel at one token (docs/gpu-runs.md
// run 53; docs/tensor-parallel.md).
#include <cuda_fp16.h>

#include <algorithm>
#include <atomic>
#include <type_traits>

#include "int4_tiled_common.cuh"
#include "p2p_device.cuh"
#include "pdl.cuh"

namespace tpserve::cuda {
namespace {

// One token (m = 1, x prepared as hi/lo columns), GC 64-column chunks a group, ZP: zero points present, KS warps:
// this warp's sums over groups g0 + warp, g0 + warp + KS, ... < g0 + gn of tile rt into r4 (C fragment: rows g and
// g + 8, columns 2t, 2t + 1; lane t = 0 holds the hi and lo columns). A two-slot register ring; the first group's
// loads go out before pdl_wait() (with BOTH2, both slots': a warp of two groups then has its whole share in flight
// before the wait), then afterWait() runs (the caller's copies of inputs the previous kernel wrote). Without TRIG the
// caller triggers the next kernel's launch itself (the exchange's late trigger).
template <int GC, bool ZP, int KS, bool BOTH2 = false, bool TRIG = true, class AfterWait>
__device__ __forceinline__ void one_token_groups(const __half* __restrict__ xp, const Int4Tiled& w, int rt, int g0,
                                                 int gn, float (&r4)[4], AfterWait&& afterWait) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int KB = w.cols >> 6, NG = KB / GC;
  const int U = gn > warp ? (gn - warp + KS - 1) / KS : 0;  // groups g0 + warp + u * KS
  const uint4* wq = w.q + (size_t)rt * KB * 32 + lane;
  const float* wsc = w.scales + (size_t)rt * NG * 16;
  const uint8_t* wz = ZP ? w.zeros + (size_t)rt * NG * 16 : nullptr;
  uint4 q[2][GC];
  float s0[2], s1[2];
  uint32_t z0[2], z1[2];
  const auto load = [&](auto S, int u) {
    constexpr int s = decltype(S)::value;
    const int gi = g0 + warp + u * KS;
#pragma unroll
    for (int c = 0; c < GC; ++c) q[s][c] = ld_stream(wq + (size_t)(gi * GC + c) * 32);
    s0[s] = __ldg(wsc + gi * 16 + g), s1[s] = __ldg(wsc + gi * 16 + g + 8);
    if (ZP) z0[s] = __ldg(wz + gi * 16 + g), z1[s] = __ldg(wz + gi * 16 + g + 8);
  };
  r4[0] = r4[1] = r4[2] = r4[3] = 0.f;
  const auto group = [&](auto S, int u) {
    constexpr int s = decltype(S)::value;
    const int gi = g0 + warp + u * KS;
    const uint32_t zlo = zero_lo(ZP ? z0[s] : 8u), zhi = zero_hi(ZP ? z1[s] : 8u);
    float d[4] = {0.f, 0.f, 0.f, 0.f};
#pragma unroll
    for (int c = 0; c < GC; ++c) one_token_chunk(q[s][c], xp, gi * GC + c, g, t, zlo, zhi, d);
    r4[0] = fmaf(s0[s], d[0], r4[0]), r4[1] = fmaf(s0[s], d[1], r4[1]);
    r4[2] = fmaf(s1[s], d[2], r4[2]), r4[3] = fmaf(s1[s], d[3], r4[3]);
  };
  using S0 = std::integral_constant<int, 0>;
  using S1 = std::integral_constant<int, 1>;
  if (U > 0) load(S0(), 0);
  if constexpr (BOTH2)
    if (U > 1) load(S1(), 1);
  if constexpr (TRIG) pdl_trigger();
  pdl_wait();  // x comes from the previous kernel
  afterWait();
  for (int u = 0; u < U; u += 2) {
    if (u + 1 < U && (!BOTH2 || u > 0)) load(S1(), u + 1);
    group(S0(), u);
    if (u + 1 < U) {
      if (u + 2 < U) load(S0(), u + 2);
      group(S1(), u + 1);
    }
  }
}

// Pair-epilogue weights: block (tile, half) takes half of the tile's groups with KS warps and stores its 16 sums in
// slot `half` of parts ([2][rows]).
template <int GC, bool ZP, int KS>
__global__ void __launch_bounds__(KS * 32) int4t_gemv_half(const __half* __restrict__ xp, Int4Tiled w,
                                                           float* __restrict__ parts) {
  constexpr int SPLIT = 2;
  __shared__ float red[KS][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = blockIdx.x / SPLIT, part = blockIdx.x % SPLIT;
  const int NG = (w.cols >> 6) / GC;
  const int g0 = part * NG / SPLIT, gn = (part + 1) * NG / SPLIT - g0;
  float r4[4];
  one_token_groups<GC, ZP, KS>(xp, w, rt, g0, gn, r4, [] {});
  if (t == 0) red[warp][g] = r4[0] + r4[1], red[warp][g + 8] = r4[2] + r4[3];
  __syncthreads();
  if (threadIdx.x < 16) {
    float v = 0.f;
#pragma unroll
    for (int k = 0; k < KS; ++k) v += red[k][threadIdx.x];
    parts[(size_t)part * w.rows + rt * 16 + threadIdx.x] = v;
  }
}

// One token, a block a whole tile (KS warps, every group), then int4t_gemv's epilogue for one token:
//  - plain (O, down): + residual, or accumulated into y, and a folded norm's producer side (the new rows times normW
//    into xpOut, the block's sum of squares into ssqOut[block]); the same sums in the same order as int4t_gemv, so
//    the same bits. The leaner loop took 0.05 ms off the Llama-2-7B step on an H200 (docs/gpu-runs.md run 50).
//  - pair (QKV with RoPE, gate/up with SiLU; the default, int4t_gemv_half when the caller sets splitParts): a folded
//    norm's r (warp 0, right after pdl_wait()), then pair_epilogue on threads 0-7, whose inputs (KV slot, position,
//    RoPE factors) are read before the wait. 0.08 ms faster a Llama-2-7B step than the split halves and their finish
//    kernel on an H200 (run 50).
// The epilogue's inputs from the previous kernel (residual, y) are copied with cp.async while the main loop runs.
template <int GC, bool ZP, int KS, bool PAIR, bool COMM, bool B2 = false, bool LATE = false>
__device__ __forceinline__ void gemv_one_body(const __half* __restrict__ xp, const Int4Tiled& w, float* __restrict__ y,
                                              const float* __restrict__ residual, const Int4Epilogue& ep) {
  __shared__ float red[KS][16];
  __shared__ float eNorm[16], eRes[16], eAcc[16], sq[16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = blockIdx.x, row = rt * 16 + (int)threadIdx.x;
  constexpr bool pair = PAIR;  // ep.kind != kPlain
  const bool mine = threadIdx.x < 16 && row < w.rows;  // plain: thread i < 16 finishes row i of the tile
  PairInputs in{-1, 0.f, 0.f};
  if (pair && threadIdx.x < 8) in = pair_inputs(ep, rt, threadIdx.x, 0);
  if (!pair && mine && ep.normW) cp_async4(&eNorm[threadIdx.x], ep.normW + row);
  // Where this row goes in the next GEMV's prepared input (an act-order consumer's order): a constant, read now.
  const int xcol = !pair && mine && ep.xpMap ? __ldg(ep.xpMap + row) : row;
  float r4[4], rn = 1.f;
  // The exchange's slot, read by warp 1 while the main loop runs (the previous call's kernel is complete after
  // pdl_wait()), so warp 0 pushes as soon as the sums are in (docs/gpu-runs.md run 55).
  __shared__ Call commCall;
  unsigned long long tLoop = 0;  // TPSERVE_TP_TRACE_DIR only (thread 0)
  one_token_groups<GC, ZP, KS, B2, !LATE>(xp, w, rt, 0, (w.cols >> 6) / GC, r4, [&] {
    if (COMM && ep.comm.trace && threadIdx.x == 0) tLoop = global_ns();
    if (pair) {
      if (ep.ssqIn && warp == 0) rn = folded_rnorm(ep.ssqIn, ep.ssqParts, lane, ep.normCols, ep.eps);
      return;
    }
    if (COMM && threadIdx.x == 32) commCall = read_call(ep.comm);
    if (mine && residual) cp_async4(&eRes[threadIdx.x], residual + row);
    if (mine && ep.accumulate) cp_async4(&eAcc[threadIdx.x], y + row);
  });
  if (t == 0) red[warp][g] = r4[0] + r4[1], red[warp][g + 8] = r4[2] + r4[3];
  if (!pair) cp_async_wait_all();
  __syncthreads();
  if (pair) {  // packed rows r and r + 8 of the tile (int4_tile_row_map)
    if (threadIdx.x < 8) {
      float a = 0.f, b = 0.f;
      for (int k = 0; k < KS; ++k) a += red[k][threadIdx.x], b += red[k][threadIdx.x + 8];
      if (ep.ssqIn) a *= rn, b *= rn;
      pair_epilogue(ep, w.rows, rt, threadIdx.x, 0, 1, a, b, y, in);
    }
    return;
  }
  if constexpr (COMM) {  // this rank's partial sums: exchanged, added in rank order, then accumulated (no residual)
    const P2pGroup& cg = ep.comm;
    const Call call = commCall;  // written before the __syncthreads() above
    // Counted as done at once, by warp 1: every thread of the block has the slot, and warp 0 goes straight on to the
    // push (reading the slot here and counting on warp 0, run 53's form, made the TP = 2 step 0.05 ms longer).
    if (threadIdx.x == 32) count_done(cg, call, (uint32_t)w.rows);
    float v = 0.f;
    const unsigned long long tPush = cg.trace && threadIdx.x == 0 ? global_ns() : 0;
    if (mine) {
      for (int k = 0; k < KS; ++k) v += red[k][threadIdx.x];
      push(cg, call.slot, row, &v, 1);
    }
    reset_previous(cg, call);
    if (threadIdx.x < 16) {
      if (mine) {
        float s;
        const bool ok = sum_ranks1(cg, call, row, v, s);
        if (LATE && threadIdx.x == 0) pdl_trigger();  // the next kernel launches once the peers' sums are in
        if (cg.trace && threadIdx.x == 0 && blockIdx.x < kExchangeTraceBlocks) {
          const unsigned long long tIn = global_ns();  // before the counter's load, which may miss to DRAM
          const unsigned long long n = cg.trace[blockIdx.x]++;  // this block's calls so far
          if (n < kExchangeTraceCalls) {
            unsigned long long* r = cg.trace + kExchangeTraceBlocks + (n * kExchangeTraceBlocks + blockIdx.x) * 4;
            r[0] = tLoop, r[1] = tPush, r[2] = tIn, r[3] = gridDim.x;
          }
        }
        v = ep.accumulate ? eAcc[threadIdx.x] + s : s;  // all_reduce_fold's x + s
        if (ok) y[row] = v;
        if (ep.normW) xprep_store1(ep.xpOut, 1, 0, xcol, v * eNorm[threadIdx.x]);
      }
      sq[threadIdx.x] = mine ? v * v : 0.f;
    }
  } else if (threadIdx.x < 16) {
    float v = 0.f;
    if (mine) {
      for (int k = 0; k < KS; ++k) v += red[k][threadIdx.x];
      if (residual) v += eRes[threadIdx.x];
      if (ep.accumulate) v += eAcc[threadIdx.x];
      y[row] = v;
      if (ep.normW) xprep_store1(ep.xpOut, 1, 0, xcol, v * eNorm[threadIdx.x]);
    }
    sq[threadIdx.x] = mine ? v * v : 0.f;
  }
  if (ep.ssqOut) {
    __syncthreads();
    if (threadIdx.x == 0) {
      float s = 0.f;
      for (int r = 0; r < 16; ++r) s += sq[r];
      ep.ssqOut[blockIdx.x] = s;
    }
  }
}

// B2: both ring slots loaded before pdl_wait() (one_token_groups' BOTH2; only the plain 16-warp form, TP = 1's O).
// LATE: the exchange's form that triggers the next kernel's launch by thread 0 of each block once the peers' sums are
// in, not at the start (docs/gpu-runs.md run 74).
template <int GC, bool ZP, int KS, bool PAIR, bool COMM = false, bool B2 = false, bool LATE = false>
__global__ void __launch_bounds__(KS * 32) int4t_gemv_one(const __half* __restrict__ xp, Int4Tiled w,
                                                          float* __restrict__ y, const float* __restrict__ residual,
                                                          Int4Epilogue ep) {
  gemv_one_body<GC, ZP, KS, PAIR, COMM, B2, LATE>(xp, w, y, residual, ep);
}

// The pair epilogue of a split GEMV: slot 0 + slot 1 of splitParts, times r of a folded norm, then pair_epilogue as
// int4t_gemv runs it. One token (kSplitMaxTokens). Before pdl_wait() each thread reads its pair's KV slot, position
// and RoPE factors (pair_inputs: host and constant data); after it, the slot sums and the norm's partial sums go
// out together, and every warp reduces the norm itself in the same order (the butterfly leaves the same bits in
// every lane), so no warp waits for another.
__global__ void int4t_pair_finish(Int4Epilogue ep, int rows, int m, float* __restrict__ y) {
  static_assert(kSplitMaxTokens == 1, "the norm below is token 0's");
  pdl_trigger();
  const int lane = threadIdx.x & 31;
  const int n = rows / 2;  // (tile, pair row r < 8)
  const int stride = gridDim.x * blockDim.x, first = blockIdx.x * blockDim.x;
  int i = first + threadIdx.x;
  PairInputs in = i < n ? pair_inputs(ep, i >> 3, i & 7, 0) : PairInputs{-1, 0.f, 0.f};
  pdl_wait();
  for (int base = first; base < n; base += stride) {  // warp-uniform
    i = base + threadIdx.x;
    const bool live = i < n;
    if (live && base != first) in = pair_inputs(ep, i >> 3, i & 7, 0);
    const int rt = i >> 3, r = i & 7;
    float a = 0.f, b = 0.f;
    if (live) {
      const float* p0 = ep.splitParts + rt * 16 + r;
      const float* p1 = p0 + rows;
      a = p0[0] + p1[0], b = p0[8] + p1[8];
    }
    if (ep.ssqIn) {
      const float rn = folded_rnorm(ep.ssqIn, ep.ssqParts, lane, ep.normCols, ep.eps);
      a *= rn, b *= rn;
    }
    if (live) pair_epilogue(ep, rows, rt, r, 0, 1, a, b, y, in);
  }
}

}  // namespace

bool detail::gemv_split_ok(const Int4Tiled& w, int m, const Int4Epilogue& ep, int minGroups) {
  return m == 1 && ep.kind != Int4Epilogue::kPlain && ep.splitParts && w.rows % 16 == 0 &&
         w.cols / w.group >= std::max(minGroups, 2);
}

cudaError_t detail::gemv_split(const __half* xp, const Int4Tiled& w, float* y, const Int4Epilogue& ep,
                               cudaStream_t stream) {
  cudaError_t e;
  const dim3 grid((unsigned)(w.rows / 16 * 2)), block(8 * 32);
  if (w.group == 64)
    e = w.zeros ? launch_pdl(int4t_gemv_half<1, true, 8>, grid, block, 0, stream, xp, w, ep.splitParts)
                : launch_pdl(int4t_gemv_half<1, false, 8>, grid, block, 0, stream, xp, w, ep.splitParts);
  else
    e = w.zeros ? launch_pdl(int4t_gemv_half<2, true, 8>, grid, block, 0, stream, xp, w, ep.splitParts)
                : launch_pdl(int4t_gemv_half<2, false, 8>, grid, block, 0, stream, xp, w, ep.splitParts);
  if (e != cudaSuccess || ep.splitDeferFinish) return e;
  return int4_pair_finish(ep, w.rows, 1, y, stream);
}

bool detail::gemv_one_ok(const Int4Tiled& w, int m, const Int4Epilogue& ep, int ks) {
  if (m != 1 || (ks != 4 && ks != 8 && ks != 16)) return false;
  return ep.kind == Int4Epilogue::kPlain ? !ep.ssqIn : w.rows % 16 == 0;
}

cudaError_t detail::gemv_one(const __half* xp, const Int4Tiled& w, float* y, const float* residual,
                             const Int4Epilogue& ep, int ks, cudaStream_t stream) {
  const dim3 grid((unsigned)((w.rows + 15) / 16));
  const auto go = [&](auto kernel, int warps) {
    return launch_pdl(kernel, grid, dim3(warps * 32), 0, stream, xp, w, y, residual, ep);
  };
  // Template arguments: group 64 (1 chunk) or 128 (2), zero points, warps, pair epilogue, the exchange (plain).
  const bool p = ep.kind != Int4Epilogue::kPlain, z = w.zeros != nullptr, g64 = w.group == 64;
  const bool c = !p && ep.comm.world > 1;
  // Both ring slots' loads before pdl_wait() in the plain 16-warp form of group 128 (TP = 1's O: two groups a warp,
  // its whole tile in flight while attention runs): Llama-2-7B's batch-1 step 0.008-0.012 ms shorter on an H200
  // (docs/gpu-runs.md run 71). TPSERVE_T_EARLY2=0 turns it off.
  static const bool both2 = detail::env_on("TPSERVE_T_EARLY2");
  if (both2 && ks == 16 && !p && ep.comm.world <= 1 && !g64)
    return z ? go(int4t_gemv_one<2, true, 16, false, false, true>, 16)
             : go(int4t_gemv_one<2, false, 16, false, false, true>, 16);
  // The exchanging 16-warp form (O and down in a group, one token) lets the next kernel launch only once its peers'
  // sums are in: Llama-2-7B's TP = 2 step at batch 1 about 0.01 ms shorter on 2x H200 (docs/gpu-runs.md run 74).
  // TPSERVE_TP_LATE_TRIGGER=0 turns it off.
  static const bool late = detail::env_on("TPSERVE_TP_LATE_TRIGGER");
  if (late && c && ks == 16)
    return g64 ? (z ? go(int4t_gemv_one<1, true, 16, false, true, false, true>, 16)
                    : go(int4t_gemv_one<1, false, 16, false, true, false, true>, 16))
               : (z ? go(int4t_gemv_one<2, true, 16, false, true, false, true>, 16)
                    : go(int4t_gemv_one<2, false, 16, false, true, false, true>, 16));
#define TPS_ONE(GC, KS)                                                                                     \
  return p ? (z ? go(int4t_gemv_one<GC, true, KS, true>, KS) : go(int4t_gemv_one<GC, false, KS, true>, KS)) \
         : c ? (z ? go(int4t_gemv_one<GC, true, KS, false, true>, KS)                                       \
                  : go(int4t_gemv_one<GC, false, KS, false, true>, KS))                                     \
             : (z ? go(int4t_gemv_one<GC, true, KS, false>, KS) : go(int4t_gemv_one<GC, false, KS, false>, KS))
  if (ks == 16) {
    if (g64) TPS_ONE(1, 16);
    TPS_ONE(2, 16);
  }
  if (ks == 4) {
    if (g64) TPS_ONE(1, 4);
    TPS_ONE(2, 4);
  }
  if (g64) TPS_ONE(1, 8);
  TPS_ONE(2, 8);
#undef TPS_ONE
}

int detail::gemv_one_comm_blocks_per_sm(int group, bool z, int ks) {
  const bool g64 = group == 64;
  // Asked for every O and down launch in a group: the answer per kernel is kept (one device a process).
  static std::atomic<int> known[2][2][3] = {};  // [zeros][group 64][ks 4, 8, 16]; 0 = not asked yet
  std::atomic<int>& slot = known[z][g64][ks == 4 ? 0 : ks == 8 ? 1 : 2];
  if (const int k = slot.load(std::memory_order_relaxed); k > 0) return k;
  int n = 0;
  const auto occ = [&](auto kernel) { return cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, kernel, ks * 32, 0); };
#define TPS_OCC(GC, KS) \
  (z ? occ(int4t_gemv_one<GC, true, KS, false, true>) : occ(int4t_gemv_one<GC, false, KS, false, true>))
  const cudaError_t e = ks == 16 ? (g64 ? TPS_OCC(1, 16) : TPS_OCC(2, 16))
                        : ks == 4 ? (g64 ? TPS_OCC(1, 4) : TPS_OCC(2, 4))
                                  : (g64 ? TPS_OCC(1, 8) : TPS_OCC(2, 8));
#undef TPS_OCC
  if (e != cudaSuccess) return 0;
  slot.store(n, std::memory_order_relaxed);
  return n;
}

cudaError_t int4_pair_finish(const Int4Epilogue& ep, int rows, int m, float* y, cudaStream_t stream) {
  if (!ep.splitParts || rows % 16 != 0 || m < 1 || m > kSplitMaxTokens) return cudaErrorInvalidValue;
  const int n = rows / 2 * m;
  return launch_pdl(int4t_pair_finish, dim3((unsigned)std::min((n + 255) / 256, 4 * detail::sm_count())), dim3(256),
                    0, stream, ep, rows, m, y);
}

}  // namespace tpserve::cuda
