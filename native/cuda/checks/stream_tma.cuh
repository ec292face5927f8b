// check_stream's bulk-copy variant (docs/gpu-runs.md run 68): the one-token GEMV's weights streamed into a shared-
// memory ring by the TMA (kernels/tma.cuh) instead of register loads. A producer warp (the last; one thread) copies
// stage after stage of a tile's bytes, a stage being KS groups (KS x 1 KB of weights and KS x 64 B of scales, both
// contiguous in the Int4Tiled layout); KS consumer warps take one group each from the stage, release the slot as soon
// as the group is in registers, and run the engine's unpack + mma on it (x from global, as the engine). PERSIST:
// grid-stride over tiles with the ring running on across them. Group 128, no zero points (check_stream's weights).
#pragma once
#include "int4t_check.cuh"
#include "kernels/int4_tiled_common.cuh"
#include "kernels/tma.cuh"

namespace stream_check {
namespace tc = tpserve::cuda;

template <int KS, int D>
constexpr size_t tma_smem() {
  return (size_t)D * KS * (1024 + 64);
}

// MODE 1: the engine's unpack + mma; 0: loads only (the words xor-ed, no x: wrong sums). POL: an evict-first L2
// policy on the copies.
template <int KS, int D, bool PERSIST, int MINB, int MODE = 1, bool POL = true>
__global__ void __launch_bounds__(KS * 32 + 32, MINB) stream_gemv_tma(const __half* __restrict__ xp, tc::Int4Tiled w,
                                                                     float* __restrict__ parts) {
  constexpr int GC = 2, WB = KS * GC * 512, STB = KS * (1024 + 64);
  extern __shared__ __align__(128) uint8_t smem[];
  __shared__ __align__(8) uint64_t full[D], empty[D];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int KB = w.cols >> 6, NG = KB / GC, tiles = w.rows / 16;
  const int SP = (NG + KS - 1) / KS;  // stages a tile
  const int tstep = PERSIST ? gridDim.x : tiles;
  const int nT = (int)blockIdx.x < tiles ? (tiles - (int)blockIdx.x + tstep - 1) / tstep : 0;
  const int U = nT * SP;
  if (threadIdx.x == 0) {
#pragma unroll
    for (int s = 0; s < D; ++s) tc::mbar_init(&full[s], 1), tc::mbar_init(&empty[s], KS);
    tc::mbar_init_fence();
  }
  __syncthreads();
  if (warp == KS) {  // the producer
    if (lane == 0) {
      const uint64_t pol = POL ? tc::l2_evict_first() : 0;
      int rt = blockIdx.x, sp = 0;
      for (int u = 0; u < U; ++u) {
        const int s = u % D;
        tc::mbar_wait(&empty[s], ((u / D) & 1) ^ 1);
        const int g0 = sp * KS, gn = min(KS, NG - g0);
        uint8_t* st = smem + (size_t)s * STB;
        tc::mbar_arrive_expect_tx(&full[s], gn * (1024 + 64));
        if (POL) {
          tc::bulk_load(st, w.q + ((size_t)rt * KB + (size_t)g0 * GC) * 32, gn * 1024, &full[s], pol);
          tc::bulk_load(st + WB, w.scales + ((size_t)rt * NG + g0) * 16, gn * 64, &full[s], pol);
        } else {
          tc::bulk_load(st, w.q + ((size_t)rt * KB + (size_t)g0 * GC) * 32, gn * 1024, &full[s]);
          tc::bulk_load(st + WB, w.scales + ((size_t)rt * NG + g0) * 16, gn * 64, &full[s]);
        }
        if (++sp == SP) sp = 0, rt += tstep;
      }
    }
    return;
  }
  const uint32_t zlo = tc::zero_lo(8u), zhi = tc::zero_hi(8u);
  float acc[4] = {0.f, 0.f, 0.f, 0.f};
  uint32_t x = 0;
  int rt = blockIdx.x, sp = 0;
  for (int u = 0; u < U; ++u) {
    const int s = u % D;
    const int gi = sp * KS + warp;
    tc::mbar_wait(&full[s], (u / D) & 1);
    const uint8_t* st = smem + (size_t)s * STB;
    uint4 q0 = make_uint4(0u, 0u, 0u, 0u), q1 = q0;
    float s0 = 0.f, s1 = 0.f;
    if (gi < NG) {
      const uint4* qs = reinterpret_cast<const uint4*>(st) + warp * GC * 32 + lane;
      q0 = qs[0], q1 = qs[32];
      const float* ss = reinterpret_cast<const float*>(st + WB) + warp * 16;
      s0 = ss[g], s1 = ss[g + 8];
    }
    __syncwarp();
    if (lane == 0) tc::mbar_arrive(&empty[s]);
    if (MODE == 0) {
      x ^= q0.x ^ q0.y ^ q0.z ^ q0.w ^ q1.x ^ q1.y ^ q1.z ^ q1.w ^ __float_as_uint(s0) ^ __float_as_uint(s1);
    } else if (gi < NG) {
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      tc::one_token_chunk(q0, xp, gi * GC, g, t, zlo, zhi, d);
      tc::one_token_chunk(q1, xp, gi * GC + 1, g, t, zlo, zhi, d);
      acc[0] = fmaf(s0, d[0], acc[0]), acc[1] = fmaf(s0, d[1], acc[1]);
      acc[2] = fmaf(s1, d[2], acc[2]), acc[3] = fmaf(s1, d[3], acc[3]);
    }
    if (++sp == SP) {  // the tile's last stage: this warp's partial sums out
      if (MODE == 0) {
        if (lane == 0) parts[(size_t)warp * w.rows + rt * 16] = __uint_as_float(x & 0x3fffffffu);
      } else if (t == 0) {
        parts[(size_t)warp * w.rows + rt * 16 + g] = acc[0] + acc[1];
        parts[(size_t)warp * w.rows + rt * 16 + g + 8] = acc[2] + acc[3];
      }
      acc[0] = acc[1] = acc[2] = acc[3] = 0.f, x = 0;
      sp = 0, rt += tstep;
    }
  }
}

}  // namespace stream_check
