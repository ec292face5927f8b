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
// FLOW (run 122, LeanFlow): dependencies per input chunk instead of grid barriers.
#pragma once
#include "chain_lean_parts.cuh"

namespace {

template <int CW, int D, int MODE, bool Barrier = true, int K = 0, int FLOW = 0>
__global__ void __launch_bounds__(lean_threads<CW, FLOW>(), 1) chain_kernel_lean(const Mat* __restrict__ gmats,
                                                                                 int nMats, Bar bar,
                                                                                 unsigned* __restrict__ ctr) {
  using F = LeanFlow<FLOW>;
  constexpr int S = 2 * CW, WB = S * 1024, STB = S * kTmaGroupBytes, NC = CW * 32, TS = 4;
  extern __shared__ __align__(128) uint8_t leanRing[];
  __shared__ __align__(8) uint64_t full[D], empty[D], redFull[TS], redEmpty[TS];
  __shared__ Mat mats[kMaxMats];
  __shared__ int cum[kMaxMats + 1];
  __shared__ __align__(16) TmaStage meta[D];
  __shared__ float red[TS][CW][16];
  __shared__ int2 redMeta[TS];            // matrix, tile of the sums in red[p]
  __shared__ int consumerJ;               // K > 0: the matrix the consumers are in
  __shared__ int sigQ[F::signaller ? 2 * kSigQ : 2];  // (matrix, tile) the reducer stored, for the signaller
  __shared__ int sigHead, sigDone;                      // tiles queued, tiles released
  __shared__ int waitFlag[F::waiter ? kWaitRing : 1][F::waiter ? kChunkStride : 1];  // the waiter's published chunks
  for (int i = threadIdx.x; i < nMats; i += blockDim.x) mats[i] = gmats[i];
  if (threadIdx.x == 0) {
    consumerJ = 0, sigHead = 0, sigDone = 0;
    for (int r = 0; r < (F::waiter ? kWaitRing : 1); ++r)
      for (int c = 0; c < (F::waiter ? kChunkStride : 1); ++c) waitFlag[r][c] = 0;
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
  volatile int* vq = sigQ;
  volatile int *vHead = &sigHead, *vDone = &sigDone;
  // F::signaller: (matrix, tile) into the queue once its y is stored, and the queue's head moved (CTA scope).
  const auto queue_tile = [&](int ti, int j, int tile) {
    while (ti - *vDone >= kSigQ) {
    }
    vq[2 * (ti & (kSigQ - 1))] = j, vq[2 * (ti & (kSigQ - 1)) + 1] = tile;
    __threadfence_block();
    *vHead = ti + 1;
  };
  if (warp == CW + 1) {  // the reducer: each handed tile's sums, in warp order, into y
    for (int ti = 0;; ++ti) {
      const int p = ti & (TS - 1);
      tc::mbar_wait(&redFull[p], (ti / TS) & 1);
      const int2 rm = redMeta[p];
      if (rm.x >= nMats) {
        if (F::signaller && lane == 0) queue_tile(ti, nMats, 0);  // the end, for the signaller
        break;
      }
      const Mat& m = mats[rm.x];
      if (lane < 16 && rm.y * 16 + lane < m.rows) {
        float v = 0.f;
#pragma unroll
        for (int k = 0; k < CW; ++k) v += red[p][k][lane];
        m.y[rm.y * 16 + lane] = v;
      }
      __syncwarp();
      if (lane == 0) tc::mbar_arrive(&redEmpty[p]);
      if (F::signaller && lane == 0) queue_tile(ti, rm.x, rm.y);
      else if (F::wait && lane == 0) flow_signal(mats, nMats, bar.chunks, rm.x, rm.y, true);
    }
    return;
  }
  if (F::waiter && warp == CW + 3) {  // the waiter: matrix j's chunks (a lane each) once they are in, in order
    volatile int* vf = &waitFlag[0][0];
    for (int j = 1; j < nMats; ++j) {
      const int T = (mats[j - 1].rows + 15) / 16, G = mats[j].cols / kGroup, r = j % kWaitRing;
      // A flag only grows (j + 1, then j + 1 + kWaitRing, ...), and the consumers wait for at least their matrix's.
      if (F::wholeMatrix) wait_relaxed(bar.chunks + (size_t)j * kChunkStride + kChunkStride - 1, T, bar.timedOut);
      for (int c = lane; c < G; c += 32) {
        const unsigned need = (unsigned)(chunk_lo(c + 1, T, G) - chunk_lo(c, T, G));
        if (!F::wholeMatrix) wait_relaxed(bar.chunks + (size_t)j * kChunkStride + c, need, bar.timedOut);
        vf[r * kChunkStride + c] = j + 1;
      }
      __syncwarp();
    }
    return;
  }
  if (F::signaller && warp == CW + 2) {  // the signaller: one fence, then the counts of every tile queued before it
    if (lane == 0) {
      long long fences = 0, fenceNs = 0;
      for (int done = 0, end = 0; !end;) {
        int h;
        while ((h = *vHead) == done) {
        }
        __threadfence_block();
        const long long t0 = bar.sigStats ? global_ns() : 0;
        asm volatile("fence.acq_rel.gpu;" ::: "memory");
        if (bar.sigStats) fenceNs += global_ns() - t0, ++fences;
        for (; done < h; ++done) {
          const int j = vq[2 * (done & (kSigQ - 1))], tile = vq[2 * (done & (kSigQ - 1)) + 1];
          if (j >= nMats) {
            end = 1, ++done;
            break;
          }
          flow_signal(mats, nMats, bar.chunks, j, tile, false);
        }
        *vDone = done;
        if (end && bar.sigStats) {
          long long* st = bar.sigStats + blockIdx.x * 3;
          st[0] = fences, st[1] = fenceNs, st[2] = done - 1;
        }
      }
    }
    return;
  }

  constexpr float m1 = 1.f / int8_check::kPieceMul, m2 = m1 * m1;
  const float w0 = t == 0 ? 1.f : m2, w1 = t == 0 ? m1 : 0.f, w0b = w0 * (1.f / 16.f), w1b = w1 * (1.f / 16.f);
  const bool xl = g < int8_check::kPieces;
  const uint32_t ringA = tc::smem_u32(leanRing), fullA = tc::smem_u32(full), emptyA = tc::smem_u32(empty);
  const uint32_t redFullA = tc::smem_u32(redFull), redEmptyA = tc::smem_u32(redEmpty);
  const int slot0 = F::pair ? 2 * warp : warp, slot1 = F::pair ? 2 * warp + 1 : warp + CW;  // the stage's groups
  const uint32_t qOff0 = slot0 * 1024 + lane * 16, qOff1 = slot1 * 1024 + lane * 16;
  const uint32_t sOff0 = WB + slot0 * 64 + g * 4, sOff1 = WB + slot1 * 64 + g * 4, xsA = ringA + D * STB;
  // MODE 11/12: this warp's region of x's pieces (after the ring), and MODE 12's fragments in registers
  const uint32_t wxA = xsA + (uint32_t)(warp * warp_xs_region_bytes<CW>());
  uint4 fa0 = make_uint4(0u, 0u, 0u, 0u), fa1 = fa0, fb0 = fa0, fb1 = fa0;  // MODE 12: groups k = 0 (a), 1 (b)
  float fxa = 0.f, fxb = 0.f;
  int2 fpa = make_int2(0, 0), fpb = fpa;
  unsigned long long ready = 0ull;  // dataflow: bit b = this warp's b-th group of matrix readyJ has its input
  int readyJ = -1;
  // Dataflow: group gi (this warp's b-th of the matrix) of matrix me.x waits for its input chunk the first time.
  const auto ensure_ready = [&](int j, int gi, int b, int NGj) {
    if ((ready >> b) & 1ull) return;
    if (F::waiter) {
      if (lane == 0)
        while (reinterpret_cast<volatile int*>(&waitFlag[0][0])[(j % kWaitRing) * kChunkStride + gi] < j + 1) {
        }
      __syncwarp();
      __threadfence_block();
      ready |= 1ull << b;
      return;
    }
    if (lane == 0) {
      const int T = (mats[j - 1].rows + 15) / 16;
      const unsigned need = F::wholeMatrix ? (unsigned)T : (unsigned)(chunk_lo(gi + 1, T, NGj) - chunk_lo(gi, T, NGj));
      const unsigned* c = bar.chunks + (size_t)j * kChunkStride + (F::wholeMatrix ? kChunkStride - 1 : gi);
      if (F::relaxedPoll) wait_relaxed(c, need, bar.timedOut);
      else wait_at_least(c, need, bar.timedOut);
    }
    __syncwarp();
    ready |= F::wholeMatrix ? ~0ull : 1ull << b;
  };
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
      if (MODE == 11 || MODE == 12) {  // this warp's groups of x, into its region (and registers: MODE 12)
        for (int k = 0; k * CW + warp < NG; ++k) warp_quantize_group(xr.xf, k * CW + warp, lane, wxA + k * kWarpXsGroupBytes);
        __syncwarp();
        if (MODE == 12 && NG <= S) {
          warp_group_frag(wxA, xl, g, t, fa0, fa1, fxa, fpa);
          warp_group_frag(wxA + (warp + CW < NG ? kWarpXsGroupBytes : 0), xl, g, t, fb0, fb1, fxb, fpb);
        }
      }
      if (MODE == 9) {  // x's pieces made here from x itself, as each block would from y after the barrier
        consumers_sync(NC);  // every warp is done with the previous matrix's
        quantize_into_smem<CW>(xr.xf, NG, warp, lane, leanRing + (size_t)D * STB);
        consumers_sync(NC);
      }
    }
    const uint32_t st = ringA + s * STB;
    uint4 q00 = lean_lds128(st + qOff0), q01 = lean_lds128(st + qOff0 + 512);
    uint4 q10 = lean_lds128(st + qOff1), q11 = lean_lds128(st + qOff1 + 512);
    float s00 = lean_lds32(st + sOff0), s01 = lean_lds32(st + sOff0 + 32);
    float s10 = lean_lds32(st + sOff1), s11 = lean_lds32(st + sOff1 + 32);
    __syncwarp();
    if (lane == 0) lean_arrive(emptyA + s * 8);
    const int gn = me.w;
    int gi0 = me.z + slot0, gi1 = me.z + slot1;
    if (F::wait && me.x > 0) {  // before the absent groups below take a present one's index
      if (me.x != readyJ) readyJ = me.x, ready = 0ull;
      const int b0 = F::pair ? me.z / S * 2 : gi0 / CW, b1 = F::pair ? b0 + 1 : gi1 / CW;
      if (slot0 < gn) ensure_ready(me.x, gi0, b0, NG);
      if (slot1 < gn) ensure_ready(me.x, gi1, b1, NG);
    }
    if (gn != S) {  // fewer groups than warps x 2: absent ones weigh 0 and read a present group's x
      if (slot0 >= gn) s00 = s01 = 0.f, gi0 = me.z, q00 = q01 = make_uint4(0u, 0u, 0u, 0u);
      if (slot1 >= gn) s10 = s11 = 0.f, gi1 = me.z, q10 = q11 = make_uint4(0u, 0u, 0u, 0u);
    }
    if (MODE == 11 || MODE == 12) {  // this warp's k-th groups: 2 (z / S) and 2 (z / S) + 1; absent ones read k = 0
      const int k0 = 2 * (me.z / S), ka = slot0 < gn ? k0 : 0, kc = slot1 < gn ? k0 + 1 : 0;
      uint4 b0, b1;
      float xs;
      int2 ps;
      if (MODE == 12 && NG <= S) {
        lean_group_frag(q00, q01, s00, s01, fa0, fa1, fpa, fxa, w0, w1, w0b, w1b, aG, aG8);
        if (kc == 1) lean_group_frag(q10, q11, s10, s11, fb0, fb1, fpb, fxb, w0, w1, w0b, w1b, aG, aG8);
        else lean_group_frag(q10, q11, s10, s11, fa0, fa1, fpa, fxa, w0, w1, w0b, w1b, aG, aG8);
      } else {
        warp_group_frag(wxA + ka * kWarpXsGroupBytes, xl, g, t, b0, b1, xs, ps);
        lean_group_frag(q00, q01, s00, s01, b0, b1, ps, xs, w0, w1, w0b, w1b, aG, aG8);
        warp_group_frag(wxA + kc * kWarpXsGroupBytes, xl, g, t, b0, b1, xs, ps);
        lean_group_frag(q10, q11, s10, s11, b0, b1, ps, xs, w0, w1, w0b, w1b, aG, aG8);
      }
    } else if (MODE == 10) {  // the engine's fp16 unpack and mma on the hi/lo x
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
