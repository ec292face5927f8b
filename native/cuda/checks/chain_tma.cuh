// check_chain's deep-ring variants (docs/gpu-runs.md, session 31: runs 106-117; the lean one is chain_lean.cuh): one
// persistent block an SM whose producer warp streams the weights of every matrix of the chain, in order, through a
// ring of D stages in shared memory (Hopper bulk copies, kernels/tma.cuh), never waiting for a matrix's input: only
// for a free slot. CW consumer warps wait at the grid barrier between matrices, as a decode step's kernels wait for
// their input, while the ring keeps filling with the next matrix's weights (up to D x 17 KB an SM, 27 MB on an H200
// at D = 12). The question: whether weights streaming across the matrices' boundaries make the 128 one-token GEMVs
// faster than the engine's graph. The answer on an H200: the bytes do stream (0.92 ms through every barrier with
// claimed tiles and nothing to compute, against the graph's 1.19), but no consumer here multiplies them fast enough
// to use it.
//
// Work: block b takes groups [T b / B, T (b + 1) / B) of a matrix's T = tiles x groups-a-row in tile-major order
// (the balanced split of chain_kernel_bal); in the Int4Tiled layout such a span is one contiguous run of weights
// (1 KB a group) and one of scales (64 B a group). A stage holds up to S = CW x GPW groups of one tile; consumer warp
// w takes groups w, w + CW, ... of it. At a tile's (or the span's) end the warps' sums meet in shared memory; a
// tile split between two blocks is added into y (zeroed first).
#pragma once
#include "chain_kernels.cuh"
#include "int8_pieces.cuh"
#include "kernels/tma.cuh"

namespace {

constexpr int kTmaGroupBytes = 1024 + 64;

template <int CW, int GPW, int D>
constexpr int tma_ring_bytes() {
  return D * CW * GPW * kTmaGroupBytes;
}
// x in shared memory (MODES 5 and 8 here, 9 in chain_lean.cuh): the pieces, then the scales at kXsScales, then the
// piece sums (8 ints a group) at kXsSums, 16-byte aligned.
constexpr int kTmaXsCols = 11008, kTmaXsGroups = kTmaXsCols / 128;  // the widest input of the chain
constexpr int kXsScales = kTmaXsCols * 3, kXsSums = (kXsScales + kTmaXsGroups * 4 + 15) / 16 * 16;
constexpr int tma_xs_bytes() { return kXsSums + kTmaXsGroups * 32; }

/** Block's groups [lo, hi) of matrix m (tile-major group index). */
__device__ __forceinline__ int2 tma_span(const Mat& m) {
  const long long T = (long long)((m.rows + 15) / 16) * (m.cols / kGroup);
  return make_int2((int)(T * blockIdx.x / gridDim.x), (int)(T * (blockIdx.x + 1) / gridDim.x));
}

/** group_mma with the two chunks on separate accumulator chains (half the dependent mma chain). */
__device__ __forceinline__ void group_mma2(const uint4& q0, const uint4& q1, float s0, float s1,
                                           const __half* __restrict__ xp, int gi, int g, int t, float (&acc)[4]) {
  const uint32_t zlo = tc::zero_lo(8u), zhi = tc::zero_hi(8u);
  float d[4] = {0.f, 0.f, 0.f, 0.f}, e[4] = {0.f, 0.f, 0.f, 0.f};
  tc::one_token_chunk(q0, xp, gi * 2, g, t, zlo, zhi, d);
  tc::one_token_chunk(q1, xp, gi * 2 + 1, g, t, zlo, zhi, e);
  acc[0] = fmaf(s0, d[0] + e[0], acc[0]);
  acc[1] = fmaf(s0, d[1] + e[1], acc[1]);
  acc[2] = fmaf(s1, d[2] + e[2], acc[2]);
  acc[3] = fmaf(s1, d[3] + e[3], acc[3]);
}

/**
 * One group through the s8 mma (check_int8.cu's int8_gemv on the engine's Int4Tiled words): x as three s8 pieces
 * (columns 0-2 of B, lanes g < 3), exact int32 sums, scaled per group. acc[0] and acc[2] take rows g and g + 8 (lanes
 * t = 0 and 1 each hold part of a row: int8_rows() adds them at the tile's end); acc[1], acc[3] stay 0.
 */
template <bool XS = false>
__device__ __forceinline__ void group_int8(const uint4& q0, const uint4& q1, float s0, float s1, const uint4* xq,
                                           const float* sx, int gi, int g, int t, float (&acc)[4]) {
  int d[4] = {0, 0, 0, 0};
  const uint4 qq[2] = {q0, q1};
#pragma unroll
  for (int c = 0; c < 2; ++c) {
    const int kb = gi * 2 + c;
    uint4 b = make_uint4(0u, 0u, 0u, 0u);
    if (g < int8_check::kPieces) {
      const uint4* p = xq + (size_t)(kb * int8_check::kPieces + g) * 4 + t;
      b = XS ? *p : tc::ld_prev(p);
    }
    int8_check::s8_chunk_mma<true>(qq[c], b, d);
  }
  constexpr float m1 = 1.f / int8_check::kPieceMul, m2 = m1 * m1;
  const float w0 = t == 0 ? 1.f : m2, w1 = t == 0 ? m1 : 0.f;
  const float xs = (XS ? sx[gi] : tc::ld_prev(sx + gi)) * (1.f / 16.f);
  acc[0] = fmaf(s0 * xs, fmaf((float)d[1], w1, (float)d[0] * w0), acc[0]);
  acc[2] = fmaf(s1 * xs, fmaf((float)d[3], w1, (float)d[2] * w0), acc[2]);
}

/**
 * group_int8 with the nibbles taken as they are, as u8 (int8_pieces.cuh's u8_group_sums: one AND a register, the
 * zero point off the int32 sums with the pieces' group sums, two accumulator chains). Same rows in acc as
 * group_int8. X: where x's pieces, sums and scale come from: 0 global memory (m's), 1 made up in registers (no
 * loads; wrong sums: timing), 2 shared memory (xq, ps, sx: copied there at the matrix's start).
 */
template <int X = 0>
__device__ __forceinline__ void group_u8(const uint4& q0, const uint4& q1, float s0, float s1, const uint4* xq,
                                         const int* psum, const float* sx, int gi, int g, int t, float (&acc)[4]) {
  constexpr bool NOX = X == 1;
  uint4 b[2] = {make_uint4(0u, 0u, 0u, 0u), make_uint4(0u, 0u, 0u, 0u)};
  if (NOX) {
    b[0] = make_uint4((uint32_t)gi, (uint32_t)g, (uint32_t)t, 7u), b[1] = make_uint4(3u, (uint32_t)gi, 5u, (uint32_t)g);
  } else if (g < int8_check::kPieces) {
#pragma unroll
    for (int c = 0; c < 2; ++c) {
      const uint4* p = xq + (size_t)((gi * 2 + c) * int8_check::kPieces + g) * 4 + t;
      b[c] = X == 2 ? *p : tc::ld_prev(p);
    }
  }
  const int2* pp = reinterpret_cast<const int2*>(psum + gi * 8) + t;  // columns 2t, 2t + 1
  const int2 ps = NOX ? make_int2(gi, t) : X == 2 ? *pp : tc::ld_prev(pp);
  const float xs = NOX ? 1.f : X == 2 ? sx[gi] : tc::ld_prev(sx + gi);
  int r[4];
  int8_check::u8_group_sums(q0, q1, b[0], b[1], ps, r);
  constexpr float m1 = 1.f / int8_check::kPieceMul, m2 = m1 * m1;
  const float w0 = t == 0 ? 1.f : m2, w1 = t == 0 ? m1 : 0.f;
  acc[0] = fmaf(s0 * xs, fmaf((float)r[1], w1, (float)r[0] * w0), acc[0]);
  acc[2] = fmaf(s1 * xs * (1.f / 16.f), fmaf((float)r[3], w1, (float)r[2] * w0), acc[2]);
}

/** group_int8's rows: lanes t = 0 and 1 add their parts (every lane takes part in the shuffles). */
__device__ __forceinline__ void int8_rows(float (&acc)[4]) {
  acc[0] += __shfl_xor_sync(0xffffffffu, acc[0], 1);
  acc[2] += __shfl_xor_sync(0xffffffffu, acc[2], 1);
}

__device__ __forceinline__ void consumers_sync(int n) { asm volatile("bar.sync 1, %0;" ::"r"(n) : "memory"); }

/** The ring's barriers (one thread, before the block's first __syncthreads): full[s] counts the producer's one
 * arrival (and the copies' bytes), empty[s] the consumer warps'. */
template <int D>
__device__ __forceinline__ void init_ring(uint64_t (&full)[D], uint64_t (&empty)[D], int consumers) {
  for (int s = 0; s < D; ++s) tc::mbar_init(&full[s], 1), tc::mbar_init(&empty[s], (uint32_t)consumers);
  tc::mbar_init_fence();
}

/**
 * Grid barrier k (from 1) between matrices, consumer warps only (nc threads; the producer is already ahead). Thread
 * 0 runs beforeArrival() first; with bar.stamps3 set it stamps barrier k - 1's entry, arrival and departure.
 */
template <class BeforeArrival>
__device__ __forceinline__ void consumers_grid_barrier(const Bar& bar, unsigned k, int nc,
                                                       BeforeArrival&& beforeArrival) {
  consumers_sync(nc);
  if (threadIdx.x == 0) {
    long long* st3 = bar.stamps3 ? bar.stamps3 + ((size_t)(k - 1) * gridDim.x + blockIdx.x) * 3 : nullptr;
    if (st3) st3[0] = global_ns();
    beforeArrival();
    if (st3) st3[1] = global_ns();
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(bar.count) : "memory");
    wait_at_least(bar.count, k * gridDim.x, bar.timedOut);
    if (st3) st3[2] = global_ns();
  }
  consumers_sync(nc);
}
__device__ __forceinline__ void consumers_grid_barrier(const Bar& bar, unsigned k, int nc) {
  consumers_grid_barrier(bar, k, nc, [] {});
}

/** A consumer warp's groups of one stage (groups warp, warp + CW, ... of its gn), in registers. */
template <int GPW>
struct HeldGroups {
  uint4 q[GPW][2];
  float s0[GPW], s1[GPW];
};

template <int CW, int GPW>
__device__ __forceinline__ void hold_groups(const uint8_t* st, int wb, int gn, int warp, int lane, int g,
                                            HeldGroups<GPW>& h) {
#pragma unroll
  for (int k = 0; k < GPW; ++k) {
    const int i = warp + k * CW;
    if (i < gn) {
      const uint4* qs = reinterpret_cast<const uint4*>(st + (size_t)i * 1024) + lane;
      h.q[k][0] = qs[0], h.q[k][1] = qs[32];
      const float* ss = reinterpret_cast<const float*>(st + wb + i * 64);
      h.s0[k] = ss[g], h.s1[k] = ss[g + 8];
    } else {  // absent: zero scales, so that MODE 6 can multiply it without a branch
      h.q[k][0] = h.q[k][1] = make_uint4(0u, 0u, 0u, 0u);
      h.s0[k] = h.s1[k] = 0.f;
    }
  }
}

/** The held groups times x (gi0: the tile's group index of the stage's first group), by MODE; loads only xor-s. */
template <int CW, int GPW, int MODE>
__device__ __forceinline__ void use_groups(const HeldGroups<GPW>& h, int gn, int gi0, int warp, int g, int t,
                                           const Mat& m, const XPieces& xr, const uint4* xsq, const float* xss,
                                           float (&acc)[4], uint32_t& xo, const int* xps = nullptr) {
#pragma unroll
  for (int k = 0; k < GPW; ++k) {
    const int i = warp + k * CW;
    if (MODE >= 6) {  // no branch: an absent group (zero scales) reads group gi0's x
      const int gi = gi0 + (i < gn ? i : 0);
      if (MODE == 8) group_u8<2>(h.q[k][0], h.q[k][1], h.s0[k], h.s1[k], xsq, xps, xss, gi, g, t, acc);
      else group_u8<MODE == 7 ? 1 : 0>(h.q[k][0], h.q[k][1], h.s0[k], h.s1[k], xr.xq, xr.ps, xr.sx, gi, g, t, acc);
      continue;
    }
    if (i >= gn) continue;
    const uint4 &q0 = h.q[k][0], &q1 = h.q[k][1];
    if (MODE == 0)
      xo ^= q0.x ^ q0.y ^ q0.z ^ q0.w ^ q1.x ^ q1.y ^ q1.z ^ q1.w ^ __float_as_uint(h.s0[k]) ^ __float_as_uint(h.s1[k]);
    else if (MODE == 3) group_int8(q0, q1, h.s0[k], h.s1[k], xr.xq, xr.sx, gi0 + i, g, t, acc);
    else if (MODE == 5) group_int8<true>(q0, q1, h.s0[k], h.s1[k], xsq, xss, gi0 + i, g, t, acc);
    else if (MODE == 2) group_mma2(q0, q1, h.s0[k], h.s1[k], m.xp, gi0 + i, g, t, acc);
    else group_mma(q0, q1, h.s0[k], h.s1[k], m.xp, gi0 + i, g, t, acc);
  }
}

/** This warp's rows of a finished tile into red (lanes t = 0), by MODE. */
template <int MODE, int CW>
__device__ __forceinline__ void sums_to_red(float (&red)[CW][16], int warp, int g, int t, float (&acc)[4],
                                            uint32_t& xo) {
  if (MODE == 0) acc[0] = __uint_as_float(xo & 0x3fffffffu), xo = 0u;
  if (MODE >= 3 && MODE != 4) int8_rows(acc);
  if (t == 0) red[warp][g] = acc[0] + acc[1], red[warp][g + 8] = acc[2] + acc[3];
}

/** The warps' sums of tile rt meet without stopping the block: the last warp to count itself in adds them (in warp
 * order) and stores y (whole tile) or adds into it. */
template <int CW>
__device__ __forceinline__ void last_warp_sums(float (&red)[CW][16], unsigned* arrived, int lane, const Mat& m, int rt,
                                               bool whole) {
  __syncwarp();
  unsigned last = 0;
  if (lane == 0) {
    __threadfence_block();
    last = atomicAdd(arrived, 1u) == (unsigned)CW - 1;
    if (last) __threadfence_block();
  }
  if (!__shfl_sync(0xffffffffu, last, 0)) return;
  if (lane < 16 && rt * 16 + lane < m.rows) {
    float v = 0.f;
    for (int k = 0; k < CW; ++k) v += red[k][lane];
    if (whole) m.y[rt * 16 + lane] = v;
    else atomicAdd(m.y + rt * 16 + lane, v);
  }
  __syncwarp();
  if (lane == 0) *arrived = 0u;
}

// A stage's descriptor: matrix j, tile rt, its first group g0 and gn groups (.x, .y, .z, .w); j = nMats ends.
using TmaStage = int4;

/**
 * Groups [ga, gb) of tile rt of matrix m (index j) as stages of up to S groups into the ring of D stages, each
 * stage's descriptor in meta (when set); u: the stage count so far. emit_tile: the whole tile.
 */
template <int S, int D>
__device__ __forceinline__ void emit_groups(const Mat& m, int j, int rt, int ga, int gb, int& u, uint64_t* full,
                                            uint64_t* empty, TmaStage* meta, uint8_t* ring) {
  constexpr int WB = S * 1024, STB = S * kTmaGroupBytes;
  const int NG = m.cols / kGroup;
  for (int g0 = ga; g0 < gb;) {
    const int gn = min(S, gb - g0), s = u % D;
    tc::mbar_wait(&empty[s], ((u / D) & 1) ^ 1);
    if (meta) meta[s] = make_int4(j, rt, g0, gn);
    uint8_t* st = ring + (size_t)s * STB;
    const size_t gg = (size_t)rt * NG + g0;
    tc::mbar_arrive_expect_tx(&full[s], gn * kTmaGroupBytes);
    tc::bulk_load(st, m.q + gg * 64, gn * 1024, &full[s]);
    tc::bulk_load(st + WB, m.scales + gg * 16, gn * 64, &full[s]);
    g0 += gn, ++u;
  }
}
template <int S, int D>
__device__ __forceinline__ void emit_tile(const Mat& m, int j, int rt, int& u, uint64_t* full, uint64_t* empty,
                                          TmaStage* meta, uint8_t* ring) {
  emit_groups<S, D>(m, j, rt, 0, m.cols / kGroup, u, full, empty, meta, ring);
}

/** The stream's end: a stage of matrix nMats, after the last one. */
template <int D>
__device__ __forceinline__ void emit_end(int nMats, int u, uint64_t* full, uint64_t* empty, TmaStage* meta) {
  const int s = u % D;
  tc::mbar_wait(&empty[s], ((u / D) & 1) ^ 1);
  meta[s] = make_int4(nMats, 0, 0, 0);
  tc::mbar_arrive(&full[s]);
}

// LAST: a tile's sums meet without stopping the block: each warp leaves its 16 sums in slot n % TS of red and counts
// itself in; the last warp to arrive adds them (in warp order) and stores y. Warps drift at most D stages apart (a
// slot is refilled only once every warp has released it), so TS = D + 2 slots never collide. Otherwise every
// consumer waits at a named barrier at each tile's end. MODE 0: loads only (words xor-ed, wrong sums: timing); MODE
// 2: a group's two chunks on two accumulator chains (other sums' order than the graph's); MODE 3: the s8 mma on x's
// int8 pieces (group_int8); MODE 5: the same with x's pieces copied into shared memory at each matrix's start
// (after the ring: tma_xs_bytes); MODE 6: the u8 x s8 mma (group_u8); MODE 7: the same without x's loads (wrong
// sums: timing); MODE 8: MODE 6 with x's pieces, sums and scales copied into shared memory at each matrix's start.
// MINB: blocks an SM.
template <bool Barrier, int CW, int GPW, int D, bool LAST = false, int MODE = 1, int MINB = 1>
__global__ void __launch_bounds__((CW + 1) * 32, MINB) chain_kernel_tma(const Mat* __restrict__ gmats, int nMats,
                                                                     Bar bar) {
  constexpr int S = CW * GPW, WB = S * 1024, STB = S * kTmaGroupBytes, NC = CW * 32;
  constexpr int TS = LAST ? D + 2 : 2;
  extern __shared__ __align__(128) uint8_t tmaRing[];
  __shared__ __align__(8) uint64_t full[D], empty[D];
  __shared__ Mat mats[kMaxMats];
  __shared__ XPieces pieces[4];  // bar.pieces, read where used as mats are
  __shared__ float red[TS][CW][16];
  __shared__ unsigned arrived[TS];
  if (threadIdx.x < TS) arrived[threadIdx.x] = 0u;
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  if (threadIdx.x < 4) pieces[threadIdx.x] = bar.pieces[threadIdx.x];
  if (threadIdx.x == 0) init_ring(full, empty, CW);
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  if (warp == CW) {  // the producer: every stage of every matrix, in the consumers' order
    if (lane == 0) {
      int u = 0;
      for (int j = 0; j < nMats; ++j) {
        const Mat& m = mats[j];
        const int NG = m.cols / kGroup;
        const int2 sp = tma_span(m);
        for (int rt = sp.x / NG; rt * NG < sp.y; ++rt)  // the span's part of each tile it touches
          emit_groups<S, D>(m, j, rt, max(sp.x - rt * NG, 0), min(sp.y - rt * NG, NG), u, full, empty, nullptr,
                            tmaRing);
      }
    }
    return;
  }

  int u = 0, par = 0;
  uint32_t xo = 0u;
  for (int j = 0; j < nMats; ++j) {
    if (Barrier && j > 0) consumers_grid_barrier(bar, (unsigned)j, NC);
    const Mat& m = mats[j];
    const XPieces& xr = pieces[j % 4];
    const int NG = m.cols / kGroup;
    const int2 sp = tma_span(m);
    uint4* xsq = reinterpret_cast<uint4*>(tmaRing + (size_t)D * STB);
    float* xss = reinterpret_cast<float*>(tmaRing + (size_t)D * STB + kXsScales);
    int* xps = reinterpret_cast<int*>(tmaRing + (size_t)D * STB + kXsSums);
    if (MODE == 5 || MODE == 8) {  // x's pieces, scales (and sums) into shared memory (the ring keeps filling)
      consumers_sync(NC);  // every warp is done with the previous matrix's
      for (int i = threadIdx.x; i < m.cols * 3 / 16; i += NC) xsq[i] = tc::ld_prev(xr.xq + i);
      for (int i = threadIdx.x; i < NG; i += NC) xss[i] = tc::ld_prev(xr.sx + i);
      if (MODE == 8)
        for (int i = threadIdx.x; i < NG * 8; i += NC) xps[i] = tc::ld_prev(xr.ps + i);
      consumers_sync(NC);
    }
    float acc[4] = {0.f, 0.f, 0.f, 0.f};
    for (int g0 = sp.x; g0 < sp.y;) {
      const int rt = g0 / NG, te = min(sp.y, (rt + 1) * NG), gn = min(S, te - g0), s = u % D;
      tc::mbar_wait(&full[s], (u / D) & 1);
      HeldGroups<GPW> h;
      hold_groups<CW>(tmaRing + (size_t)s * STB, WB, gn, warp, lane, g, h);
      __syncwarp();
      if (lane == 0) tc::mbar_arrive(&empty[s]);
      use_groups<CW, GPW, MODE>(h, gn, g0 - rt * NG, warp, g, t, m, xr, xsq, xss, acc, xo, xps);
      g0 += gn, ++u;
      if (g0 == te) {  // this block's part of tile rt is done: the warps' sums meet
        sums_to_red<MODE>(red[par], warp, g, t, acc, xo);
        const bool whole = rt * NG >= sp.x && (rt + 1) * NG <= sp.y;
        if (LAST) {
          last_warp_sums(red[par], &arrived[par], lane, m, rt, whole);
          par = par + 1 == TS ? 0 : par + 1;
        } else {
          consumers_sync(NC);
          if (threadIdx.x < 16 && rt * 16 + (int)threadIdx.x < m.rows) {
            float v = 0.f;
            for (int k = 0; k < CW; ++k) v += red[par][k][threadIdx.x];
            if (whole) m.y[rt * 16 + threadIdx.x] = v;
            else atomicAdd(m.y + rt * 16 + threadIdx.x, v);
          }
          par ^= 1;
        }
        acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
      }
    }
  }
}

/**
 * The claiming producer (one thread): tiles taken in order from ctr (every matrix's tiles numbered one after another,
 * cum[j] the first of matrix j; two claims in flight), each as stages of up to S groups into the ring of D stages,
 * the descriptor in meta[s]; then a stage of matrix nMats.
 */
template <int S, int D>
__device__ __forceinline__ void produce_claimed(const Mat* mats, const int* cum, int nMats, unsigned* ctr,
                                                uint64_t* full, uint64_t* empty, TmaStage* meta, uint8_t* ring) {
  unsigned c0 = atomicAdd(ctr, 1u), c1 = atomicAdd(ctr, 1u);
  int j = 0, u = 0;
  for (;;) {
    const int idx = (int)c0;
    c0 = c1, c1 = atomicAdd(ctr, 1u);
    while (j < nMats && idx >= cum[j + 1]) ++j;
    if (j == nMats) break;
    emit_tile<S, D>(mats[j], j, idx - cum[j], u, full, empty, meta, ring);
  }
  emit_end<D>(nMats, u, full, empty, meta);
}

// The deep ring with tiles claimed instead of a fixed share: the producer takes the chain's tiles in order from one
// counter (produce_claimed), so a block whose copies land faster takes more tiles; each stage carries its (matrix,
// tile, groups) in meta. Whole tiles, so y is stored, never added. Consumers pass the grid barrier of every matrix
// they move past, with or without tiles of it; a stage with matrix nMats ends the stream.
template <int CW, int GPW, int D, int MODE = 1>
__global__ void __launch_bounds__((CW + 1) * 32, 1) chain_kernel_tma_dyn(const Mat* __restrict__ gmats, int nMats,
                                                                         Bar bar, unsigned* __restrict__ ctr) {
  constexpr int S = CW * GPW, WB = S * 1024, STB = S * kTmaGroupBytes, NC = CW * 32, TS = D + 2;
  extern __shared__ __align__(128) uint8_t tmaRing[];
  __shared__ __align__(8) uint64_t full[D], empty[D];
  __shared__ Mat mats[kMaxMats];
  __shared__ XPieces pieces[4];  // bar.pieces, read where used as mats are
  __shared__ int cum[kMaxMats + 1];
  __shared__ __align__(16) TmaStage meta[D];
  __shared__ float red[TS][CW][16];
  __shared__ unsigned arrived[TS];
  if (threadIdx.x < TS) arrived[threadIdx.x] = 0u;
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  if (threadIdx.x < 4) pieces[threadIdx.x] = bar.pieces[threadIdx.x];
  if (threadIdx.x == 0) {
    int c = 0;
    for (int i = 0; i < nMats; ++i) cum[i] = c, c += (gmats[i].rows + 15) / 16;
    cum[nMats] = c;
    init_ring(full, empty, CW);
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  if (warp == CW) {
    if (lane == 0) produce_claimed<S, D>(mats, cum, nMats, ctr, full, empty, meta, tmaRing);
    return;
  }

  int u = 0, par = 0, curJ = 0;
  uint32_t xo = 0u;
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  for (;; ++u) {
    const int s = u % D;
    tc::mbar_wait(&full[s], (u / D) & 1);
    const TmaStage me = meta[s];
    for (; curJ < me.x; ++curJ)  // barrier k: matrix k - 1's y is everywhere
      if (curJ + 1 < nMats) consumers_grid_barrier(bar, (unsigned)(curJ + 1), NC);
    if (me.x >= nMats) break;
    const Mat& m = mats[me.x];
    HeldGroups<GPW> h;
    hold_groups<CW>(tmaRing + (size_t)s * STB, WB, me.w, warp, lane, g, h);
    __syncwarp();
    if (lane == 0) tc::mbar_arrive(&empty[s]);
    use_groups<CW, GPW, MODE>(h, me.w, me.z, warp, g, t, m, pieces[me.x % 4], nullptr, nullptr, acc, xo);
    if (me.z + me.w == m.cols / kGroup) {  // the tile's last stage: the warps' sums meet (last warp stores)
      sums_to_red<MODE>(red[par], warp, g, t, acc, xo);
      last_warp_sums(red[par], &arrived[par], lane, m, me.y, true);
      par = par + 1 == TS ? 0 : par + 1;
      acc[0] = acc[1] = acc[2] = acc[3] = 0.f;
    }
  }
}

}  // namespace
