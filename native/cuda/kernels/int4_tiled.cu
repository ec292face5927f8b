// Int4 matmul on the tile-packed weight layout (Int4Tiled, kernels.cuh), built at load time by int4_tile_pack.
//
// Layout: the weight is cut into 16-row tiles and 64-column chunks. One chunk of one tile is 512 contiguous bytes:
// lane L = 4g + t of a warp owns the 16 bytes at L * 16, whose 32-bit word j holds the eight nibbles that lane
// needs as its mma.m16n8k16 A fragment for the 16-column step j of the chunk (rows g and g + 8, columns 2t, 2t+1,
// 2t+8, 2t+9 of the step). Nibble i of the word sits so that two LOP3s per half-word give fp16x2 (1024 + q) pairs
// (bits 0-3 / 16-19) and (1024 + 16 q) pairs (bits 4-7 / 20-23), the Marlin-style unpack: 9 instructions per 8
// weights, exact. Scales and zero points are (tile, group, 16 rows), so a warp reads a tile's as one 64-byte line.
// A warp's 16-byte loads cover 512 contiguous bytes; a tile's chunks are contiguous along k.
//
// Decode (m <= 16): int4t_gemv. A block owns one 16-row tile; its `ks` warps take the tile's groups round-robin
// (split k), each keeping the next group's weights in registers while it computes one, and reduce through shared
// memory at the end. x comes prepared (xprep.cuh: fp16 hi/lo pairs for m <= 8, near fp32 accuracy; one fp16 column
// per token above) from the kernel that produced it, read through L1. The first group's weight loads are issued
// before pdl_wait(), so they overlap the previous kernel (pdl.cuh).
// m > 16: int4t_gemm (int4_gemm.cu; fp16 activations) for at least 64 tokens (split k below 8192 rows), else the decode kernel on
// 16-token slices; `exact` passes take 8-token slices with hi/lo activations.
#include <cuda_fp16.h>

#include <algorithm>
#include <array>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "int4_tiled_common.cuh"
#include "pdl.cuh"

namespace tpserve::cuda {
namespace {

using detail::kGemmWarps;
using detail::sm_count;

constexpr int kMaxKs = 16;

// ---- decode GEMV (m <= 16) ------------------------------------------------------------------------------------
// NT n-tiles of 8 columns (xprep_cols(m) <= 8 NT), HILO: two columns per token, GC chunks per group, P groups in
// flight per warp, ZP: zero points present.
// KSC: the warps a tile fixed at compile time (8 or 16; 0: `ks` at run time), which lets the compiler fold the
// group indexing; at most 64 registers (32 warps an SM). Taken for up to 4 tokens; TPSERVE_T_KSCT=0 turns it off
// (docs/gpu-runs.md run 51).
template <int NT, bool HILO, int GC, int P, bool ZP, int KSC>
__global__ void __launch_bounds__(KSC ? KSC * 32 : kMaxKs * 32, KSC ? 1024 / ((KSC ? KSC : 1) * 32) : 1)
    int4t_gemv(const __half* __restrict__ xp, Int4Tiled w, float* __restrict__ y, const float* __restrict__ residual,
               int m, int ks, Int4Epilogue ep) {
  if (KSC) ks = KSC;  // the launcher passes the same value
  extern __shared__ float red[];  // [ks][16][m]
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = blockIdx.x;
  const int KB = w.cols >> 6, NG = KB / GC;
  const uint4* wq = w.q + (size_t)rt * KB * 32 + lane;
  const float* wsc = w.scales + (size_t)rt * NG * 16;
  const uint8_t* wz = ZP ? w.zeros + (size_t)rt * NG * 16 : nullptr;
  const int U = warp < NG ? (NG - warp + ks - 1) / ks : 0;  // this warp's groups: warp, warp + ks, ...

  uint4 q[P][GC];
  float s0[P], s1[P];
  uint32_t z0[P], z1[P];
#define TPS_T_LOAD(slot, u)                                                    \
  do {                                                                         \
    const int gi_ = warp + (u) * ks;                                           \
    _Pragma("unroll") for (int c_ = 0; c_ < GC; ++c_) q[slot][c_] =            \
        ld_stream(wq + (size_t)(gi_ * GC + c_) * 32);                          \
    s0[slot] = __ldg(wsc + gi_ * 16 + g);                                      \
    s1[slot] = __ldg(wsc + gi_ * 16 + g + 8);                                  \
    if (ZP) z0[slot] = __ldg(wz + gi_ * 16 + g), z1[slot] = __ldg(wz + gi_ * 16 + g + 8); \
  } while (0)

#pragma unroll
  for (int p = 0; p < P - 1; ++p)
    if (p < U) TPS_T_LOAD(p, p);
  // The plain epilogue's inputs go to shared memory while the main loop runs (cp.async: no register holds them and
  // nothing waits for them until the epilogue): the next norm's weights now (constant), the residual and the y
  // being accumulated once the previous kernel is done. Thread i copies and later reads entry i (row i / m, token
  // i % m) as the epilogue's loop assigns them.
  __shared__ float eNorm[16], eRes[16 * 16], eAcc[16 * 16];
  const bool plain = ep.kind == Int4Epilogue::kPlain;
  if (plain && ep.normW && threadIdx.x < 16 && rt * 16 + (int)threadIdx.x < w.rows)
    cp_async4(&eNorm[threadIdx.x], ep.normW + rt * 16 + threadIdx.x);
  pdl_trigger();
  pdl_wait();  // x (and residual) come from the previous kernel
  if (plain && (residual || ep.accumulate))
    for (int i = threadIdx.x; i < 16 * m; i += blockDim.x) {
      const int row = i / m, tok = i - row * m, gr = rt * 16 + row;
      if (gr >= w.rows) continue;
      if (residual) cp_async4(&eRes[i], residual + (size_t)tok * w.rows + gr);
      if (ep.accumulate) cp_async4(&eAcc[i], y + (size_t)tok * w.rows + gr);
    }

  // Folded RMSNorm, consumer side: r = 1 / rms per token from the producer's partial sums (fixed order).
  __shared__ float rnorm[16];
  if (ep.ssqIn)
    for (int tok = warp; tok < m; tok += ks) {
      float ss = 0.f;
      for (int i = lane; i < ep.ssqParts; i += 32) ss += ep.ssqIn[(size_t)tok * ep.ssqParts + i];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) ss += __shfl_xor_sync(0xffffffffu, ss, o);
      if (lane == 0) rnorm[tok] = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)ep.normCols) + ep.eps));
    }

  const int NC = HILO ? 2 * m : m;
  float acc[NT][4];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) acc[nt][0] = acc[nt][1] = acc[nt][2] = acc[nt][3] = 0.f;

  for (int u0 = 0; u0 < U; u0 += P) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int u = u0 + p;
      if (u + P - 1 < U) TPS_T_LOAD((p + P - 1) % P, u + P - 1);
      if (u < U) {
        const int gi = warp + u * ks;
        const uint32_t zlo = zero_lo(ZP ? z0[p] : 8u), zhi = zero_hi(ZP ? z1[p] : 8u);
        float d[NT][4];
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) d[nt][0] = d[nt][1] = d[nt][2] = d[nt][3] = 0.f;
#pragma unroll
        for (int c = 0; c < GC; ++c) {
          const int kb = gi * GC + c;
          uint4 bx[NT][2];
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            const int n = nt * 8 + g;
            if (n < NC) {
              const uint4* bp = reinterpret_cast<const uint4*>(xp + ((size_t)(kb * NC + n) * 4 + t) * 16);
              bx[nt][0] = ld_prev(bp), bx[nt][1] = ld_prev(bp + 1);
            } else {
              bx[nt][0] = bx[nt][1] = make_uint4(0u, 0u, 0u, 0u);
            }
          }
          const uint32_t words[4] = {q[p][c].x, q[p][c].y, q[p][c].z, q[p][c].w};
#pragma unroll
          for (int j = 0; j < 4; ++j) {
            uint32_t a[4];
            dequant_word(words[j], zlo, zhi, a);
#pragma unroll
            for (int nt = 0; nt < NT; ++nt) {
              const uint4& b = bx[nt][j >> 1];
              if (j & 1) mma_f16(d[nt], a, b.z, b.w);
              else mma_f16(d[nt], a, b.x, b.y);
            }
          }
        }
#pragma unroll
        for (int nt = 0; nt < NT; ++nt) {
          acc[nt][0] = fmaf(s0[p], d[nt][0], acc[nt][0]);
          acc[nt][1] = fmaf(s0[p], d[nt][1], acc[nt][1]);
          acc[nt][2] = fmaf(s1[p], d[nt][2], acc[nt][2]);
          acc[nt][3] = fmaf(s1[p], d[nt][3], acc[nt][3]);
        }
      }
    }
  }
#undef TPS_T_LOAD

  // C fragment: c0, c1 = (row g, columns 2t, 2t+1), c2, c3 = (row g + 8, same columns) of each n-tile.
  float* rw = red + (size_t)warp * 16 * m;
  if (HILO) {  // token 4 nt + t: columns 8 nt + 2t (hi), + 1 (lo)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int tok = nt * 4 + t;
      if (tok < m) rw[g * m + tok] = acc[nt][0] + acc[nt][1], rw[(g + 8) * m + tok] = acc[nt][2] + acc[nt][3];
    }
  } else {
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      const int tok = nt * 8 + 2 * t;
      if (tok < m) rw[g * m + tok] = acc[nt][0], rw[(g + 8) * m + tok] = acc[nt][2];
      if (tok + 1 < m) rw[g * m + tok + 1] = acc[nt][1], rw[(g + 8) * m + tok + 1] = acc[nt][3];
    }
  }
  if (plain) cp_async_wait_all();
  __syncthreads();
  if (plain) {
    __shared__ float sq[16 * 16];  // folded norm, producer side: squares of the new rows
    for (int i = threadIdx.x; i < 16 * m; i += blockDim.x) {
      const int row = i / m, tok = i - row * m, gr = rt * 16 + row;
      if (gr >= w.rows) {
        sq[i] = 0.f;
        continue;
      }
      float s = 0.f;
      for (int k = 0; k < ks; ++k) s += red[(k * 16 + row) * m + tok];
      if (residual) s += eRes[i];
      if (ep.accumulate) s += eAcc[i];
      y[(size_t)tok * w.rows + gr] = s;
      if (ep.normW) {
        xprep_store1(ep.xpOut, ep.xpMap, m, tok, gr, s * eNorm[row]);
        sq[i] = s * s;
      }
    }
    if (ep.ssqOut) {
      __syncthreads();
      if (threadIdx.x < m) {
        float t = 0.f;
        for (int row = 0; row < 16; ++row) t += sq[row * m + threadIdx.x];
        ep.ssqOut[(size_t)threadIdx.x * gridDim.x + blockIdx.x] = t;
      }
    }
    return;
  }
  // Paired rows: packed row r (< 8) and r + 8 of this tile (see int4_tile_row_map).
  for (int i = threadIdx.x; i < 8 * m; i += blockDim.x) {
    const int r = i / m, tok = i - r * m;
    float a = 0.f, b = 0.f;
    for (int k = 0; k < ks; ++k) a += red[(k * 16 + r) * m + tok], b += red[(k * 16 + r + 8) * m + tok];
    if (ep.ssqIn) a *= rnorm[tok], b *= rnorm[tok];
    pair_epilogue(ep, w.rows, rt, r, tok, m, a, b, y);
  }
}

// ---- packing and x preparation ---------------------------------------------------------------------------------

__device__ __forceinline__ uint32_t src_nib(const uint8_t* src, int rows, int cols, int r, int c) {
  if (r < 0 || r >= rows) return 0u;
  const uint8_t b = src[(size_t)r * (cols / 2) + c / 2];
  return (c & 1) ? (b >> 4) : (b & 15u);
}

__global__ void int4t_pack_q(const uint8_t* __restrict__ src, int rows, int cols, const int32_t* __restrict__ rowMap,
                             uint32_t* __restrict__ dst, size_t words) {
  const int KB = cols >> 6;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < words; idx += (size_t)gridDim.x * blockDim.x) {
    const int j = (int)(idx & 3), lane = (int)((idx >> 2) & 31);
    const size_t rest = idx >> 7;
    const int kb = (int)(rest % KB), rt = (int)(rest / KB);
    const int g = lane >> 2, t = lane & 3, k0 = kb * 64 + j * 16 + 2 * t;
    const int r0 = rowMap ? rowMap[rt * 16 + g] : rt * 16 + g, r1 = rowMap ? rowMap[rt * 16 + g + 8] : rt * 16 + g + 8;
    const uint32_t n[8] = {src_nib(src, rows, cols, r0, k0),     src_nib(src, rows, cols, r1, k0),
                           src_nib(src, rows, cols, r0, k0 + 8), src_nib(src, rows, cols, r1, k0 + 8),
                           src_nib(src, rows, cols, r0, k0 + 1), src_nib(src, rows, cols, r1, k0 + 1),
                           src_nib(src, rows, cols, r0, k0 + 9), src_nib(src, rows, cols, r1, k0 + 9)};
    uint32_t word = 0;
#pragma unroll
    for (int i = 0; i < 8; ++i) word |= n[i] << (4 * i);
    dst[idx] = word;
  }
}

__global__ void int4t_pack_groups(const float* __restrict__ scales, const uint8_t* __restrict__ zeros, int rows,
                                  int ngroups, const int32_t* __restrict__ rowMap, float* __restrict__ dScales,
                                  uint8_t* __restrict__ dZeros, size_t total) {
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    const int r = (int)(idx & 15);
    const size_t rest = idx >> 4;
    const int gi = (int)(rest % ngroups), rt = (int)(rest / ngroups);
    const int row = rowMap ? rowMap[rt * 16 + r] : rt * 16 + r;
    const bool ok = row >= 0 && row < rows;
    dScales[idx] = ok ? scales[(size_t)row * ngroups + gi] : 0.f;
    if (dZeros) dZeros[idx] = ok && zeros ? zeros[(size_t)row * ngroups + gi] : 0;
  }
}

__global__ void xprep_kernel(const float* __restrict__ x, int m, int cols, __half* __restrict__ xp) {
  pdl_trigger();
  pdl_wait();
  const int pairs = cols / 2;
  const int total = m * pairs;
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < total; i += gridDim.x * blockDim.x) {
    const int tok = i / pairs, k = (i - tok * pairs) * 2;
    const float2 v = ld_prev(reinterpret_cast<const float2*>(x + (size_t)tok * cols + k));
    xprep_store2(xp, m, tok, k, v.x, v.y);
  }
}

template <int NT, bool HILO, int GC, int P>
cudaError_t launch_gemv(const __half* xp, const Int4Tiled& w, float* y, const float* residual, int m, int ks,
                        const Int4Epilogue& ep, cudaStream_t s) {
  const int tiles = (w.rows + 15) / 16;
  const size_t smem = (size_t)ks * 16 * m * sizeof(float);
  const auto go = [&](auto kernel) {
    return launch_pdl(kernel, dim3(tiles), dim3(ks * 32), smem, s, xp, w, y, residual, m, ks, ep);
  };
  // Warps fixed at compile time only for up to 4 tokens (NT = 1): there it took the Llama-2-7B batch-4 step from 2.08
  // to 1.79 ms on an H200; with two n-tiles the 64-register cap spills and batch 8 went from 2.84 to 3.55 ms (run 51).
  const bool z = w.zeros != nullptr;
  if constexpr (NT == 1) {
    static const bool ksct = detail::env_on("TPSERVE_T_KSCT");
    if (ksct && ks == 8)
      return z ? go(int4t_gemv<NT, HILO, GC, P, true, 8>) : go(int4t_gemv<NT, HILO, GC, P, false, 8>);
    if (ksct && ks == 16)
      return z ? go(int4t_gemv<NT, HILO, GC, P, true, 16>) : go(int4t_gemv<NT, HILO, GC, P, false, 16>);
  }
  return z ? go(int4t_gemv<NT, HILO, GC, P, true, 0>) : go(int4t_gemv<NT, HILO, GC, P, false, 0>);
}

// TPSERVE_T_KS_MAP="RxC:ks,..." (one token): the warps a tile for the weights of that shape, over the rule below
// (docs/gpu-runs.md run 52).
int ks_map(const Int4Tiled& w) {
  static const std::vector<std::array<int, 3>> map = [] {
    std::vector<std::array<int, 3>> v;
    const char* e = std::getenv("TPSERVE_T_KS_MAP");
    for (const char* c = e; c && *c;) {
      int r = 0, k = 0, ks = 0, n = 0;
      if (std::sscanf(c, "%dx%d:%d%n", &r, &k, &ks, &n) != 3) break;
      v.push_back({r, k, ks});
      c += n;
      if (*c == ',') ++c;
    }
    return v;
  }();
  for (const auto& e : map)
    if (e[0] == w.rows && e[1] == w.cols) return e[2];
  return 0;
}

// One slice of at most 16 tokens with x already prepared in xp.
cudaError_t gemv_slice(const __half* xp, const Int4Tiled& w, float* y, const float* residual, int m,
                       const Int4Epilogue& ep, cudaStream_t stream) {
  const int ks = detail::gemv_ks(w, m);
  static const int envKs = detail::env_int("TPSERVE_T_KS");
  // One token with a pair epilogue and Int4Epilogue::splitParts set by the caller (the engine with TPSERVE_T_SPLIT=1):
  // k split across two blocks a tile (int4_tiled_split.cu). TPSERVE_T_SPLIT=0 turns it off; =all takes it on any
  // width (checks of small models).
  static const bool split = detail::env_on("TPSERVE_T_SPLIT");
  static const bool splitAll = detail::env_is("TPSERVE_T_SPLIT", "all");
  // Int4Epilogue::comm: only the one-token kernel exchanges (int4_gemv_allreduce_ok() was asked first).
  if (ep.comm.world > 1)
    return detail::gemv_one_ok(w, m, ep, ks) ? detail::gemv_one(xp, w, y, residual, ep, ks, stream)
                                             : cudaErrorInvalidValue;
  if (split && envKs == 0 && detail::gemv_split_ok(w, m, ep, splitAll ? 2 : 16))
    return detail::gemv_split(xp, w, y, ep, stream);
  // One token otherwise: int4t_gemv_one, int4t_gemv's sums with a leaner loop and the epilogue inside, plain (O,
  // down) or pair (QKV, gate/up) (int4_tiled_split.cu; docs/gpu-runs.md run 50). TPSERVE_T_ONE=0 keeps int4t_gemv.
  static const bool one = detail::env_on("TPSERVE_T_ONE");
  if (one && detail::gemv_one_ok(w, m, ep, ks)) return detail::gemv_one(xp, w, y, residual, ep, ks, stream);
  if (w.group == 64) {
    if (m <= 4) return launch_gemv<1, true, 1, 2>(xp, w, y, residual, m, ks, ep, stream);
    if (m <= 8) return launch_gemv<2, true, 1, 2>(xp, w, y, residual, m, ks, ep, stream);
    return launch_gemv<2, false, 1, 2>(xp, w, y, residual, m, ks, ep, stream);
  }
  if (m <= 4) return launch_gemv<1, true, 2, 2>(xp, w, y, residual, m, ks, ep, stream);
  if (m <= 8) return launch_gemv<2, true, 2, 2>(xp, w, y, residual, m, ks, ep, stream);
  return launch_gemv<2, false, 2, 2>(xp, w, y, residual, m, ks, ep, stream);
}


}  // namespace

int detail::gemv_ks(const Int4Tiled& w, int m) {
  // Split k: each warp keeps >= 4 groups, or >= 2 where fewer than 64 warps per SM would stream otherwise.
  // Chosen from a sweep on an H200 (docs/gpu-runs.md, run 8): 2 groups in flight per warp and many warps beat deeper
  // rings (in registers or in shared memory through cp.async). TPSERVE_T_KS overrides (1, 2, 4, 8 or 16).
  const int ng = w.cols / w.group, tiles = (w.rows + 15) / 16;
  int ks = 1;
  while (ks < kMaxKs && (ng / (ks * 2) >= 4 || (ng / (ks * 2) >= 2 && tiles * ks * 2 <= 64 * sm_count()))) ks *= 2;
  // One token: 16-warp tiles only while they fit one wave (2 blocks of 16 warps an SM at 63 registers). Llama-2-70B's
  // matrices at TP = 4 (down: 512 tiles) took the step from 5.43-5.47 to 5.29-5.30 ms on an H100; the 7B / 8B shapes
  // (256 tiles) keep 16 (docs/gpu-runs.md run 38). TPSERVE_T_KS_WAVE=0 turns it off.
  static const bool wave = detail::env_on("TPSERVE_T_KS_WAVE");
  if (wave && m == 1 && ks == 16 && tiles * 16 > 32 * sm_count()) ks = 8;
  // One token, 8 warps a tile with 2 groups each where 16 (one group each) still fit one wave: 16. Llama-2-7B's O at
  // TP = 2 (4096x2048, 256 tiles): 1.115 against 1.154-1.156 ms a step on 2x H200 (docs/gpu-runs.md run 54).
  if (wave && m == 1 && ks == 8 && ng >= 16 && tiles * 16 <= 32 * sm_count()) ks = 16;
  // One token, 8 warps a tile over more than one wave of 32 warps an SM where 4 fit in three quarters of one: 4.
  // Llama-2-7B's QKV (768 tiles): 1.481 against 1.491-1.493 ms a step on an H200; 4 lost on gate/up (1,376 tiles),
  // 16 on both (docs/gpu-runs.md run 52). TPSERVE_T_KS_HALF=0 turns it off.
  static const bool half = detail::env_on("TPSERVE_T_KS_HALF");
  if (half && m == 1 && ks == 8 && tiles * 8 > 32 * sm_count() && tiles * 4 <= 24 * sm_count()) ks = 4;
  // 5-16 tokens (batched decode): 8 warps per tile on every shape, which beat the rule above inside the decode step
  // at batch 8 and 32 (docs/gpu-runs.md, run 16; at batch 1 the rule wins). TPSERVE_T_KS_BATCH=0 keeps the rule.
  static const bool batch8 = detail::env_on("TPSERVE_T_KS_BATCH");
  if (batch8 && m > 4 && ng >= 8) ks = 8;
  static const int envKs = detail::env_int("TPSERVE_T_KS");
  if (envKs == 1 || envKs == 2 || envKs == 4 || envKs == 8 || envKs == 16) ks = std::min(envKs, ng);
  if (const int mk = m == 1 ? ks_map(w) : 0; mk == 4 || mk == 8 || mk == 16) ks = std::min(mk, ng);
  return ks;
}

bool int4_gemv_allreduce_ok(int rows, int cols, int group, bool zeros, int m) {
  static const bool on = detail::env_on("TPSERVE_TP_FUSE");
  if (!on || m != 1 || !int4_tiled_supported(rows, cols, group)) return false;
  Int4Tiled w{};  // the shape is all that the warp rule reads
  w.rows = rows, w.cols = cols, w.group = group;
  const int ks = detail::gemv_ks(w, 1);
  if (!detail::gemv_one_ok(w, 1, Int4Epilogue(), ks)) return false;
  // Every block resident at once: a block polls for its peers' blocks of the same rows, which the GPU must be able
  // to run beside it whatever order it starts blocks in.
  const int perSm = detail::gemv_one_comm_blocks_per_sm(group, zeros, ks);
  return perSm > 0 && (rows + 15) / 16 <= perSm * sm_count();
}

bool detail::env_on(const char* name) {
  const char* e = std::getenv(name);
  return !(e && e[0] == '0');
}

int detail::env_int(const char* name) {
  const char* e = std::getenv(name);
  return e ? std::atoi(e) : 0;
}

bool detail::env_is(const char* name, const char* value) {
  const char* e = std::getenv(name);
  return e && std::string(e) == value;
}

int detail::sm_count() {
  static const int n = [] {
    int dev = 0, v = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess)
      return 132;
    return v > 0 ? v : 132;
  }();
  return n;
}

bool int4_tiled_supported(int rows, int cols, int group) {
  return rows >= 1 && cols >= 64 && cols % 64 == 0 && (group == 64 || group == 128) && cols % group == 0;
}

void int4_tiled_sizes(int rows, int cols, int group, size_t* qWords, size_t* groupEntries) {
  const size_t tiles = (size_t)(rows + 15) / 16;
  *qWords = tiles * (size_t)(cols / 64) * 128;
  *groupEntries = tiles * (size_t)(cols / group) * 16;
}

cudaError_t int4_tile_pack(const Int4Weight& src, uint32_t* q, float* scales, uint8_t* zeros, const int32_t* rowMap,
                           cudaStream_t stream) {
  if (!src.qweight || !src.scales || !q || !scales || (src.zeros && !zeros) ||
      !int4_tiled_supported(src.rows, src.cols, src.group))
    return cudaErrorInvalidValue;
  size_t words = 0, entries = 0;
  int4_tiled_sizes(src.rows, src.cols, src.group, &words, &entries);
  const int threads = 256;
  const int bq = (int)std::min<size_t>((words + threads - 1) / threads, 65535);
  int4t_pack_q<<<bq, threads, 0, stream>>>(src.qweight, src.rows, src.cols, rowMap, q, words);
  const int bg = (int)std::min<size_t>((entries + threads - 1) / threads, 65535);
  int4t_pack_groups<<<bg, threads, 0, stream>>>(src.scales, src.zeros, src.rows, src.cols / src.group, rowMap,
                                                scales, src.zeros ? zeros : nullptr, entries);
  return cudaGetLastError();
}

cudaError_t xprep(const float* x, int m, int cols, __half* xp, cudaStream_t stream) {
  if (!x || !xp || m < 1 || cols % 64 != 0 || cols <= 0 || (size_t)m * cols / 2 > 0x7fffffff) return cudaErrorInvalidValue;
  const int total = m * cols / 2, threads = 256;
  const int blocks = std::min((total + threads - 1) / threads, 4 * sm_count());
  return launch_pdl(xprep_kernel, dim3(blocks), dim3(threads), 0, stream, x, m, cols, xp);
}

std::vector<int32_t> int4_tile_row_map(Int4RowOrder order, int rows, int heads, int kvHeads, int headDim) {
  std::vector<int32_t> map;
  if (order == Int4RowOrder::kGateUpPairs) {
    if (rows % 16 != 0) return map;
    const int inter = rows / 2;
    for (int rt = 0; rt < inter / 8; ++rt)
      for (int r = 0; r < 16; ++r) map.push_back(r < 8 ? rt * 8 + r : inter + rt * 8 + r - 8);
  } else if (order == Int4RowOrder::kRopePairs) {
    if (headDim % 16 != 0 || heads < 1 || kvHeads < 1 || rows != (heads + 2 * kvHeads) * headDim) return map;
    const int half = headDim / 2;
    for (int h = 0; h < heads + kvHeads; ++h)
      for (int jb = 0; jb < half / 8; ++jb)
        for (int r = 0; r < 16; ++r) map.push_back(h * headDim + (r < 8 ? jb * 8 + r : half + jb * 8 + r - 8));
    for (int v = (heads + kvHeads) * headDim; v < rows; ++v) map.push_back(v);
  } else {
    for (int r = 0; r < (rows + 15) / 16 * 16; ++r) map.push_back(r < rows ? r : -1);
  }
  return map;
}

cudaError_t int4_tiled_matmul(const float* x, __half* xp, bool xpReady, const Int4Tiled& w, float* y, int m,
                              const float* residual, cudaStream_t stream, bool exact, const Int4Epilogue& ep,
                              float* ws, size_t wsFloats) {
  if (!w.q || !w.scales || !xp || m < 1 || !int4_tiled_supported(w.rows, w.cols, w.group)) return cudaErrorInvalidValue;
  if (ep.kind == Int4Epilogue::kPlain && !y) return cudaErrorInvalidValue;
  if (ep.kind != Int4Epilogue::kPlain && (residual || w.rows % 16 != 0)) return cudaErrorInvalidValue;
  if (ep.kind == Int4Epilogue::kSiluPairs && (!y || (ep.xpOut && m > 16))) return cudaErrorInvalidValue;
  // The folded norm exists only on the decode GEMV with x already prepared (no slices, no GEMM).
  const bool folded = ep.accumulate || ep.normW || ep.ssqOut || ep.ssqIn;
  if (folded && (m > 16 || !xpReady)) return cudaErrorInvalidValue;
  if (ep.kind == Int4Epilogue::kPlain && (ep.normW || ep.ssqOut) &&
      (!ep.normW || !ep.ssqOut || !ep.xpOut || residual || w.rows % 64 != 0))
    return cudaErrorInvalidValue;
  if (ep.ssqIn && (ep.kind == Int4Epilogue::kPlain || ep.ssqParts < 1 || ep.normCols < 1)) return cudaErrorInvalidValue;
  if (ep.kind == Int4Epilogue::kRopeQkv &&
      (!ep.positions || !ep.slots || !ep.q || !ep.kCache || !ep.vCache || !ep.ropeCos || !ep.ropeSin ||
       ep.headDim % 16 != 0 || ep.heads < 1 || ep.kvHeads < 1 || w.rows != (ep.heads + 2 * ep.kvHeads) * ep.headDim))
    return cudaErrorInvalidValue;
  if (ep.comm.world > 1 &&
      (ep.kind != Int4Epilogue::kPlain || residual || !xpReady || ep.comm.world > kP2pMaxRanks || !ep.comm.state ||
       (size_t)w.rows > ep.comm.cap || !int4_gemv_allreduce_ok(w.rows, w.cols, w.group, w.zeros != nullptr, m)))
    return cudaErrorInvalidValue;
  if (m <= 16 && xpReady) return gemv_slice(xp, w, y, residual, m, ep, stream);
  if (!x) return cudaErrorInvalidValue;
  // The GEMM (int4_gemm.cu; its plan: k split across blocks, row tiles a warp, 32 or 64 tokens a block) from 24
  // tokens on matrices of 8192+ rows and from 33 on smaller ones, where 16-token slices were faster at 32 (H200,
  // docs/gpu-runs.md run 61; TPSERVE_GEMM_MIN_M=N: from N tokens on every matrix). A matrix of fewer than 8192 rows
  // whose plan neither splits k nor fills the SMs takes the slices (runs 10-12).
  static const int gemmMinM = detail::env_int("TPSERVE_GEMM_MIN_M");
  const bool gemmM = gemmMinM > 16 ? m >= gemmMinM : m >= (w.rows >= 8192 ? 24 : 33);
  if (m > 16 && !exact && gemmM) {
    const detail::GemmPlan plan = detail::gemm_plan(w.rows, w.cols, m, w.zeros != nullptr, ws ? wsFloats : 0);
    const int tiles = (w.rows + 15) / 16, tok = detail::gemm_tokens_per_block(m), tokBlocks = (m + tok - 1) / tok;
    const int blocks = ((tiles + kGemmWarps - 1) / kGemmWarps) * tokBlocks;
    if (w.rows >= 8192 || plan.kSplit > 1 || blocks >= sm_count()) {  // x prepared once for all m tokens
      if (tokBlocks > 65535) return cudaErrorInvalidValue;
      Int4Epilogue e2 = ep;
      e2.xpOut = nullptr;
      const cudaError_t e = xprep(x, m, w.cols, xp, stream);
      if (e != cudaSuccess) return e;
      return detail::int4t_gemm_launch(xp, w, y, residual, m, e2, plan, ws, stream);
    }
  }
  // m <= 16: one slice; above, slices of 16 tokens (fp16 activations), or of 8 with hi/lo activations (exact).
  const int slice = m <= 16 ? m : exact ? 8 : 16;
  const int yStride = ep.kind == Int4Epilogue::kSiluPairs ? w.rows / 2 : w.rows;
  for (int t0 = 0; t0 < m; t0 += slice) {
    const int mm = std::min(slice, m - t0);
    Int4Epilogue e2 = ep;
    if (ep.kind == Int4Epilogue::kRopeQkv) {
      e2.positions += t0, e2.slots += t0;
      e2.q += (size_t)t0 * ep.heads * ep.headDim;
    }
    if (e2.xpOut && m > 16) e2.xpOut = nullptr;
    cudaError_t e = xprep(x + (size_t)t0 * w.cols, mm, w.cols, xp, stream);
    if (e == cudaSuccess)
      e = gemv_slice(xp, w, y ? y + (size_t)t0 * yStride : nullptr, residual ? residual + (size_t)t0 * w.rows : nullptr,
                     mm, e2, stream);
    if (e != cudaSuccess) return e;
  }
  return cudaSuccess;
}

}  // namespace tpserve::cuda
