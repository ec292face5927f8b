// The tiled int4 GEMM (more than 16 tokens; dispatch in int4_tiled.cu, layout described there).
#include <cuda_fp16.h>

#include "int4_tiled_common.cuh"
#include "pdl.cuh"

namespace tpserve::cuda {
namespace {

using detail::kGemmTok;
using detail::kGemmWarps;

// ---- GEMM (m > 16) -----------------------------------------------------------------------------------------------
// Block: 8 warps x one 16-row tile each (128 rows) and 64 tokens; k in 64-column chunks through a 3-stage cp.async
// ring in shared memory holding the chunk's weights (8 x 512 B), scales and zero points, and the 64 tokens' x
// (prepared once for all m tokens by xprep: one fp16 column per token, 8 KB per chunk and token block). Each warp
// unpacks its A fragments once per chunk and runs 8 n-tiles x 4 k-steps of mma; the group scale multiplies each
// chunk's fp32 result. Weights are read once per 64 tokens.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

constexpr int kGemmStages = 3;
constexpr int kGemmA = kGemmWarps * 512, kGemmS = kGemmWarps * 64, kGemmZ = kGemmWarps * 16, kGemmB = kGemmTok * 128;
constexpr int kGemmStage = kGemmA + kGemmS + kGemmZ + kGemmB;  // 12,928 bytes

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src_bytes 0: the 16 bytes are zero-filled (tokens past m)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

template <bool ZP>
__global__ void __launch_bounds__(kGemmWarps * 32) int4t_gemm(const __half* __restrict__ xp, Int4Tiled w,
                                                              float* __restrict__ y,
                                                              const float* __restrict__ residual, int m,
                                                              Int4Epilogue ep, int kSplit,
                                                              float* __restrict__ partial) {
  extern __shared__ __align__(16) unsigned char gsm[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tiles = (w.rows + 15) / 16, rt = blockIdx.x * kGemmWarps + warp, tok0 = blockIdx.y * kGemmTok;
  const int KB = w.cols >> 6, GC = w.group >> 6, NG = KB / GC;
  // Split k (blockIdx.z of kSplit): chunks [kb0, kb1); the partial sums go to `partial` for gemm_splitk_reduce.
  const int KBs = (KB + kSplit - 1) / kSplit, kb0 = blockIdx.z * KBs, kb1 = min(KB, kb0 + KBs);
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(gsm);
  // Loads of chunk kb into stage st: weights (lane's 16 bytes of its warp's tile), scales / zeros (threads 0..39),
  // x (2 x 16 bytes per thread).
  auto issue = [&](int kb, int st) {
    const uint32_t sb = base + st * kGemmStage;
    const int rtc = min(rt, tiles - 1);
    cp_async16(sb + warp * 512 + lane * 16, w.q + ((size_t)rtc * KB + kb) * 32 + lane, true);
    const int gi = kb / GC;
    if (threadIdx.x < 32) {
      const int tt = min(blockIdx.x * kGemmWarps + (threadIdx.x >> 2), tiles - 1);
      cp_async16(sb + kGemmA + threadIdx.x * 16, w.scales + ((size_t)tt * NG + gi) * 16 + (threadIdx.x & 3) * 4, true);
    } else if (ZP && threadIdx.x < 40) {
      const int tt = min(blockIdx.x * kGemmWarps + (int)threadIdx.x - 32, tiles - 1);
      cp_async16(sb + kGemmA + kGemmS + (threadIdx.x - 32) * 16, w.zeros + ((size_t)tt * NG + gi) * 16, true);
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) {
      const int piece = threadIdx.x + i * kGemmWarps * 32;  // 512 pieces: token piece / 8, 16 bytes piece % 8
      const int n = piece >> 3, tok = tok0 + n;
      const __half* src = xp + (((size_t)kb * m + min(tok, m - 1)) * 64) + (piece & 7) * 8;
      cp_async16(sb + kGemmA + kGemmS + kGemmZ + piece * 16, src, tok < m);
    }
  };
  pdl_trigger();
  pdl_wait();
#pragma unroll
  for (int p = 0; p < kGemmStages - 1; ++p) {
    if (kb0 + p < kb1) issue(kb0 + p, p);
    cp_async_commit();
  }
  float acc[8][4];
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;
  for (int kb = kb0; kb < kb1; ++kb) {
    cp_async_wait<kGemmStages - 2>();
    __syncthreads();
    const unsigned char* st = gsm + ((kb - kb0) % kGemmStages) * kGemmStage;
    const uint4 qv = *reinterpret_cast<const uint4*>(st + warp * 512 + lane * 16);
    const float* sc = reinterpret_cast<const float*>(st + kGemmA + warp * 64);
    const float s0 = sc[g], s1 = sc[g + 8];
    uint32_t zl = zero_lo(8u), zh = zero_hi(8u);
    if (ZP) zl = zero_lo(st[kGemmA + kGemmS + warp * 16 + g]), zh = zero_hi(st[kGemmA + kGemmS + warp * 16 + g + 8]);
    uint32_t a[4][4];
    dequant_word(qv.x, zl, zh, a[0]);
    dequant_word(qv.y, zl, zh, a[1]);
    dequant_word(qv.z, zl, zh, a[2]);
    dequant_word(qv.w, zl, zh, a[3]);
    const unsigned char* bs = st + kGemmA + kGemmS + kGemmZ;
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      const uint4* bp = reinterpret_cast<const uint4*>(bs + ((nt * 8 + g) * 4 + t) * 32);
      const uint4 b01 = bp[0], b23 = bp[1];
      float d[4] = {0.f, 0.f, 0.f, 0.f};
      mma_f16(d, a[0], b01.x, b01.y);
      mma_f16(d, a[1], b01.z, b01.w);
      mma_f16(d, a[2], b23.x, b23.y);
      mma_f16(d, a[3], b23.z, b23.w);
      acc[nt][0] = fmaf(s0, d[0], acc[nt][0]);
      acc[nt][1] = fmaf(s0, d[1], acc[nt][1]);
      acc[nt][2] = fmaf(s1, d[2], acc[nt][2]);
      acc[nt][3] = fmaf(s1, d[3], acc[nt][3]);
    }
    if (kb + kGemmStages - 1 < kb1) issue(kb + kGemmStages - 1, (kb - kb0 + kGemmStages - 1) % kGemmStages);
    cp_async_commit();
  }
  cp_async_wait<0>();
  if (rt >= tiles) return;
  // C fragment: c0, c1 = (row g, tokens 2t, 2t+1), c2, c3 = (row g + 8, same tokens) of each n-tile.
#pragma unroll
  for (int nt = 0; nt < 8; ++nt) {
#pragma unroll
    for (int e = 0; e < 2; ++e) {
      const int tok = tok0 + nt * 8 + 2 * t + e;
      if (tok >= m) continue;
      if (kSplit > 1) {  // rows of this tile, this split: summed (and finished) by gemm_splitk_reduce
        float* pp = partial + ((size_t)blockIdx.z * m + tok) * (tiles * 16) + rt * 16 + g;
        pp[0] = acc[nt][e], pp[8] = acc[nt][2 + e];
        continue;
      }
      if (ep.kind != Int4Epilogue::kPlain) {
        pair_epilogue(ep, w.rows, rt, g, tok, m, acc[nt][e], acc[nt][2 + e], y);
        continue;
      }
      const size_t o = (size_t)tok * w.rows;
      const int r0 = rt * 16 + g, r1 = r0 + 8;
      if (r0 < w.rows) y[o + r0] = acc[nt][e] + (residual ? residual[o + r0] : 0.f);
      if (r1 < w.rows) y[o + r1] = acc[nt][2 + e] + (residual ? residual[o + r1] : 0.f);
    }
  }
}

// Sums the kSplit partial results of int4t_gemm and finishes them: y (+ residual), or the paired epilogue.
__global__ void gemm_splitk_reduce(const float* __restrict__ partial, int kSplit, int m, Int4Tiled w,
                                   float* __restrict__ y, const float* __restrict__ residual, Int4Epilogue ep) {
  pdl_trigger();
  pdl_wait();
  const int tiles = (w.rows + 15) / 16, rowsPad = tiles * 16;
  const size_t plane = (size_t)m * rowsPad;
  if (ep.kind == Int4Epilogue::kPlain) {
    const size_t total = (size_t)m * w.rows;
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
      const int tok = (int)(i / w.rows), row = (int)(i - (size_t)tok * w.rows);
      float s = 0.f;
      for (int z = 0; z < kSplit; ++z) s += partial[z * plane + (size_t)tok * rowsPad + row];
      if (residual) s += residual[i];
      y[i] = s;
    }
    return;
  }
  const size_t total = (size_t)m * tiles * 8;
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < total; i += (size_t)gridDim.x * blockDim.x) {
    const int tok = (int)(i / ((size_t)tiles * 8)), pr = (int)(i - (size_t)tok * tiles * 8);
    const int rt = pr >> 3, r = pr & 7;
    float a = 0.f, b = 0.f;
    for (int z = 0; z < kSplit; ++z) {
      const float* pp = partial + z * plane + (size_t)tok * rowsPad + rt * 16 + r;
      a += pp[0], b += pp[8];
    }
    pair_epilogue(ep, w.rows, rt, r, tok, m, a, b, y);
  }
}

}  // namespace

namespace detail {

cudaError_t int4t_gemm_launch(const __half* xp, const Int4Tiled& w, float* y, const float* residual, int m,
                              const Int4Epilogue& ep, int kSplit, float* ws, cudaStream_t stream) {
  const int tiles = (w.rows + 15) / 16;
  const dim3 grid((tiles + kGemmWarps - 1) / kGemmWarps, (m + kGemmTok - 1) / kGemmTok, kSplit);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  const size_t smem = (size_t)kGemmStages * kGemmStage;
  const cudaError_t e =
      w.zeros ? launch_pdl(int4t_gemm<true>, grid, dim3(kGemmWarps * 32), smem, stream, xp, w, y, residual, m, ep,
                           kSplit, ws)
              : launch_pdl(int4t_gemm<false>, grid, dim3(kGemmWarps * 32), smem, stream, xp, w, y, residual, m, ep,
                           kSplit, ws);
  if (e != cudaSuccess || kSplit == 1) return e;
  return launch_pdl(gemm_splitk_reduce, dim3(4 * sm_count()), dim3(256), 0, stream, (const float*)ws, kSplit, m, w, y,
                    residual, ep);
}

}  // namespace detail
}  // namespace tpserve::cuda
