// check_chain's lean deep-ring consumer (docs/gpu-runs.md runs 118-119). Run 117 found the deep ring's consumer warps
// issuing a steady 0.57 instructions a cycle a scheduler, so that their time follows their instruction count, and
// most of the count outside the multiply itself. This form keeps the multiply of run 115 (u8 x s8 mma, zero points
// off the int32 sums) and cuts the rest:
//  - shared-memory addresses as 32-bit values computed once (no generic-to-shared conversion in the loop), the
//    slot and its phase advanced rather than divided, a stage's descriptor read as one 16-byte load;
//  - one lane of a warp arrives on a slot's barrier after a __syncwarp (every lane arriving made no difference);
//  - x's pointers offset per lane once a matrix, so a group's loads take one multiply-add each;
//  - the tile's sums handed to a reducer warp through a ring of TS slots with their own barriers, instead of the
//    consumers counting themselves in and the last one adding (the reducer stores y and, at a grid barrier, the
//    consumers' thread 0 first waits for it to be done: its y stores, seen through that barrier, go out with the
//    release of the arrival (a fence in the reducer after every tile made it the bottleneck, 1.37-1.42 ms; the
//    reducer arriving itself after the block's last tile of a matrix, marked by the producer, was 1-5% slower);
//  - two groups a warp a stage (S = 2 CW), with a branch only for a stage that holds fewer (down's last).
// With bar.stamps3 set, thread 0 stamps each grid barrier's entry, arrival (the reducer done) and departure.
// Tiles are claimed by the producer: from one counter, as chain_kernel_tma_dyn (K = 0), or from one counter per
// matrix (produce_paced, K > 0; 9-10% faster than the engine's graph through the barriers, run 119). MODE 6: x's
// pieces, sums and scales loaded through L1; MODE 7: made up in registers (wrong sums: timing); MODE 9: made by
// every block from x itself at each matrix's start, as a persistent step would from y after each barrier; MODE 10:
// the engine's fp16 multiply on x's hi/lo columns, which the tile writing y could prepare itself (run 121).
#pragma once
#include "chain_tma.cuh"

namespace {

__device__ __forceinline__ bool lean_try(uint32_t bar, uint32_t parity) {
  uint32_t ok;
  asm volatile(
      "{\n .reg .pred p;\n mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n selp.u32 %0, 1, 0, p;\n}"
      : "=r"(ok)
      : "r"(bar), "r"(parity)
      : "memory");
  return ok != 0;
}
__device__ __forceinline__ void lean_wait(uint32_t bar, uint32_t parity) {
  while (!lean_try(bar, parity)) {
  }
}
__device__ __forceinline__ void lean_arrive(uint32_t bar) {
  asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}
__device__ __forceinline__ uint4 lean_lds128(uint32_t a) {
  uint4 v;
  asm volatile("ld.shared.v4.u32 {%0,%1,%2,%3}, [%4];" : "=r"(v.x), "=r"(v.y), "=r"(v.z), "=r"(v.w) : "r"(a));
  return v;
}
__device__ __forceinline__ float lean_lds32(uint32_t a) {
  float v;
  asm volatile("ld.shared.f32 %0, [%1];" : "=f"(v) : "r"(a));
  return v;
}

/** One group through the u8 x s8 mma (group_u8's sums) into rows g (aG) and g + 8 (aG8); w0, w1 weigh the pieces of
 * this lane's columns, w0b, w1b the same over 16 (row g + 8's nibbles are 16 q). */
// X: 0 x's pieces, sums and scales through L1 (xqLane, psLane, sx); 1 made up (wrong sums: timing); 2 from this
// block's shared memory (xsA: the pieces at the same offsets, the scales at kXsScales, the sums at kXsSums).
template <int X>
__device__ __forceinline__ void lean_group(const uint4& q0, const uint4& q1, float s0, float s1, const uint4* xqLane,
                                           const int2* psLane, const float* sx, uint32_t xsA, int gi, bool xl, int g,
                                           int t, float w0, float w1, float w0b, float w1b, float& aG, float& aG8) {
  uint4 b0 = make_uint4(0u, 0u, 0u, 0u), b1 = b0;
  int2 ps;
  float xs;
  if (X == 1) {
    b0 = make_uint4((uint32_t)gi, (uint32_t)g, (uint32_t)t, 7u), b1 = make_uint4(3u, (uint32_t)gi, 5u, (uint32_t)g);
    ps = make_int2(gi, t), xs = 1.f;
  } else if (X == 2) {
    const uint32_t a = xsA + (uint32_t)(gi * 24 + g * 4 + t) * 16;
    if (xl) b0 = lean_lds128(a), b1 = lean_lds128(a + 12 * 16);
    xs = lean_lds32(xsA + kXsScales + gi * 4);
    const uint4 p4 = lean_lds128(xsA + kXsSums + (gi * 8 + (t & 2) * 2) * 4);
    ps = (t & 1) ? make_int2((int)p4.z, (int)p4.w) : make_int2((int)p4.x, (int)p4.y);
  } else {
    if (xl) b0 = tc::ld_prev(xqLane + gi * 24), b1 = tc::ld_prev(xqLane + gi * 24 + 12);
    ps = tc::ld_prev(psLane + gi * 4), xs = tc::ld_prev(sx + gi);
  }
  int r[4];
  int8_check::u8_group_sums(q0, q1, b0, b1, ps, r);
  aG = fmaf(s0 * xs, fmaf((float)r[1], w1, (float)r[0] * w0), aG);
  aG8 = fmaf(s1 * xs, fmaf((float)r[3], w1b, (float)r[2] * w0b), aG8);
}

/** One group through the engine's fp16 unpack and mma on x's hi/lo columns (group_mma's products), two chains; the
 * row sums land in lane t = 0 (columns hi and lo; t = 1's are zero, so int8's pairwise shuffle at the end holds). */
__device__ __forceinline__ void lean_group_f16(const uint4& q0, const uint4& q1, float s0, float s1,
                                               const __half* __restrict__ xp, int gi, int g, int t, float& aG,
                                               float& aG8) {
  const uint32_t zlo = tc::zero_lo(8u), zhi = tc::zero_hi(8u);
  float d[4] = {0.f, 0.f, 0.f, 0.f}, e[4] = {0.f, 0.f, 0.f, 0.f};
  tc::one_token_chunk(q0, xp, gi * 2, g, t, zlo, zhi, d);
  tc::one_token_chunk(q1, xp, gi * 2 + 1, g, t, zlo, zhi, e);
  aG = fmaf(s0, (d[0] + e[0]) + (d[1] + e[1]), aG);
  aG8 = fmaf(s1, (d[2] + e[2]) + (d[3] + e[3]), aG8);
}

/**
 * x's pieces (int8_pieces.cuh's quantize_x, engine order), scales and piece sums into shared memory at xs: the
 * pieces at their global offsets, the scales at kXsScales, the sums (8 ints a group) at kXsSums. Warp w of CW
 * takes groups w, w + CW, ... (a lane 4 values of each), all of whose loads go out first.
 */
template <int CW>
__device__ __forceinline__ void quantize_into_smem(const float* __restrict__ x, int NG, int warp, int lane,
                                                   uint8_t* xs) {
  constexpr int kMaxG = (kTmaXsGroups + CW - 1) / CW;
  int8_t* xq = reinterpret_cast<int8_t*>(xs);
  float* sx = reinterpret_cast<float*>(xs + kXsScales);
  int* psum = reinterpret_cast<int*>(xs + kXsSums);
  float4 vs[kMaxG];
#pragma unroll
  for (int k = 0; k < kMaxG; ++k) {
    const int gq = warp + k * CW;
    if (gq < NG) vs[k] = tc::ld_prev(reinterpret_cast<const float4*>(x + gq * int8_check::kGroup + lane * 4));
  }
#pragma unroll
  for (int k = 0; k < kMaxG; ++k) {
    const int gq = warp + k * CW;
    if (gq >= NG) break;
    const int k0 = gq * int8_check::kGroup + lane * 4;
    int8_check::quantize_group<true>(vs[k], k0, lane, xq, sx + gq, psum + gq * 8);
  }
}

/**
 * The per-matrix producer (run 119): claims from one counter per matrix (ctr[j]), one claim ahead, and at most K
 * tiles of a matrix that the consumers have not reached yet (*consumerJ: the matrix they are in). The pacing was
 * meant to stop the blocks whose rings have room during a barrier from taking the next matrix's tiles (run 118's
 * stamps: the blocks' ends spread over 2-5 us a matrix); at K = 1-3 it cost more than it saved, while the counters
 * per matrix alone (K = 1000) took 7% off the chain against produce_claimed's single counter.
 */
template <int S, int D, int K>
__device__ __forceinline__ void produce_paced(const Mat* mats, int nMats, unsigned* ctr, const volatile int* consumerJ,
                                              uint64_t* full, uint64_t* empty, TmaStage* meta, uint8_t* ring) {
  int j = 0, u = 0, mine = 0;
  unsigned c = atomicAdd(ctr, 1u);
  for (;;) {
    const Mat& m = mats[j];
    const int idx = (int)c;
    if (idx >= (m.rows + 15) / 16) {  // matrix j is all taken: the next one
      if (++j == nMats) break;
      mine = 0, c = atomicAdd(ctr + j, 1u);
      continue;
    }
    ++mine;
    const bool pace = j > *consumerJ && mine >= K;
    if (!pace) c = atomicAdd(ctr + j, 1u);  // the next claim, while this tile's copies go out
    emit_tile<S, D>(m, j, idx, u, full, empty, meta, ring);
    if (pace) {
      while (*consumerJ < j) __nanosleep(64);
      c = atomicAdd(ctr + j, 1u);
    }
  }
  emit_end<D>(nMats, u, full, empty, meta);
}

template <int CW, int D, int MODE, bool Barrier = true, int K = 0>
__global__ void __launch_bounds__((CW + 2) * 32, 1) chain_kernel_lean(const Mat* __restrict__ gmats, int nMats,
                                                                      Bar bar, unsigned* __restrict__ ctr) {
  constexpr int S = 2 * CW, WB = S * 1024, STB = S * kTmaGroupBytes, NC = CW * 32, TS = 4;
  extern __shared__ __align__(128) uint8_t leanRing[];
  __shared__ __align__(8) uint64_t full[D], empty[D], redFull[TS], redEmpty[TS];
  __shared__ Mat mats[kMaxMats];
  __shared__ int cum[kMaxMats + 1];
  __shared__ __align__(16) TmaStage meta[D];
  __shared__ float red[TS][CW][16];
  __shared__ int2 redMeta[TS];            // matrix, tile of the sums in red[p]
  __shared__ int consumerJ;               // K > 0: the matrix the consumers are in
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  if (threadIdx.x == 0) {
    consumerJ = 0;
    int c = 0;
    for (int i = 0; i < nMats; ++i) cum[i] = c, c += (gmats[i].rows + 15) / 16;
    cum[nMats] = c;
    for (int s = 0; s < D; ++s) tc::mbar_init(&full[s], 1), tc::mbar_init(&empty[s], CW);
    for (int p = 0; p < TS; ++p) tc::mbar_init(&redFull[p], CW), tc::mbar_init(&redEmpty[p], 1);
    tc::mbar_init_fence();
  }
  __syncthreads();
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;

  if (warp == CW) {  // the producer, as chain_kernel_tma_dyn's
    if (lane == 0 && K > 0) produce_paced<S, D, K>(mats, nMats, ctr, &consumerJ, full, empty, meta, leanRing);
    else if (lane == 0) produce_claimed<S, D>(mats, cum, nMats, ctr, full, empty, meta, leanRing);
    return;
  }
  if (warp == CW + 1) {  // the reducer: each handed tile's sums, in warp order, into y
    for (int ti = 0;; ++ti) {
      const int p = ti & (TS - 1);
      tc::mbar_wait(&redFull[p], (ti / TS) & 1);
      const int2 rm = redMeta[p];
      if (rm.x >= nMats) break;
      const Mat& m = mats[rm.x];
      if (lane < 16 && rm.y * 16 + lane < m.rows) {
        float v = 0.f;
#pragma unroll
        for (int k = 0; k < CW; ++k) v += red[p][k][lane];
        m.y[rm.y * 16 + lane] = v;
      }
      __syncwarp();
      if (lane == 0) tc::mbar_arrive(&redEmpty[p]);
    }
    return;
  }

  constexpr float m1 = 1.f / int8_check::kPieceMul, m2 = m1 * m1;
  const float w0 = t == 0 ? 1.f : m2, w1 = t == 0 ? m1 : 0.f, w0b = w0 * (1.f / 16.f), w1b = w1 * (1.f / 16.f);
  const bool xl = g < int8_check::kPieces;
  const uint32_t ringA = tc::smem_u32(leanRing), fullA = tc::smem_u32(full), emptyA = tc::smem_u32(empty);
  const uint32_t redFullA = tc::smem_u32(redFull), redEmptyA = tc::smem_u32(redEmpty);
  const uint32_t qOff = warp * 1024 + lane * 16, sOff = WB + warp * 64 + g * 4, xsA = ringA + D * STB;
  const uint4* xqLane = nullptr;
  const int2* psLane = nullptr;
  const float* sxp = nullptr;
  const __half* xpm = nullptr;
  int NG = 0, curJ = 0, loadedJ = -1, s = 0, ti = 0;
  uint32_t ph = 0;
  float aG = 0.f, aG8 = 0.f;
  for (;;) {
    lean_wait(fullA + s * 8, ph);
    const int4 me = meta[s];
    if (me.x != curJ) {
      for (; curJ < me.x; ++curJ) {  // grid barrier k = curJ + 1: matrix curJ's y is everywhere
        if (!Barrier || curJ + 1 >= nMats) continue;
        consumers_grid_barrier(bar, (unsigned)(curJ + 1), NC, [&] {  // once the reducer is done
          if (ti > 0) lean_wait(redEmptyA + ((ti - 1) & (TS - 1)) * 8, ((ti - 1) / TS) & 1);
        });
      }
      if (K > 0 && threadIdx.x == 0) *reinterpret_cast<volatile int*>(&consumerJ) = curJ;
      if (me.x >= nMats) break;
    }
    if (me.x != loadedJ) {
      const Mat& m = mats[me.x];
      const XPieces xr = bar.pieces[me.x % 4];  // once a matrix, into registers
      xqLane = xr.xq + g * 4 + t, psLane = reinterpret_cast<const int2*>(xr.ps) + t, sxp = xr.sx, xpm = m.xp;
      NG = m.cols / kGroup, loadedJ = me.x;
      if (MODE == 9) {  // x's pieces made here from x itself, as each block would from y after the barrier
        consumers_sync(NC);  // every warp is done with the previous matrix's
        quantize_into_smem<CW>(xr.xf, NG, warp, lane, leanRing + (size_t)D * STB);
        consumers_sync(NC);
      }
    }
    const uint32_t st = ringA + s * STB;
    uint4 q00 = lean_lds128(st + qOff), q01 = lean_lds128(st + qOff + 512);
    uint4 q10 = lean_lds128(st + qOff + CW * 1024), q11 = lean_lds128(st + qOff + CW * 1024 + 512);
    float s00 = lean_lds32(st + sOff), s01 = lean_lds32(st + sOff + 32);
    float s10 = lean_lds32(st + sOff + CW * 64), s11 = lean_lds32(st + sOff + CW * 64 + 32);
    __syncwarp();
    if (lane == 0) lean_arrive(emptyA + s * 8);
    const int gn = me.w;
    int gi0 = me.z + warp, gi1 = gi0 + CW;
    if (gn != S) {  // fewer groups than warps x 2: absent ones weigh 0 and read a present group's x
      if (warp >= gn) s00 = s01 = 0.f, gi0 = me.z, q00 = q01 = make_uint4(0u, 0u, 0u, 0u);
      if (warp + CW >= gn) s10 = s11 = 0.f, gi1 = me.z, q10 = q11 = make_uint4(0u, 0u, 0u, 0u);
    }
    if (MODE == 10) {  // the engine's fp16 unpack and mma on the hi/lo x
      lean_group_f16(q00, q01, s00, s01, xpm, gi0, g, t, aG, aG8);
      lean_group_f16(q10, q11, s10, s11, xpm, gi1, g, t, aG, aG8);
    } else {
      constexpr int X = MODE == 7 ? 1 : MODE == 9 ? 2 : 0;
      lean_group<X>(q00, q01, s00, s01, xqLane, psLane, sxp, xsA, gi0, xl, g, t, w0, w1, w0b, w1b, aG, aG8);
      lean_group<X>(q10, q11, s10, s11, xqLane, psLane, sxp, xsA, gi1, xl, g, t, w0, w1, w0b, w1b, aG, aG8);
    }
    if (++s == D) s = 0, ph ^= 1u;
    if (me.z + gn == NG) {  // the tile's last stage: its sums to the reducer
      const int p = ti & (TS - 1);
      lean_wait(redEmptyA + p * 8, ((ti / TS) & 1) ^ 1);
      aG += __shfl_xor_sync(0xffffffffu, aG, 1);
      aG8 += __shfl_xor_sync(0xffffffffu, aG8, 1);
      if (t == 0) red[p][warp][g] = aG, red[p][warp][g + 8] = aG8;
      if (threadIdx.x == 0) redMeta[p] = make_int2(me.x, me.y);
      __syncwarp();
      if (lane == 0) lean_arrive(redFullA + p * 8);
      aG = aG8 = 0.f, ++ti;
    }
  }
  const int p = ti & (TS - 1);  // the end, for the reducer
  lean_wait(redEmptyA + p * 8, ((ti / TS) & 1) ^ 1);
  if (threadIdx.x == 0) redMeta[p] = make_int2(nMats, 0);
  __syncwarp();
  if (lane == 0) lean_arrive(redFullA + p * 8);
}

}  // namespace
