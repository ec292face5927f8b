// The int8 pieces of check_int8.cu (docs/gpu.md, "An int8 tensor-core GEMV"), shared with check_chain's deep ring:
// the s8 and u8 x s8 mma on a chunk of int4 words, x's three s8 pieces per value with a scale per group of 128 in
// the B-fragment layout, and the code that makes them. The layouts are described in check_int8.cu.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

namespace int8_check {  // named: nvcc's stubs cannot tell kernel templates in two anonymous namespaces apart

constexpr int kGroup = 128, kPieces = 3;
constexpr float kPieceMul = 254.f;

__device__ __forceinline__ void mma_s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.s8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

__device__ __forceinline__ void mma_u8s8(int (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k32.row.col.s32.u8.s8.s32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+r"(c[0]), "+r"(c[1]), "+r"(c[2]), "+r"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

/**
 * One 64-column chunk (this lane's four words w) times x's pieces (b: this lane's B fragment) through the s8 mma,
 * added into d: each byte's nibbles as s8 16 (q - 8). ENG: the engine's nibbles q (the top bit of each byte
 * flipped); otherwise stored as q ^ 8.
 */
template <bool ENG>
__device__ __forceinline__ void s8_chunk_mma(const uint4& w, const uint4& b, int (&d)[4]) {
  constexpr uint32_t f = ENG ? 0x80808080u : 0u;
  const uint32_t ws[4] = {w.x, w.y, w.z, w.w}, bw[4] = {b.x, b.y, b.z, b.w};
#pragma unroll
  for (int s = 0; s < 2; ++s) {
    const uint32_t lo = ws[2 * s], hi = ws[2 * s + 1];
    const uint32_t a[4] = {((lo << 4) & 0xf0f0f0f0u) ^ f, (lo & 0xf0f0f0f0u) ^ f, ((hi << 4) & 0xf0f0f0f0u) ^ f,
                           (hi & 0xf0f0f0f0u) ^ f};
    mma_s8(d, a, bw[2 * s], bw[2 * s + 1]);
  }
}

/**
 * One group (chunks q0, q1 of the engine's words; b0, b1 x's pieces for them) through the u8 x s8 mma, the nibbles
 * as they are (row g: q, row g + 8: 16 q), each chunk on its own accumulator chain; the zero point 8 comes off the
 * int32 sums with the pieces' group sums ps (columns 2t, 2t + 1): r = rows g (r[0], r[1]) and g + 8 (16x: r[2],
 * r[3]) of this lane's two columns, exact.
 */
__device__ __forceinline__ void u8_group_sums(const uint4& q0, const uint4& q1, const uint4& b0, const uint4& b1,
                                              int2 ps, int (&r)[4]) {
  constexpr uint32_t L = 0x0f0f0f0fu, H = 0xf0f0f0f0u;
  int d[4] = {0, 0, 0, 0}, e[4] = {0, 0, 0, 0};
  mma_u8s8(d, {q0.x & L, q0.x & H, q0.y & L, q0.y & H}, b0.x, b0.y);
  mma_u8s8(e, {q1.x & L, q1.x & H, q1.y & L, q1.y & H}, b1.x, b1.y);
  mma_u8s8(d, {q0.z & L, q0.z & H, q0.w & L, q0.w & H}, b0.z, b0.w);
  mma_u8s8(e, {q1.z & L, q1.z & H, q1.w & L, q1.w & H}, b1.z, b1.w);
  r[0] = d[0] + e[0] - 8 * ps.x, r[1] = d[1] + e[1] - 8 * ps.y;
  r[2] = d[2] + e[2] - 128 * ps.x, r[3] = d[3] + e[3] - 128 * ps.y;
}

/** Byte offset of x's piece p at k in the B-fragment layout (one token). ENG: the engine's Int4Tiled layout, whose
 * byte i of word j (lane t) holds column 2t, 2t + 8, 2t + 1, 2t + 9 of the 16-column step j: read as the s8 mma's
 * k = 4t + i, so x's bytes follow the same order. */
template <bool ENG>
__host__ __device__ inline size_t xq_offset(int k, int p) {
  const int kb = k >> 6, r = k & 63, s = r >> 5, h = (r >> 4) & 1, c = r & 15;
  const int t = ENG ? (c & 7) >> 1 : c >> 2, i = ENG ? (c & 1) * 2 + (c >> 3) : c & 3;
  return ((size_t)(kb * kPieces + p) * 4 + t) * 16 + (s * 2 + h) * 4 + i;
}

/**
 * One group of 128 of x, a lane's 4 values (v, at k0 = group * 128 + lane * 4), the whole warp taking part: the
 * group's scale s = max|x| / 127 into *sx (lane 0), the lane's values as 3 pieces at xq_offset<ENG>(k, p) of xq, and
 * when psum is set the group's sum of each piece into psum[0..7] (entries 3-7 zero; the mma's columns, for zero
 * points). xq, sx and psum may be global or shared memory.
 */
template <bool ENG>
__device__ __forceinline__ void quantize_group(float4 v, int k0, int lane, int8_t* xq, float* sx, int* psum) {
  float m = fmaxf(fmaxf(fabsf(v.x), fabsf(v.y)), fmaxf(fabsf(v.z), fabsf(v.w)));
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  const float s = m > 0.f ? m / 127.f : 1.f;
  if (lane == 0) *sx = s;
  const float vals[4] = {v.x, v.y, v.z, v.w};
  int sums[kPieces] = {};
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    float r = vals[i] / s;
#pragma unroll
    for (int p = 0; p < kPieces; ++p) {
      const float q = fminf(fmaxf(rintf(r), -127.f), 127.f);
      xq[xq_offset<ENG>(k0 + i, p)] = (int8_t)q;
      sums[p] += (int)q;
      r = (r - q) * kPieceMul;
    }
  }
  if (!psum) return;
#pragma unroll
  for (int p = 0; p < kPieces; ++p)
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) sums[p] += __shfl_xor_sync(0xffffffffu, sums[p], o);
  if (lane < 8) psum[lane] = lane < kPieces ? sums[lane == 0 ? 0 : lane == 1 ? 1 : 2] : 0;
}

// One warp a group of 128: quantize_group on the group's 128 values.
template <bool ENG>
__global__ void quantize_x(const float* __restrict__ x, int cols, int8_t* __restrict__ xq, float* __restrict__ sx,
                           int* __restrict__ psum = nullptr) {
  const int warp = (blockIdx.x * blockDim.x + threadIdx.x) >> 5, lane = threadIdx.x & 31;
  if (warp >= cols / kGroup) return;
  const int k0 = warp * kGroup + lane * 4;
  quantize_group<ENG>(*reinterpret_cast<const float4*>(x + k0), k0, lane, xq, sx + warp,
                      psum ? psum + warp * 8 : nullptr);
}

}  // namespace int8_check
