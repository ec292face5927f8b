// Internal to native/cuda/kernels: the device pieces shared by the tiled int4 GEMV (int4_tiled.cu) and GEMM
// (int4_gemm.cu), and the GEMM launcher the dispatch in int4_tiled.cu calls. The layout is described in int4_tiled.cu.
#pragma once
#include <cuda_fp16.h>

#include "kernels.cuh"
#include "ptx.cuh"
#include "xprep.cuh"

namespace tpserve::cuda {
namespace {

__device__ __forceinline__ uint32_t nib_lo(uint32_t w) {  // (w & 0x000f000f) | 0x64006400: fp16x2 1024 + q
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w), "n"(0x000f000f), "n"(0x64006400));
  return r;
}
__device__ __forceinline__ uint32_t nib_hi(uint32_t w) {  // (w & 0x00f000f0) | 0x64006400: fp16x2 1024 + 16 q
  uint32_t r;
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w), "n"(0x00f000f0), "n"(0x64006400));
  return r;
}
__device__ __forceinline__ uint32_t h2sub(uint32_t a, uint32_t b) {
  uint32_t r;
  asm("sub.rn.f16x2 %0, %1, %2;" : "=r"(r) : "r"(a), "r"(b));
  return r;
}
__device__ __forceinline__ uint32_t h2fma(uint32_t a, uint32_t b, uint32_t c) {
  uint32_t r;
  asm("fma.rn.f16x2 %0, %1, %2, %3;" : "=r"(r) : "r"(a), "r"(b), "r"(c));
  return r;
}

// zlo = fp16x2 (1024 + zero of row g), zhi = fp16x2 -(64 + zero of row g + 8): a = exact (q - zero) pairs.
__device__ __forceinline__ void dequant_word(uint32_t w, uint32_t zlo, uint32_t zhi, uint32_t (&a)[4]) {
  const uint32_t w2 = w >> 8;
  a[0] = h2sub(nib_lo(w), zlo);                 // row g,     columns 2t, 2t+1
  a[1] = h2fma(nib_hi(w), 0x2C002C00u, zhi);    // row g + 8, columns 2t, 2t+1   (0x2C00 = 1/16)
  a[2] = h2sub(nib_lo(w2), zlo);                // row g,     columns 2t+8, 2t+9
  a[3] = h2fma(nib_hi(w2), 0x2C002C00u, zhi);   // row g + 8, columns 2t+8, 2t+9
}

__device__ __forceinline__ uint32_t zero_lo(uint32_t z) { return (0x6400u + z) * 0x00010001u; }
__device__ __forceinline__ uint32_t zero_hi(uint32_t z) { return (0xD400u + 16u * z) * 0x00010001u; }

__device__ __forceinline__ void mma_f16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}



// One token (x prepared as hi/lo columns): one 64-column chunk kb of a tile (q: this lane's 16 bytes of it) times x,
// added into d (C fragment: rows g and g + 8, columns 2t, 2t + 1; lane t = 0 holds the hi and lo columns). Lanes
// g < 2 read x's two columns.
__device__ __forceinline__ void one_token_chunk(const uint4& q, const __half* __restrict__ xp, int kb, int g, int t,
                                                uint32_t zlo, uint32_t zhi, float (&d)[4]) {
  uint4 b0 = make_uint4(0u, 0u, 0u, 0u), b1 = b0;
  if (g < 2) {
    const uint4* bp = reinterpret_cast<const uint4*>(xp + ((size_t)(kb * 2 + g) * 4 + t) * 16);
    b0 = ld_prev(bp), b1 = ld_prev(bp + 1);
  }
  const uint32_t words[4] = {q.x, q.y, q.z, q.w};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    uint32_t a[4];
    dequant_word(words[j], zlo, zhi, a);
    const uint4& b = j < 2 ? b0 : b1;
    if (j & 1) mma_f16(d, a, b.z, b.w);
    else mma_f16(d, a, b.x, b.y);
  }
}

// 1 / rms of one token from a folded norm's partial sums of squares (parts of them, one warp, every lane gets the
// result). Each lane's first 8 loads go out together, unguarded (index clamped: a load under a branch waits for the
// one before it); absent parts add 0, which keeps the bits of the lane's sum in order.
__device__ __forceinline__ float folded_rnorm(const float* __restrict__ ssq, int parts, int lane, int normCols,
                                             float eps) {
  float v[8];
#pragma unroll
  for (int j = 0; j < 8; j++) {
    const int k = lane + 32 * j;
    const float x = ld_prev(ssq + min(k, parts - 1));
    v[j] = k < parts ? x : 0.f;
  }
  float ss = 0.f;
#pragma unroll
  for (int j = 0; j < 8; j++) ss += v[j];
  for (int k = lane + 256; k < parts; k += 32) ss += ld_prev(ssq + k);
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
  return __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)normCols) + eps));
}

// The fused epilogues on one pair of packed rows (r and r + 8 of tile rt, int4_tile_row_map) for token `tok` of
// `m`: a and b are the two rows' results. pair_inputs() reads what the epilogue needs besides a and b: the KV slot
// and position the host copied for the step, and the RoPE table. None of it comes from the previous kernel, so a
// kernel may read it before pdl_wait() (int4t_pair_finish does).
struct PairInputs {
  int slot;
  float c, sn;
};

__device__ __forceinline__ PairInputs pair_inputs(const Int4Epilogue& ep, int rt, int r, int tok) {
  PairInputs in{-1, 0.f, 0.f};
  if (ep.kind == Int4Epilogue::kSiluPairs) return in;
  const int half = ep.headDim / 2, tilesPerHead = half / 8;
  in.slot = ep.slots[tok];
  if (rt >= (ep.heads + ep.kvHeads) * tilesPerHead) return in;  // v rows: no RoPE
  const int h = rt / tilesPerHead, ii = (rt - h * tilesPerHead) * 8 + r;
  const size_t cs = (size_t)ep.positions[tok] * half + ii;
  in.c = __ldg(ep.ropeCos + cs), in.sn = __ldg(ep.ropeSin + cs);
  return in;
}

__device__ __forceinline__ void pair_epilogue(const Int4Epilogue& ep, int rows, int rt, int r, int tok, int m, float a,
                                              float b, float* __restrict__ y, const PairInputs& in) {
  if (ep.kind == Int4Epilogue::kSiluPairs) {
    const int inter = rows / 2, j = rt * 8 + r;
    const float v = __fdiv_rn(a, 1.0f + __expf(-a)) * b;  // as silu_mul: exact-rounded division
    y[(size_t)tok * inter + j] = v;
    if (ep.xpOut) xprep_store1(ep.xpOut, m, tok, j, v);
    return;
  }
  const int D = ep.headDim, half = D / 2, tilesPerHead = half / 8;
  const int qd = ep.heads * D, kvd = ep.kvHeads * D, pairTiles = (ep.heads + ep.kvHeads) * tilesPerHead;
  if (rt >= pairTiles) {  // v rows, in order
    if (in.slot < 0) return;
    const int vr = (rt - pairTiles) * 16 + r;
    st_kv(ep.vCache + (size_t)in.slot * kvd + vr, a);
    st_kv(ep.vCache + (size_t)in.slot * kvd + vr + 8, b);
    return;
  }
  const int h = rt / tilesPerHead, ii = (rt - h * tilesPerHead) * 8 + r;
  // Same rounding as the CPU: each product rounded, no FMA contraction.
  const float ra = __fsub_rn(__fmul_rn(a, in.c), __fmul_rn(b, in.sn));
  const float rb = __fadd_rn(__fmul_rn(b, in.c), __fmul_rn(a, in.sn));
  if (h < ep.heads) {
    float* dst = ep.q + (size_t)tok * qd + h * D;
    dst[ii] = ra, dst[ii + half] = rb;
  } else if (in.slot >= 0) {
    kv_t* dst = ep.kCache + (size_t)in.slot * kvd + (h - ep.heads) * D;
    st_kv(dst + ii, ra), st_kv(dst + ii + half, rb);
  }
}

__device__ __forceinline__ void pair_epilogue(const Int4Epilogue& ep, int rows, int rt, int r, int tok, int m, float a,
                                              float b, float* __restrict__ y) {
  pair_epilogue(ep, rows, rt, r, tok, m, a, b, y, pair_inputs(ep, rt, r, tok));
}

}  // namespace

namespace detail {

/** GEMM tiling (int4_gemm.cu): a block takes kGemmWarps 16-row tiles and kGemmTok tokens (32 for m <= 32). */
constexpr int kGemmWarps = 8, kGemmTok = 64;
int gemm_tokens_per_block(int m);

/** How a GEMM runs: k split over kSplit blocks, rt 16-row tiles a warp (1 or 2); tokens a block follow from m. */
struct GemmPlan {
  int kSplit, rt;
};

/** The plan for m tokens of a rows x cols weight with wsFloats of split-k workspace (int4_gemm.cu). */
GemmPlan gemm_plan(int rows, int cols, int m, bool zeros, size_t wsFloats);

/**
 * y = x W^T (+ residual) or the epilogue, for m tokens already prepared in xp (xprep_halves(m, cols)), as planned
 * (kSplit > 1: partial sums in ws, kSplit x m x rows rounded up to 16 floats, then a reduce kernel).
 */
cudaError_t int4t_gemm_launch(const __half* xp, const Int4Tiled& w, float* y, const float* residual, int m,
                              const Int4Epilogue& ep, const GemmPlan& plan, float* ws, cudaStream_t stream);

/**
 * Whether the decode GEMV takes the split path (int4_tiled_split.cu): one token, a pair epilogue, splitParts set,
 * at least minGroups groups a row (16 in serving: 2 a warp; fewer only to check small models).
 */
bool gemv_split_ok(const Int4Tiled& w, int m, const Int4Epilogue& ep, int minGroups);

/** The split GEMV into ep.splitParts, then its pair epilogue (unless ep.splitDeferFinish). */
cudaError_t gemv_split(const __half* xp, const Int4Tiled& w, float* y, const Int4Epilogue& ep, cudaStream_t stream);

/** Whether a decode GEMV can take int4t_gemv_one (int4_tiled_split.cu): one token, 4, 8 or 16 warps a tile. */
bool gemv_one_ok(const Int4Tiled& w, int m, const Int4Epilogue& ep, int ks);

/** int4t_gemv's result for one token with ks (4, 8 or 16) warps a tile, in one kernel (no pair finish). */
cudaError_t gemv_one(const __half* xp, const Int4Tiled& w, float* y, const float* residual, const Int4Epilogue& ep,
                     int ks, cudaStream_t stream);

/** Blocks an SM of the one-token kernel with the exchange (Int4Epilogue::comm) for weights of this group size, with
 * or without zero points, and ks warps a tile; 0 on error. */
int gemv_one_comm_blocks_per_sm(int group, bool zeros, int ks);

/** The warps a tile the decode GEMV takes for m tokens of this weight (the rule and its overrides). */
int gemv_ks(const Int4Tiled& w, int m);

}  // namespace detail
}  // namespace tpserve::cuda
