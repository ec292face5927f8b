// chain_kernel_lean's pieces (chain_lean.cuh, docs/gpu-runs.md runs 118-123): how its matrices wait for each other
// (LeanFlow), the shared-memory primitives on 32-bit addresses, the group multiplies, x's pieces made in the block
// or by each warp, and the per-matrix producer.
#pragma once
#include "chain_tma.cuh"

namespace {

/**
 * How chain_kernel_lean's matrices wait for each other (run 122). FLOW 0: grid barriers (or none, Barrier = false),
 * warp w multiplying a stage's groups w and w + CW. Dataflow (wait): no grid barrier; group gi of matrix j waits
 * for its input chunk, tiles [chunk_lo(gi), chunk_lo(gi + 1)) of matrix j - 1, counted in Bar::chunks, and only
 * the first time a warp meets it in that matrix. FLOW 1: dataflow, the counts released by a signaller warp, one
 * fence for every tile the reducer stored since its last (a fence in the reducer after each tile made it the
 * bottleneck, run 118); 2: the same with warp w on groups 2w and 2w + 1 (pair), so that the warps on the early
 * chunks run ahead while the others wait for the last ones; 3: grid barriers with that pairing (its own cost); 4:
 * dataflow, paired, the reducer releasing each tile itself; 5: as 2, polling with relaxed loads and one acquire
 * fence once the count is there (an acquire load may drop the SM's L1 lines, x's among them); 6: as 5, but every
 * group waits for the whole previous matrix (kChunkStride - 1 counts its tiles): a barrier through the signaller;
 * 7: as 5, but one waiter warp a block polls the counts (a lane a chunk) and publishes them in shared memory, where
 * the consumer warps wait (in 5 and 6 every consumer warp of every block polls global memory); 8: as 7 for the
 * whole previous matrix.
 */
template <int FLOW>
struct LeanFlow {
  static constexpr bool wait = FLOW == 1 || FLOW == 2 || FLOW >= 4;
  static constexpr bool pair = FLOW >= 2;
  static constexpr bool signaller = FLOW == 1 || FLOW == 2 || FLOW >= 5;
  static constexpr bool relaxedPoll = FLOW >= 5;  // spin on relaxed loads, then one acquire fence
  static constexpr bool wholeMatrix = FLOW == 6 || FLOW == 8;  // wait for all of the previous matrix's tiles
  static constexpr bool waiter = FLOW >= 7;  // one warp a block polls, consumers read its flags in shared memory
};
template <int CW, int FLOW>
constexpr int lean_threads() {
  return (CW + 2 + (LeanFlow<FLOW>::signaller ? 1 : 0) + (LeanFlow<FLOW>::waiter ? 1 : 0)) * 32;
}
constexpr int kWaitRing = 4;  // matrices a waiter's flags cover (flag == j + 1: matrix j's chunk is in)
constexpr int kSigQ = 256;  // the signaller's queue of stored tiles

/** Tile `tile` of matrix j is stored: one more for its chunk of matrix j + 1's input. */
__device__ __forceinline__ void flow_signal(const Mat* mats, int nMats, unsigned* chunks, int j, int tile,
                                            bool release) {
  if (j + 1 >= nMats) return;
  const int T = (mats[j].rows + 15) / 16, G = mats[j + 1].cols / kGroup;
  unsigned* c = chunks + (size_t)(j + 1) * kChunkStride + chunk_of(tile, T, G);
  unsigned* all = chunks + (size_t)(j + 1) * kChunkStride + kChunkStride - 1;
  if (release) asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory");
  else asm volatile("red.relaxed.gpu.global.add.u32 [%0], 1;" ::"l"(c) : "memory");
  if (!release) asm volatile("red.relaxed.gpu.global.add.u32 [%0], 1;" ::"l"(all) : "memory");
}

/** Spins on relaxed loads until *p >= target, then one acquire fence; gives up after 1 s as wait_at_least. */
__device__ __forceinline__ void wait_relaxed(const unsigned* p, unsigned target, int* timedOut) {
  const auto ld = [p] {
    unsigned v;
    asm volatile("ld.relaxed.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
    return v;
  };
  const long long t0 = global_ns();
  for (int k = 0; ld() < target; k++)
    if ((k & 1023) == 1023 && global_ns() - t0 > 1000000000LL) {
      atomicExch(timedOut, 1);
      break;
    }
  asm volatile("fence.acq_rel.gpu;" ::: "memory");
}

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

/** lean_group's multiply on fragments already in hand. */
__device__ __forceinline__ void lean_group_frag(const uint4& q0, const uint4& q1, float s0, float s1, const uint4& b0,
                                                const uint4& b1, int2 ps, float xs, float w0, float w1, float w0b,
                                                float w1b, float& aG, float& aG8) {
  int r[4];
  int8_check::u8_group_sums(q0, q1, b0, b1, ps, r);
  aG = fmaf(s0 * xs, fmaf((float)r[1], w1, (float)r[0] * w0), aG);
  aG8 = fmaf(s1 * xs, fmaf((float)r[3], w1b, (float)r[2] * w0b), aG8);
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
  lean_group_frag(q0, q1, s0, s1, b0, b1, ps, xs, w0, w1, w0b, w1b, aG, aG8);
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

// MODE 11 and 12 (run 123): each consumer warp makes the pieces of only its own groups (w, w + CW, ...: the same
// in every tile of a matrix) into its own region of shared memory, with no block barrier: a lane a 32-bit word of
// each piece (the four columns 2t, 2t + 8, 2t + 1, 2t + 9 of a 16-column step that one B-fragment word holds), the
// group's largest |x| and the pieces' sums by redux.sync, a reciprocal instead of a division, rounding by the
// 1.5 * 2^23 trick (whose low byte is the piece). MODE 12 also keeps the fragments in registers when the warp has
// at most two groups (every 4096-column input), so the multiply loads no x at all there.
constexpr int kWarpXsGroupBytes = 384 + 16;  // the pieces in fragment order, then scale and 3 sums
/** One warp's region: its groups of the widest input (down's: 6 at 16 consumer warps). */
template <int CW>
__host__ __device__ constexpr int warp_xs_region_bytes() {
  return (kTmaXsGroups + CW - 1) / CW * kWarpXsGroupBytes;
}
template <int CW>
constexpr int warp_xs_bytes() {
  return CW * warp_xs_region_bytes<CW>();
}

/** Group gi of x (fp32) as three s8 pieces in fragment order at region (shared, 32-bit address), its scale and the
 * pieces' sums after them; the whole warp. */
__device__ __forceinline__ void warp_quantize_group(const float* __restrict__ x, int gi, int lane, uint32_t region) {
  constexpr float kMagic = 12582912.f;  // 1.5 * 2^23: x + kMagic rounds x to an integer held in the low bits
  const int kb = lane >> 4, sh = (lane >> 2) & 3, t = lane & 3;  // 64-column block, 16-column step (s, h), word
  const float* p = x + gi * int8_check::kGroup + kb * 64 + sh * 16 + 2 * t;
  const float2 a = tc::ld_prev(reinterpret_cast<const float2*>(p)), b = tc::ld_prev(reinterpret_cast<const float2*>(p + 8));
  const float v[4] = {a.x, b.x, a.y, b.y};  // bytes 0-3 of the word: columns 2t, 2t + 8, 2t + 1, 2t + 9
  const float m = fmaxf(fmaxf(fabsf(v[0]), fabsf(v[1])), fmaxf(fabsf(v[2]), fabsf(v[3])));
  const float mx = __uint_as_float(__reduce_max_sync(0xffffffffu, __float_as_uint(m)));
  const float sc = mx > 0.f ? mx * (1.f / 127.f) : 1.f, inv = mx > 0.f ? __frcp_rn(sc) : 1.f;
  uint32_t bits[3][4];
  float sum[3] = {0.f, 0.f, 0.f};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float r = v[i] * inv;  // |r| <= 127 (1 + 2^-23): rounds to at most 127
#pragma unroll
    for (int q = 0; q < 3; ++q) {
      const float f = r + kMagic, qf = f - kMagic;
      bits[q][i] = __float_as_uint(f);
      sum[q] += qf;
      r = (r - qf) * int8_check::kPieceMul;
    }
  }
#pragma unroll
  for (int q = 0; q < 3; ++q) {
    const uint32_t w = __byte_perm(__byte_perm(bits[q][0], bits[q][1], 0x0040), __byte_perm(bits[q][2], bits[q][3], 0x0040),
                                   0x5410);
    asm volatile("st.shared.u32 [%0], %1;" ::"r"(region + (uint32_t)(((kb * 3 + q) * 4 + t) * 16 + sh * 4)), "r"(w)
                 : "memory");
  }
  const int s0 = __reduce_add_sync(0xffffffffu, (int)sum[0]), s1 = __reduce_add_sync(0xffffffffu, (int)sum[1]),
            s2 = __reduce_add_sync(0xffffffffu, (int)sum[2]);
  if (lane == 0)
    asm volatile("st.shared.v4.b32 [%0], {%1, %2, %3, %4};" ::"r"(region + 384), "r"(__float_as_uint(sc)), "r"(s0),
                 "r"(s1), "r"(s2)
                 : "memory");
}

/** This lane's fragment of a group made by warp_quantize_group: pieces b0, b1 (lanes g < 3), scale, sums of its
 * columns 2t, 2t + 1. */
__device__ __forceinline__ void warp_group_frag(uint32_t region, bool xl, int g, int t, uint4& b0, uint4& b1,
                                                float& xs, int2& ps) {
  b0 = b1 = make_uint4(0u, 0u, 0u, 0u);
  if (xl) b0 = lean_lds128(region + (uint32_t)(g * 4 + t) * 16), b1 = lean_lds128(region + 192 + (uint32_t)(g * 4 + t) * 16);
  const uint4 e = lean_lds128(region + 384);
  xs = __uint_as_float(e.x);
  ps = t == 0 ? make_int2((int)e.y, (int)e.z) : t == 1 ? make_int2((int)e.w, 0) : make_int2(0, 0);
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

}  // namespace
