// Matrix products of tpserve's GPU backend: y (m, rows) = x (m, cols) W^T, x and y fp32, W int4 (group-wise), bf16
// or fp32 (layouts in kernels.cuh / native/index.ts).
//
// Paths, chosen per call:
//  - int4 decode (m <= 16, vector shapes): variants in matmul_int4_gemv.cu (matmul_variants.cuh (int4_gemv_simt: fp32, m <= 4, no smem
//    staging; int4_gemv_tc / int4_gemv_tc_pipe: swap-AB mma.sync with the weights as A, bf16 x). Default: m = 1 the
//    legacy GEMV below (variant 1, fp32), m >= 2 tensor cores (variant 10); TPSERVE_INT4_VARIANT overrides.
//  - GEMV (m <= 16, "vector" shapes: 16-byte aligned rows): memory-bound. A block of 8 warps owns 16 output rows
//    (2 per warp); x (all m rows, a column tile of it) is staged in shared memory (XOR-swizzled so that lanes reading
//    consecutive 16-byte weight chunks hit distinct banks); each lane streams 16-byte weight chunks of its 2 rows
//    (coalesced along cols, ld.global.nc.L1::no_allocate, U chunks per row in flight), dequantizes them in registers
//    once and reuses each value for all m rows. int4: a chunk is 32 columns of one group, so the zero is subtracted
//    exactly in fp32 (magic-number conversion) and the scale multiplies the chunk's partial dot product once.
//    Warp-shuffle reduction at the end; lane i writes y for x-row i.
//  - int4 with 17..128 rows where int4_chunked() says so: 16-row chunks of the decode GEMV (measured faster).
//  - Tensor cores (m > 16, int4 and bf16 with cols % 64 == 0 and aligned rows): mma.sync m16n8k16, bf16 operands
//    (x rounded to bf16, int4 dequantized to fp32 then rounded to bf16), fp32 accumulate. Tolerance ~1e-2 relative.
//  - SIMT tiled (m > 16 otherwise, and f32 always): 64x64 tile, 4x4 per thread, fp32 throughout. Any shape.
//  - Generic GEMV (m <= 16, shapes not fit for the vector path): a warp per row, scalar loads. Any shape.
#include <algorithm>

#include "matmul_common.cuh"
#include "matmul_variants.cuh"

namespace tpserve::cuda {
namespace {

// ---- generic GEMV (any shape, m <= 16) ------------------------------------------------------------------------

template <class Fmt>
__global__ void __launch_bounds__(256) gemv_generic(const float* __restrict__ x, Fmt f, float* __restrict__ y, int m,
                                                    int rows, int cols) {
  const int row = blockIdx.x * 8 + (threadIdx.x >> 5), lane = threadIdx.x & 31;
  if (row >= rows) return;
  float acc[16];
#pragma unroll
  for (int mi = 0; mi < 16; ++mi) acc[mi] = 0.f;
  for (int c = lane; c < cols; c += 32) {
    float w = f.elem(row, c);
#pragma unroll
    for (int mi = 0; mi < 16; ++mi)
      if (mi < m) acc[mi] = fmaf(w, __ldg(x + (size_t)mi * cols + c), acc[mi]);
  }
#pragma unroll
  for (int mi = 0; mi < 16; ++mi) {
    float s = warp_sum(acc[mi]);
    if (lane == 0 && mi < m) y[(size_t)mi * rows + row] = s;
  }
}

// ---- SIMT tiled (any shape, any m) ----------------------------------------------------------------------------

template <class Fmt>
__global__ void __launch_bounds__(256) tiled_simt(const float* __restrict__ x, Fmt f, float* __restrict__ y, int m,
                                                  int rows, int cols) {
  constexpr int BM = 64, BN = 64, BK = 16;
  __shared__ float As[BK][BM + 4];
  __shared__ float Bs[BK][BN + 4];
  const int tid = threadIdx.x, tx = tid & 15, ty = tid >> 4;
  const int m0 = blockIdx.y * BM, n0 = blockIdx.x * BN;
  float acc[4][4] = {};
  for (int k0 = 0; k0 < cols; k0 += BK) {
#pragma unroll
    for (int i = 0; i < 4; ++i) {
      int idx = tid + 256 * i, r = idx >> 4, kk = idx & 15;
      int gm = m0 + r, gn = n0 + r, gk = k0 + kk;
      As[kk][r] = (gm < m && gk < cols) ? __ldg(x + (size_t)gm * cols + gk) : 0.f;
      Bs[kk][r] = (gn < rows && gk < cols) ? f.elem(gn, gk) : 0.f;
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < BK; ++kk) {
      float a[4], b[4];
#pragma unroll
      for (int i = 0; i < 4; ++i) a[i] = As[kk][ty * 4 + i];
#pragma unroll
      for (int j = 0; j < 4; ++j) b[j] = Bs[kk][tx * 4 + j];
#pragma unroll
      for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    int gm = m0 + ty * 4 + i;
    if (gm >= m) continue;
#pragma unroll
    for (int j = 0; j < 4; ++j) {
      int gn = n0 + tx * 4 + j;
      if (gn < rows) y[(size_t)gm * rows + gn] = acc[i][j];
    }
  }
}


// Block tile BM=64 (x rows) x BN=32 (weight rows) x BK=64, 4 warps as 2x2, warp tile 32x16 (2 m16 x 2 n8).
// Requirements: cols % 64 == 0, 16-byte aligned weight rows and x; int4: group % 32 == 0.

template <bool kInt4>
__global__ void __launch_bounds__(128) tc_matmul(const float* __restrict__ x, Int4Fmt qi, Bf16Fmt qb,
                                                 float* __restrict__ y, int m, int rows, int cols) {
  __shared__ __align__(16) __nv_bfloat16 As[kTcBM][kTcBK + kTcPad];
  __shared__ __align__(16) __nv_bfloat16 Bs[kTcBN][kTcBK + kTcPad];
  const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
  const int g = lane >> 2, t = lane & 3;
  const int wm = (warp >> 1) * 32, wn = (warp & 1) * 16;
  const int m0 = blockIdx.y * kTcBM, n0 = blockIdx.x * kTcBN;
  float acc[2][2][4] = {};

  for (int k0 = 0; k0 < cols; k0 += kTcBK) {
    // A: 64 x 64 fp32 -> bf16, 8 float4 per thread.
#pragma unroll
    for (int i = 0; i < 8; ++i) {
      int idx = tid + 128 * i, r = idx >> 4, c4 = idx & 15;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (m0 + r < m) v = __ldg(reinterpret_cast<const float4*>(x + (size_t)(m0 + r) * cols + k0) + c4);
      uint2 p = make_uint2(pack_bf16(v.x, v.y), pack_bf16(v.z, v.w));
      *reinterpret_cast<uint2*>(&As[r][c4 * 4]) = p;
    }
    // B: 32 rows x 64 cols.
    if constexpr (kInt4) {
      if (tid < 64) {
        int r = tid >> 1, h = tid & 1, gr = min(n0 + r, rows - 1);
        int c = (k0 >> 5) + h;  // 32-column chunk index
        uint4 v = ld_stream(qi.chunk(gr, c));
        size_t gi = (size_t)gr * qi.ngroups + qi.gidx(c);
        float s = __ldg(qi.scales + gi);
        float z = qi.zeros ? (float)__ldg(qi.zeros + gi) : 8.f;
        float magic = 8388608.f + z;
        uint32_t words[4] = {v.x, v.y, v.z, v.w};
        uint32_t out[16];
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) {
          uint32_t lo = words[wi] & 0x0F0F0F0Fu, hi = (words[wi] >> 4) & 0x0F0F0F0Fu;
#pragma unroll
          for (int b = 0; b < 4; ++b) {
            float e = (__uint_as_float(__byte_perm(lo, 0x4B000000u, 0x7440u | b)) - magic) * s;
            float o = (__uint_as_float(__byte_perm(hi, 0x4B000000u, 0x7440u | b)) - magic) * s;
            out[wi * 4 + b] = pack_bf16(e, o);
          }
        }
        uint4* dst = reinterpret_cast<uint4*>(&Bs[r][h * 32]);
#pragma unroll
        for (int i = 0; i < 4; ++i) dst[i] = make_uint4(out[4 * i], out[4 * i + 1], out[4 * i + 2], out[4 * i + 3]);
      }
    } else {
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        int idx = tid + 128 * i, r = idx >> 3, c8 = idx & 7, gr = min(n0 + r, rows - 1);
        uint4 v = ld_stream(qb.chunk(gr, (k0 >> 3) + c8));
        *reinterpret_cast<uint4*>(&Bs[r][c8 * 8]) = v;
      }
    }
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kTcBK; kk += 16) {
      uint32_t a[2][4], b[2][2];
#pragma unroll
      for (int i = 0; i < 2; ++i) {
        int r = wm + i * 16 + g;
        a[i][0] = *reinterpret_cast<const uint32_t*>(&As[r][kk + 2 * t]);
        a[i][1] = *reinterpret_cast<const uint32_t*>(&As[r + 8][kk + 2 * t]);
        a[i][2] = *reinterpret_cast<const uint32_t*>(&As[r][kk + 2 * t + 8]);
        a[i][3] = *reinterpret_cast<const uint32_t*>(&As[r + 8][kk + 2 * t + 8]);
      }
#pragma unroll
      for (int j = 0; j < 2; ++j) {
        int n = wn + j * 8 + g;
        b[j][0] = *reinterpret_cast<const uint32_t*>(&Bs[n][kk + 2 * t]);
        b[j][1] = *reinterpret_cast<const uint32_t*>(&Bs[n][kk + 2 * t + 8]);
      }
#pragma unroll
      for (int i = 0; i < 2; ++i)
#pragma unroll
        for (int j = 0; j < 2; ++j) mma_bf16(acc[i][j], a[i][0], a[i][1], a[i][2], a[i][3], b[j][0], b[j][1]);
    }
    __syncthreads();
  }
#pragma unroll
  for (int i = 0; i < 2; ++i)
#pragma unroll
    for (int j = 0; j < 2; ++j)
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        int gm = m0 + wm + i * 16 + g + h * 8;
        int gn = n0 + wn + j * 8 + 2 * t;
        if (gm >= m) continue;
        if (gn < rows) y[(size_t)gm * rows + gn] = acc[i][j][2 * h];
        if (gn + 1 < rows) y[(size_t)gm * rows + gn + 1] = acc[i][j][2 * h + 1];
      }
}

template <class Fmt>
cudaError_t dispatch(const float* x, const Fmt& f, float* y, int m, int rows, int cols, bool vec, cudaStream_t s) {
  if (m <= 16 && vec) {
    if (m == 1) return launch_gemv_vec<Fmt, 1>(x, f, y, m, rows, cols, s);
    if (m == 2) return launch_gemv_vec<Fmt, 2>(x, f, y, m, rows, cols, s);
    if (m <= 4) return launch_gemv_vec<Fmt, 4>(x, f, y, m, rows, cols, s);
    if (m <= 8) return launch_gemv_vec<Fmt, 8>(x, f, y, m, rows, cols, s);
    return launch_gemv_vec<Fmt, 16>(x, f, y, m, rows, cols, s);
  }
  if (m <= 16) {
    gemv_generic<Fmt><<<(rows + 7) / 8, 256, 0, s>>>(x, f, y, m, rows, cols);
    return cudaGetLastError();
  }
  dim3 grid((rows + 63) / 64, (m + 63) / 64);
  tiled_simt<Fmt><<<grid, 256, 0, s>>>(x, f, y, m, rows, cols);
  return cudaGetLastError();
}

}  // namespace

bool int4_chunked(int m, int rows, int cols) {
  return m <= 32 || (m <= 64 && rows <= 2 * cols) || (m <= 128 && 2 * rows <= cols);
}

cudaError_t int4_matmul(const float* x, const Int4Weight& w, float* y, int m, cudaStream_t stream) {
  if (!int4_args_ok(x, w, y, m)) return cudaErrorInvalidValue;
  Int4Fmt f = make_int4_fmt(w);
  bool vec = int4_vec(x, w);
  // 16-row GEMV chunks beat the tile kernel for small m (H200: 4096x11008 at m = 32 in 2 x 42.6 us against 256 us).
  if (m > 16 && vec && int4_chunked(m, w.rows, w.cols)) {
    for (int i = 0; i < m; i += 16) {
      const cudaError_t e =
          int4_decode_gemv(x + (size_t)i * w.cols, w, y + (size_t)i * w.rows, std::min(16, m - i), false, stream);
      if (e != cudaSuccess) return e;
    }
    return cudaSuccess;
  }
  if (m > 16 && vec && w.cols % 64 == 0) {
    dim3 grid((w.rows + kTcBN - 1) / kTcBN, (m + kTcBM - 1) / kTcBM);
    tc_matmul<true><<<grid, 128, 0, stream>>>(x, f, Bf16Fmt{}, y, m, w.rows, w.cols);
    return cudaGetLastError();
  }
  if (m <= 16 && vec) return int4_decode_gemv(x, w, y, m, true, stream);
  return dispatch(x, f, y, m, w.rows, w.cols, vec, stream);
}

cudaError_t bf16_matmul(const float* x, const __nv_bfloat16* w, int rows, int cols, float* y, int m,
                        cudaStream_t stream) {
  if (!x || !w || !y || m < 1 || rows < 1 || cols < 1 || !grid_ok(m, rows)) return cudaErrorInvalidValue;
  Bf16Fmt f{w, cols};
  bool vec = cols % 8 == 0 && aligned16(w) && aligned16(x);
  if (m > 16 && vec && cols % 64 == 0) {
    dim3 grid((rows + kTcBN - 1) / kTcBN, (m + kTcBM - 1) / kTcBM);
    tc_matmul<false><<<grid, 128, 0, stream>>>(x, Int4Fmt{}, f, y, m, rows, cols);
    return cudaGetLastError();
  }
  return dispatch(x, f, y, m, rows, cols, vec, stream);
}

cudaError_t f32_matmul(const float* x, const float* w, int rows, int cols, float* y, int m, cudaStream_t stream) {
  if (!x || !w || !y || m < 1 || rows < 1 || cols < 1 || !grid_ok(m, rows)) return cudaErrorInvalidValue;
  F32Fmt f{w, cols};
  bool vec = cols % 4 == 0 && aligned16(w) && aligned16(x);
  return dispatch(x, f, y, m, rows, cols, vec, stream);
}

}  // namespace tpserve::cuda
