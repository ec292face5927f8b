// Shared by the matmul translation units (matmul.cu, matmul_int4_gemv.cu): weight formats, the vector GEMV
// kernel, tensor-core helpers and argument checks. Internal to native/cuda/kernels.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "kernels.cuh"
#include "ptx.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kGemvWarps = 8;
constexpr int kGemvSmemFloats = 8192;  // 32 KB of x per column tile

__device__ __forceinline__ int swz(int j) { return j ^ ((j >> 3) & 7); }

__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

// ---- weight formats -------------------------------------------------------------------------------------------

// 8 nibbles of one 32-bit word -> (q - zero) as exact floats, column order (low nibble of byte 0 first).
// 0x4B0000qq is the float 2^23 + q; magic = 2^23 + zero.
__device__ __forceinline__ void dequant8(uint32_t word, float magic, float* w) {
  uint32_t lo = word & 0x0F0F0F0Fu, hi = (word >> 4) & 0x0F0F0F0Fu;
  w[0] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440u)) - magic;
  w[1] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440u)) - magic;
  w[2] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7441u)) - magic;
  w[3] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7441u)) - magic;
  w[4] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7442u)) - magic;
  w[5] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7442u)) - magic;
  w[6] = __uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7443u)) - magic;
  w[7] = __uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7443u)) - magic;
}

struct Int4Fmt {
  // chunks in flight per row per lane in the GEMV (fewer for many x rows: registers)
  template <int MB> static constexpr int kUnroll = MB == 1 ? 4 : (MB == 2 ? 2 : 1);
  static constexpr int kCols = 32;  // columns per 16-byte chunk
  const uint8_t* q;
  const float* scales;
  const uint8_t* zeros;
  int cols, group, ngroups, gshift;  // gshift: log2(group/32) when a power of two, else -1
  size_t rowBytes;
  __device__ __forceinline__ const void* chunk(int row, int c) const { return q + (size_t)row * rowBytes + (size_t)c * 16; }
  __device__ __forceinline__ int gidx(int c) const { return gshift >= 0 ? (c >> gshift) : (c * 32) / group; }
  __device__ __forceinline__ float elem(int row, int col) const {
    uint8_t b = q[(size_t)row * rowBytes + (col >> 1)];
    int nib = (col & 1) ? (b >> 4) : (b & 15);
    size_t gi = (size_t)row * ngroups + col / group;
    int z = zeros ? zeros[gi] : 8;
    return (float)(nib - z) * scales[gi];
  }
  // acc[mi] += sum_{i<32} w_i * x[mi][i] for this chunk; xs: float4 row of x-row 0 at this tile, stride per x-row.
  template <int MB>
  __device__ __forceinline__ void dot(uint4 v, int row, int c, const float4* xs, int xstride, int j0,
                                      float (&acc)[MB]) const {
    size_t gi = (size_t)row * ngroups + gidx(c);
    float s = __ldg(scales + gi);
    float z = zeros ? (float)__ldg(zeros + gi) : 8.f;
    float magic = 8388608.f + z;
    float w[32];
    dequant8(v.x, magic, w + 0);
    dequant8(v.y, magic, w + 8);
    dequant8(v.z, magic, w + 16);
    dequant8(v.w, magic, w + 24);
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) {
      float p = 0.f;
#pragma unroll
      for (int f = 0; f < 8; ++f) {
        float4 xv = xs[mi * xstride + swz(j0 + f)];
        p = fmaf(w[4 * f], xv.x, p);
        p = fmaf(w[4 * f + 1], xv.y, p);
        p = fmaf(w[4 * f + 2], xv.z, p);
        p = fmaf(w[4 * f + 3], xv.w, p);
      }
      acc[mi] = fmaf(s, p, acc[mi]);
    }
  }
};

struct Bf16Fmt {
  template <int MB> static constexpr int kUnroll = MB <= 4 ? 4 : 2;
  static constexpr int kCols = 8;
  const __nv_bfloat16* w;
  int cols;
  __device__ __forceinline__ const void* chunk(int row, int c) const { return w + (size_t)row * cols + (size_t)c * 8; }
  __device__ __forceinline__ float elem(int row, int col) const { return __bfloat162float(w[(size_t)row * cols + col]); }
  template <int MB>
  __device__ __forceinline__ void dot(uint4 v, int, int, const float4* xs, int xstride, int j0, float (&acc)[MB]) const {
    float f[8];
    uint32_t words[4] = {v.x, v.y, v.z, v.w};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      f[2 * i] = __uint_as_float(words[i] << 16);
      f[2 * i + 1] = __uint_as_float(words[i] & 0xFFFF0000u);
    }
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) {
      float4 a = xs[mi * xstride + swz(j0)], b = xs[mi * xstride + swz(j0 + 1)];
      float p = acc[mi];
      p = fmaf(f[0], a.x, p); p = fmaf(f[1], a.y, p); p = fmaf(f[2], a.z, p); p = fmaf(f[3], a.w, p);
      p = fmaf(f[4], b.x, p); p = fmaf(f[5], b.y, p); p = fmaf(f[6], b.z, p); p = fmaf(f[7], b.w, p);
      acc[mi] = p;
    }
  }
};

struct F32Fmt {
  template <int MB> static constexpr int kUnroll = MB <= 4 ? 4 : 2;
  static constexpr int kCols = 4;
  const float* w;
  int cols;
  __device__ __forceinline__ const void* chunk(int row, int c) const { return w + (size_t)row * cols + (size_t)c * 4; }
  __device__ __forceinline__ float elem(int row, int col) const { return __ldg(w + (size_t)row * cols + col); }
  template <int MB>
  __device__ __forceinline__ void dot(uint4 v, int, int, const float4* xs, int xstride, int j0, float (&acc)[MB]) const {
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) {
      float4 a = xs[mi * xstride + swz(j0)];
      float p = acc[mi];
      p = fmaf(__uint_as_float(v.x), a.x, p); p = fmaf(__uint_as_float(v.y), a.y, p);
      p = fmaf(__uint_as_float(v.z), a.z, p); p = fmaf(__uint_as_float(v.w), a.w, p);
      acc[mi] = p;
    }
  }
};

// ---- vector GEMV (m <= 16) ------------------------------------------------------------------------------------

// Requirements (checked by the launcher): cols % Fmt::kCols == 0 and cols % 4 == 0, weight rows and x 16-byte aligned.
template <class Fmt, int MB, int U, int R>
__global__ void __launch_bounds__(kGemvWarps * 32) gemv_vec(const float* __restrict__ x, Fmt f, float* __restrict__ y,
                                                            int m, int rows, int cols, int kt) {
  extern __shared__ float4 xs4[];
  constexpr int F4 = Fmt::kCols / 4;  // float4s of x per chunk
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = (blockIdx.x * kGemvWarps + warp) * R;
  const int xstride = kt / 4;
  float acc[R][MB];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) acc[r][mi] = 0.f;
  int rr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rr[r] = min(row0 + r, rows - 1);  // clamp: duplicate work, never written

  for (int k0 = 0; k0 < cols; k0 += kt) {
    const int kn = min(kt, cols - k0);
    const int n4 = kn >> 2;
    __syncthreads();
    for (int i = threadIdx.x; i < MB * n4; i += blockDim.x) {
      int mi = i / n4, j = i - mi * n4;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (mi < m) v = __ldg(reinterpret_cast<const float4*>(x + (size_t)mi * cols + k0) + j);
      xs4[mi * xstride + swz(j)] = v;
    }
    __syncthreads();
    const int nch = kn / Fmt::kCols, c0 = k0 / Fmt::kCols;
    for (int c = lane; c < nch; c += 32 * U) {
      uint4 w[U][R];
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (c + 32 * u < nch) w[u][r] = ld_stream(f.chunk(rr[r], c0 + c + 32 * u));
#pragma unroll
      for (int u = 0; u < U; ++u)
#pragma unroll
        for (int r = 0; r < R; ++r)
          if (c + 32 * u < nch) f.template dot<MB>(w[u][r], rr[r], c0 + c + 32 * u, xs4, xstride, (c + 32 * u) * F4, acc[r]);
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) {
      float s = warp_sum(acc[r][mi]);
      if (lane == mi && mi < m && row0 + r < rows) y[(size_t)mi * rows + row0 + r] = s;
    }
  }
}

// ---- tensor cores (mma.sync m16n8k16 bf16, fp32 accumulate) -----------------------------------------------------

__device__ __forceinline__ uint32_t pack_bf16(float a, float b) {
  __nv_bfloat162 h = __floats2bfloat162_rn(a, b);  // .x = a (low half)
  return *reinterpret_cast<uint32_t*>(&h);
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3,
                                         uint32_t b0, uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
}

constexpr int kTcBM = 64, kTcBN = 32, kTcBK = 64, kTcPad = 8;

using detail::aligned16;

inline bool grid_ok(int m, int rows) { return (m + kTcBM - 1) / kTcBM <= 65535 && rows > 0; }

template <class Fmt, int MB>
inline cudaError_t launch_gemv_vec(const float* x, const Fmt& f, float* y, int m, int rows, int cols, cudaStream_t s) {
  constexpr int U = Fmt::template kUnroll<MB>;
  constexpr int R = (MB >= 8 || (MB >= 4 && Fmt::kCols == 32)) ? 1 : 2;  // output rows per warp (registers)
  int kt = kGemvSmemFloats / MB;  // columns per tile, multiple of 32
  kt -= kt % 32;
  int ktc = ((cols + 31) / 32) * 32;
  if (ktc < kt) kt = ktc;
  size_t smem = (size_t)MB * kt * sizeof(float);
  dim3 grid((rows + kGemvWarps * R - 1) / (kGemvWarps * R));
  gemv_vec<Fmt, MB, U, R><<<grid, kGemvWarps * 32, smem, s>>>(x, f, y, m, rows, cols, kt);
  return cudaGetLastError();
}

inline Int4Fmt make_int4_fmt(const Int4Weight& w) {
  Int4Fmt f;
  f.q = w.qweight, f.scales = w.scales, f.zeros = w.zeros, f.cols = w.cols, f.group = w.group;
  f.ngroups = w.cols / w.group, f.rowBytes = (size_t)w.cols / 2, f.gshift = -1;
  if (w.group % 32 == 0) {
    int gc = w.group / 32;
    if ((gc & (gc - 1)) == 0) f.gshift = __builtin_ctz(gc);
  }
  return f;
}

inline bool int4_args_ok(const float* x, const Int4Weight& w, const float* y, int m) {
  return x && y && w.qweight && w.scales && m >= 1 && w.rows >= 1 && w.cols >= 2 && w.group >= 2 && w.group % 2 == 0 &&
         w.cols % w.group == 0 && grid_ok(m, w.rows);
}

// The vector paths (legacy GEMV, decode SIMT / tensor-core GEMV, m > 16 tensor cores) need whole 16-byte chunks of
// one group: cols % 32 == 0, group % 32 == 0, 16-byte aligned weight rows and x.
inline bool int4_vec(const float* x, const Int4Weight& w) {
  return w.cols % 32 == 0 && w.group % 32 == 0 && aligned16(w.qweight) && aligned16(x);
}


}  // namespace
}  // namespace tpserve::cuda
