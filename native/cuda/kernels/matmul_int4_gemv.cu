// Int4 decode GEMV variants (m <= 16), selectable at run time for benchmarking (matmul_variants.cuh): v1 the
// shared-memory fp32 GEMV of matmul_common.cuh, v2-v5 SIMT fp32 without staging, v6-v9 swap-AB tensor-core GEMV
// (weights as the mma's A side, bf16 x), v10 the pipelined tensor-core GEMV with the LOP3 unpack. Measurements that
// chose the defaults: docs/gpu-runs.md.
#include <cstdlib>

#include "matmul_common.cuh"
#include "matmul_variants.cuh"

namespace tpserve::cuda {
namespace {

// ---- int4 decode GEMV, SIMT fp32 (m <= 4) -------------------------------------------------------------------------
// A block of KS warps owns R output rows; its warps split the 32-column chunks of those rows (chunk c goes to warp
// (c / 32) % KS, lane c % 32). No shared-memory staging and no barrier before the weight loads: each lane first
// issues all U x R 16-byte weight loads (plus their scales) of one round, then consumes them. x is read with
// float4 __ldg (L1/L2 resident), once per chunk for all R rows. Exact fp32 dequantization (magic-number
// conversion), the scale multiplies each chunk's partial dot product once, fp32 accumulate. Warp-shuffle then
// shared-memory reduction over the KS warps at the end (the only barrier).
template <int MB, int R, int KS, int U>
__global__ void __launch_bounds__(KS * 32, 512 / (KS * 32)) int4_gemv_simt(const float* __restrict__ x, Int4Fmt f,
                                                          float* __restrict__ y, int m, int rows, int cols) {
  __shared__ float red[KS][R * MB];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int row0 = blockIdx.x * R;
  const int nch = cols >> 5;
  int rr[R];
#pragma unroll
  for (int r = 0; r < R; ++r) rr[r] = min(row0 + r, rows - 1);
  const float* xr[MB];
#pragma unroll
  for (int mi = 0; mi < MB; ++mi) xr[mi] = x + (size_t)min(mi, m - 1) * cols;
  float acc[R][MB];
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) acc[r][mi] = 0.f;

  for (int c0 = warp * 32 + lane; c0 < nch; c0 += KS * 32 * U) {
    uint4 w[U][R];
    float sc[U][R], mg[U][R];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * KS * 32;
      if (c < nch) {
#pragma unroll
        for (int r = 0; r < R; ++r) w[u][r] = ld_stream(f.chunk(rr[r], c));
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * KS * 32;
      if (c < nch) {
#pragma unroll
        for (int r = 0; r < R; ++r) {
          size_t gi = (size_t)rr[r] * f.ngroups + f.gidx(c);
          sc[u][r] = __ldg(f.scales + gi);
          mg[u][r] = 8388608.f + (f.zeros ? (float)__ldg(f.zeros + gi) : 8.f);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = c0 + u * KS * 32;
      if (c < nch) {
        float p[R][MB];
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int mi = 0; mi < MB; ++mi) p[r][mi] = 0.f;
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) {
          float4 xa[MB], xb[MB];
#pragma unroll
          for (int mi = 0; mi < MB; ++mi) {
            const float4* xp = reinterpret_cast<const float4*>(xr[mi] + (size_t)c * 32 + wi * 8);
            xa[mi] = __ldg(xp);
            xb[mi] = __ldg(xp + 1);
          }
#pragma unroll
          for (int r = 0; r < R; ++r) {
            uint32_t word = wi == 0 ? w[u][r].x : wi == 1 ? w[u][r].y : wi == 2 ? w[u][r].z : w[u][r].w;
            float q[8];
            dequant8(word, mg[u][r], q);
#pragma unroll
            for (int mi = 0; mi < MB; ++mi) {
              float a = p[r][mi];
              a = fmaf(q[0], xa[mi].x, a); a = fmaf(q[1], xa[mi].y, a);
              a = fmaf(q[2], xa[mi].z, a); a = fmaf(q[3], xa[mi].w, a);
              a = fmaf(q[4], xb[mi].x, a); a = fmaf(q[5], xb[mi].y, a);
              a = fmaf(q[6], xb[mi].z, a); a = fmaf(q[7], xb[mi].w, a);
              p[r][mi] = a;
            }
          }
        }
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
          for (int mi = 0; mi < MB; ++mi) acc[r][mi] = fmaf(sc[u][r], p[r][mi], acc[r][mi]);
      }
    }
  }
#pragma unroll
  for (int r = 0; r < R; ++r)
#pragma unroll
    for (int mi = 0; mi < MB; ++mi) {
      float s = warp_sum(acc[r][mi]);
      if (lane == 0) red[warp][r * MB + mi] = s;
    }
  __syncthreads();
  if (threadIdx.x < R * MB) {
    const int r = threadIdx.x / MB, mi = threadIdx.x - r * MB;
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < KS; ++k) s += red[k][threadIdx.x];
    if (mi < m && row0 + r < rows) y[(size_t)mi * rows + row0 + r] = s;
  }
}

// The end of the tensor-core GEMVs (v6-v10): each warp's C fragments (c0, c1 = row g, tokens 2t, 2t+1; c2, c3 =
// row g + 8, same tokens) into shared memory, then the KS warps' partial sums added and written to y (consecutive
// threads: consecutive rows, coalesced).
template <int NT, int MT, int KS>
__device__ __forceinline__ void reduce_tiles(float (&red)[KS][MT * 16][NT * 8 + 1], const float (&acc)[MT][NT][4],
                                             int warp, int g, int t, int m, int rows, int rowBase,
                                             float* __restrict__ y) {
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt) {
      red[warp][mt * 16 + g][nt * 8 + 2 * t] = acc[mt][nt][0];
      red[warp][mt * 16 + g][nt * 8 + 2 * t + 1] = acc[mt][nt][1];
      red[warp][mt * 16 + g + 8][nt * 8 + 2 * t] = acc[mt][nt][2];
      red[warp][mt * 16 + g + 8][nt * 8 + 2 * t + 1] = acc[mt][nt][3];
    }
  __syncthreads();
  for (int i = threadIdx.x; i < MT * 16 * NT * 8; i += KS * 32) {
    const int r = i % (MT * 16), tk = i / (MT * 16);
    float s = 0.f;
#pragma unroll
    for (int k = 0; k < KS; ++k) s += red[k][r][tk];
    if (tk < m && rowBase + r < rows) y[(size_t)tk * rows + rowBase + r] = s;
  }
}

// ---- int4 decode GEMV on tensor cores, "swap AB" (2 <= m <= 16) ----------------------------------------------------
// mma.sync m16n8k16 bf16 with the weights as A (16 output rows x 16 k) and the m tokens as B (NT n-tiles of 8 tokens),
// fp32 accumulate. A block of KS warps owns 16*MT output rows; its warps split the 128-column "super-steps" of those
// rows (super-step s goes to warp s % KS). In a super-step, lane (g = lane/4, t = lane%4) loads the 16-byte chunk
// (32 columns, base + 32t ..) of rows g and g+8 of each m-tile, and reads the fp32 x of tokens g (+8) at the same 32
// columns (float4 __ldg, L1/L2 resident), converted to bf16 in registers. The k order inside an mma is a permutation
// of the columns, the same for A and B: for word w (columns 8w..8w+7 of the chunk) and half h, the k-step uses
// columns (2h, 2h+4) as slots (2t, 2t+1) and (2h+1, 2h+5) as slots (2t+8, 2t+9); the nibbles land in bf16 halves
// with one LOP3 each (0x4300 | q = 128 + q), an HSUB2 of (128 + zero) makes q - zero exactly.
// kScaleInA = false (group % 128 == 0): a super-step lies in one group; A = q - zero exact, the mma runs on fresh
//   accumulators and the scale multiplies its fp32 result once (error: x rounded to bf16 only).
// kScaleInA = true (other groups): A = bf16((q - zero) * scale) computed in fp32, as the m > 16 tensor-core path.
template <int NT, int MT, int KS, int U, bool kScaleInA>
__global__ void __launch_bounds__(KS * 32, 512 / (KS * 32)) int4_gemv_tc(const float* __restrict__ x, Int4Fmt f,
                                                        float* __restrict__ y, int m, int rows, int cols) {
  __shared__ float red[KS][MT * 16][NT * 8 + 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int rowBase = blockIdx.x * (16 * MT);
  const int nch = cols >> 5, nss = (nch + 3) >> 2;
  int rowA[MT], rowB[MT];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt) {
    rowA[mt] = min(rowBase + mt * 16 + g, rows - 1);
    rowB[mt] = min(rowBase + mt * 16 + g + 8, rows - 1);
  }
  const float* xr[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) xr[nt] = x + (size_t)min(g + 8 * nt, m - 1) * cols;
  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

  for (int s0 = warp; s0 < nss; s0 += KS * U) {
    uint4 wa[U][MT], wb[U][MT];
    float sa[U][MT], sb[U][MT], za[U][MT], zb[U][MT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = (s0 + u * KS) * 4 + t;
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        if (c < nch) {
          wa[u][mt] = ld_stream(f.chunk(rowA[mt], c));
          wb[u][mt] = ld_stream(f.chunk(rowB[mt], c));
        } else {
          wa[u][mt] = make_uint4(0, 0, 0, 0);
          wb[u][mt] = make_uint4(0, 0, 0, 0);
        }
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int c = min((s0 + u * KS) * 4 + t, nch - 1);
#pragma unroll
      for (int mt = 0; mt < MT; ++mt) {
        size_t ga = (size_t)rowA[mt] * f.ngroups + f.gidx(c), gb = (size_t)rowB[mt] * f.ngroups + f.gidx(c);
        sa[u][mt] = __ldg(f.scales + ga);
        sb[u][mt] = __ldg(f.scales + gb);
        za[u][mt] = f.zeros ? (float)__ldg(f.zeros + ga) : 8.f;
        zb[u][mt] = f.zeros ? (float)__ldg(f.zeros + gb) : 8.f;
      }
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const int s = s0 + u * KS;
      if (s < nss) {  // warp-uniform
        const int c = s * 4 + t;
        const bool cv = c < nch;
        float d[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) d[mt][nt][i] = kScaleInA ? acc[mt][nt][i] : 0.f;
        __nv_bfloat162 zA[MT], zB[MT];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt) {
          zA[mt] = __float2bfloat162_rn(128.f + za[u][mt]);
          zB[mt] = __float2bfloat162_rn(128.f + zb[u][mt]);
        }
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) {
          uint32_t b[NT][4];  // [h*2 + 0] = b0 of k-step h, [h*2 + 1] = b1
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            float4 xa = make_float4(0.f, 0.f, 0.f, 0.f), xb = xa;
            if (cv) {
              const float4* xp = reinterpret_cast<const float4*>(xr[nt] + (size_t)c * 32 + wi * 8);
              xa = __ldg(xp);
              xb = __ldg(xp + 1);
            }
            b[nt][0] = pack_bf16(xa.x, xb.x);
            b[nt][1] = pack_bf16(xa.y, xb.y);
            b[nt][2] = pack_bf16(xa.z, xb.z);
            b[nt][3] = pack_bf16(xa.w, xb.w);
          }
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            uint32_t pa[4], pb[4];
            const uint4& va = wa[u][mt];
            const uint4& vb = wb[u][mt];
            uint32_t wA = wi == 0 ? va.x : wi == 1 ? va.y : wi == 2 ? va.z : va.w;
            uint32_t wB = wi == 0 ? vb.x : wi == 1 ? vb.y : wi == 2 ? vb.z : vb.w;
            if constexpr (!kScaleInA) {
#pragma unroll
              for (int i = 0; i < 4; ++i) {
                uint32_t ra = ((wA >> (4 * i)) & 0x000F000Fu) | 0x43004300u;
                uint32_t rb = ((wB >> (4 * i)) & 0x000F000Fu) | 0x43004300u;
                __nv_bfloat162 ha = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&ra), zA[mt]);
                __nv_bfloat162 hb = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&rb), zB[mt]);
                pa[i] = *reinterpret_cast<uint32_t*>(&ha);
                pb[i] = *reinterpret_cast<uint32_t*>(&hb);
              }
            } else {
              float qa[8], qb[8];
              dequant8(wA, 8388608.f + za[u][mt], qa);
              dequant8(wB, 8388608.f + zb[u][mt], qb);
#pragma unroll
              for (int i = 0; i < 4; ++i) {
                pa[i] = pack_bf16(qa[i] * sa[u][mt], qa[i + 4] * sa[u][mt]);
                pb[i] = pack_bf16(qb[i] * sb[u][mt], qb[i + 4] * sb[u][mt]);
              }
            }
#pragma unroll
            for (int h = 0; h < 2; ++h)
#pragma unroll
              for (int nt = 0; nt < NT; ++nt)
                mma_bf16(d[mt][nt], pa[2 * h], pb[2 * h], pa[2 * h + 1], pb[2 * h + 1], b[nt][2 * h], b[nt][2 * h + 1]);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            if constexpr (kScaleInA) {
#pragma unroll
              for (int i = 0; i < 4; ++i) acc[mt][nt][i] = d[mt][nt][i];
            } else {
              acc[mt][nt][0] = fmaf(sa[u][mt], d[mt][nt][0], acc[mt][nt][0]);
              acc[mt][nt][1] = fmaf(sa[u][mt], d[mt][nt][1], acc[mt][nt][1]);
              acc[mt][nt][2] = fmaf(sb[u][mt], d[mt][nt][2], acc[mt][nt][2]);
              acc[mt][nt][3] = fmaf(sb[u][mt], d[mt][nt][3], acc[mt][nt][3]);
            }
          }
      }
    }
  }
  reduce_tiles<NT, MT, KS>(red, acc, warp, g, t, m, rows, rowBase, y);
}

// ---- int4 decode GEMV on tensor cores, pipelined, cheap unpack (v10; 1 <= m <= 16, group % 128 == 0) -------------
// int4_gemv_tc's layout (swap AB: weights as A, m16n8k16 bf16, fp32 accumulate; KS warps split the 128-column
// super-steps of 16*MT rows; lane (g, t) owns the 16-byte chunk 4s+t of rows g and g+8 of each m-tile and the same
// k permutation), with:
//  - a register ring of P super-steps: the weight chunks, scales and zeros of super-step s + (P-1)*KS are issued
//    before the mma of super-step s, so every warp keeps P-1..P super-steps (MT * 2 * 16 bytes per lane each) of
//    loads in flight all along its K range instead of draining between rounds;
//  - unpack per 32-bit word (8 nibbles, columns 0..7): LOP3 (w >> 4i) & 0x000f000f | 0x43004300 = bf16x2
//    (128 + q_i, 128 + q_{i+4}) exactly, i = 0..3 (3 SHF + 4 LOP3), then one HSUB2 of bf16x2 (128 + zero) each,
//    exact: 11 instructions per 8 weights; the bf16x2 (128 + zero) is built with integer ops (0x4300 | zero);
//  - tokens >= m read no x (zeros in B), so m = 1 loads one token's x, not eight;
//  - the group scale multiplies the fp32 mma result of each super-step once (a super-step lies in one group).
// Other groups go to int4_gemv_tc (v9) in the launcher.
__device__ __forceinline__ uint32_t nib_pair_bf16(uint32_t w) {
  uint32_t r;  // (w & 0x000f000f) | 0x43004300: bf16x2 (128 + low nibble of each half)
  asm("lop3.b32 %0, %1, %2, %3, 0xEA;" : "=r"(r) : "r"(w), "n"(0x000f000f), "n"(0x43004300));
  return r;
}

__device__ __forceinline__ uint32_t hsub2_bf16(uint32_t a, uint32_t b) {
  __nv_bfloat162 r = __hsub2(*reinterpret_cast<__nv_bfloat162*>(&a), *reinterpret_cast<__nv_bfloat162*>(&b));
  return *reinterpret_cast<uint32_t*>(&r);
}

// x (L1/L2 resident) read in program order with the weight loads and the mma (asm volatile, like both), so that the
// x of one word (8 registers per n-tile), not of a whole super-step, is live at a time.
__device__ __forceinline__ float4 ld_x4(const float4* p) {
  float4 v;
  asm volatile("ld.global.nc.v4.f32 {%0,%1,%2,%3}, [%4];" : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w) : "l"(p));
  return v;
}

template <int NT, int MT, int KS, int P>
__global__ void __launch_bounds__(KS * 32, 512 / (KS * 32)) int4_gemv_tc_pipe(const float* __restrict__ x, Int4Fmt f,
                                                             float* __restrict__ y, int m, int rows, int cols) {
  __shared__ float red[KS][MT * 16][NT * 8 + 1];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const int g = lane >> 2, t = lane & 3;
  const int rowBase = blockIdx.x * (16 * MT);
  const int nss = cols >> 7;  // cols % 128 == 0 (group % 128 == 0)
  const int gsh = f.gshift;   // group = 32 << gsh when >= 0: group index of super-step s = (4 s) >> gsh
  uint32_t wo[MT][2];         // byte offset of chunk t of super-step 0 of each row (weights < 4 GB: launcher)
  int so[MT][2];              // row * ngroups
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int h = 0; h < 2; ++h) {
      const int row = min(rowBase + mt * 16 + g + 8 * h, rows - 1);
      wo[mt][h] = (uint32_t)((size_t)row * f.rowBytes) + t * 16;
      so[mt][h] = row * f.ngroups;
    }
  uint32_t xo[NT];  // float offset of token g + 8 nt, columns 32t.. of super-step 0 (x < 16 GB: launcher)
  bool xv[NT];
#pragma unroll
  for (int nt = 0; nt < NT; ++nt) {
    xv[nt] = g + 8 * nt < m;
    xo[nt] = (uint32_t)min(g + 8 * nt, m - 1) * (uint32_t)cols + t * 32;
  }
  float acc[MT][NT][4];
#pragma unroll
  for (int mt = 0; mt < MT; ++mt)
#pragma unroll
    for (int nt = 0; nt < NT; ++nt)
#pragma unroll
      for (int i = 0; i < 4; ++i) acc[mt][nt][i] = 0.f;

  uint4 wv[P][MT][2];
  float sc[P][MT][2];
  uint32_t zq[P][MT][2];
  // Issues the loads of super-step s into ring slot `slot` (compile-time after unrolling).
#define TPS_V10_LOAD(slot, s)                                                                             \
  do {                                                                                                    \
    const int gi_ = gsh >= 0 ? ((s) << 2) >> gsh : ((s) << 7) / f.group;                                  \
    _Pragma("unroll") for (int mt = 0; mt < MT; ++mt) _Pragma("unroll") for (int h = 0; h < 2; ++h) {     \
      wv[slot][mt][h] = ld_stream(f.q + (wo[mt][h] + (uint32_t)(s) * 64u));                               \
      sc[slot][mt][h] = __ldg(f.scales + so[mt][h] + gi_);                                                \
      zq[slot][mt][h] = f.zeros ? (uint32_t)__ldg(f.zeros + so[mt][h] + gi_) : 8u;                        \
    }                                                                                                     \
  } while (0)

#pragma unroll
  for (int p = 0; p < P - 1; ++p) {
    const int s = warp + p * KS;
    if (s < nss) TPS_V10_LOAD(p, s);
  }
  for (int s0 = warp; s0 < nss; s0 += P * KS) {
#pragma unroll
    for (int p = 0; p < P; ++p) {
      const int s = s0 + p * KS;
      const int sn = s + (P - 1) * KS;
      if (sn < nss) TPS_V10_LOAD((p + P - 1) % P, sn);  // warp-uniform
      if (s < nss) {                                    // warp-uniform
        float d[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt)
#pragma unroll
            for (int i = 0; i < 4; ++i) d[mt][nt][i] = 0.f;
        uint32_t zz[MT][2];  // bf16x2 (128 + zero), exact for zero < 128
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int h = 0; h < 2; ++h) zz[mt][h] = (zq[p][mt][h] * 0x00010001u) | 0x43004300u;
#pragma unroll
        for (int wi = 0; wi < 4; ++wi) {
          uint32_t b[NT][4];  // (cols i, i+4) of this word for token g + 8 nt
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            float4 xa = make_float4(0.f, 0.f, 0.f, 0.f), xb = xa;
            if (xv[nt]) {
              const float4* xp = reinterpret_cast<const float4*>(x + (xo[nt] + (uint32_t)s * 128u + wi * 8));
              xa = ld_x4(xp);
              xb = ld_x4(xp + 1);
            }
            b[nt][0] = pack_bf16(xa.x, xb.x);
            b[nt][1] = pack_bf16(xa.y, xb.y);
            b[nt][2] = pack_bf16(xa.z, xb.z);
            b[nt][3] = pack_bf16(xa.w, xb.w);
          }
#pragma unroll
          for (int mt = 0; mt < MT; ++mt) {
            uint32_t a[2][4];  // [row g / g+8][i] = bf16x2 (q - zero) of cols (i, i+4)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
              const uint4& v = wv[p][mt][h];
              const uint32_t w = wi == 0 ? v.x : wi == 1 ? v.y : wi == 2 ? v.z : v.w;
              a[h][0] = hsub2_bf16(nib_pair_bf16(w), zz[mt][h]);
              a[h][1] = hsub2_bf16(nib_pair_bf16(w >> 4), zz[mt][h]);
              a[h][2] = hsub2_bf16(nib_pair_bf16(w >> 8), zz[mt][h]);
              a[h][3] = hsub2_bf16(nib_pair_bf16(w >> 12), zz[mt][h]);
            }
#pragma unroll
            for (int kh = 0; kh < 2; ++kh)
#pragma unroll
              for (int nt = 0; nt < NT; ++nt)
                mma_bf16(d[mt][nt], a[0][2 * kh], a[1][2 * kh], a[0][2 * kh + 1], a[1][2 * kh + 1], b[nt][2 * kh],
                         b[nt][2 * kh + 1]);
          }
        }
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
          for (int nt = 0; nt < NT; ++nt) {
            acc[mt][nt][0] = fmaf(sc[p][mt][0], d[mt][nt][0], acc[mt][nt][0]);
            acc[mt][nt][1] = fmaf(sc[p][mt][0], d[mt][nt][1], acc[mt][nt][1]);
            acc[mt][nt][2] = fmaf(sc[p][mt][1], d[mt][nt][2], acc[mt][nt][2]);
            acc[mt][nt][3] = fmaf(sc[p][mt][1], d[mt][nt][3], acc[mt][nt][3]);
          }
      }
    }
  }
#undef TPS_V10_LOAD
  reduce_tiles<NT, MT, KS>(red, acc, warp, g, t, m, rows, rowBase, y);
}

template <int R, int KS, int U>
cudaError_t launch_simt(const float* x, const Int4Fmt& f, float* y, int m, int rows, int cols, cudaStream_t s) {
  dim3 grid((rows + R - 1) / R);
  if (m == 1) int4_gemv_simt<1, R, KS, U><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  else if (m == 2) int4_gemv_simt<2, R, KS, U><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  else int4_gemv_simt<4, R, KS, (R * U > 4 ? U / 2 : U)><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);  // regs
  return cudaGetLastError();
}

template <int MT, int KS, int U>
cudaError_t launch_tc_gemv(const float* x, const Int4Fmt& f, float* y, int m, int rows, int cols, cudaStream_t s) {
  dim3 grid((rows + 16 * MT - 1) / (16 * MT));
  const bool fast = f.group % 128 == 0;
  if (m <= 8) {
    if (fast) int4_gemv_tc<1, MT, KS, U, false><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
    else int4_gemv_tc<1, MT, KS, U, true><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  } else {  // two n-tiles: half the rounds in flight when MT * U >= 4 (128 registers, no spills)
    constexpr int U2 = MT * U >= 4 ? U / 2 : U;
    if (fast) int4_gemv_tc<2, MT, KS, U2, false><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
    else int4_gemv_tc<2, MT, KS, U2, true><<<grid, KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  }
  return cudaGetLastError();
}

// v10: the pipelined tensor-core GEMV where group % 128 == 0, else v9 (int4_gemv_tc with the scale in A).
// m <= 8: one n-tile, MT1 m-tiles, P1 super-steps in the ring; m = 9..16: two n-tiles, MT2, P2 (128 registers).
template <int KS, int MT1, int P1, int MT2, int P2>
cudaError_t launch_tc_pipe(const float* x, const Int4Fmt& f, float* y, int m, int rows, int cols, cudaStream_t s) {
  if (f.group % 128 != 0 || (size_t)rows * f.rowBytes > 0xFFFFFFFFu || (size_t)m * cols > 0xFFFFFFFFu)
    return launch_tc_gemv<2, 8, 2>(x, f, y, m, rows, cols, s);
  if (m <= 8) {
    int4_gemv_tc_pipe<1, MT1, KS, P1><<<(rows + 16 * MT1 - 1) / (16 * MT1), KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  } else {
    int4_gemv_tc_pipe<2, MT2, KS, P2><<<(rows + 16 * MT2 - 1) / (16 * MT2), KS * 32, 0, s>>>(x, f, y, m, rows, cols);
  }
  return cudaGetLastError();
}

struct VariantInfo {
  const char* name;
  int minM, maxM;
  bool bf16;
};
const VariantInfo kVariants[kInt4VariantCount] = {
    {"auto (int4_matmul)", 1, 1 << 30, false},
    {"legacy smem gemv", 1, 16, false},
    {"simt R1 KS4 U4", 1, 4, false},
    {"simt R2 KS4 U4", 1, 4, false},
    {"simt R4 KS4 U2", 1, 4, false},
    {"simt R2 KS8 U2", 1, 4, false},
    {"tc MT1 KS4 U4", 1, 16, true},
    {"tc MT2 KS4 U2", 1, 16, true},
    {"tc MT1 KS8 U2", 1, 16, true},
    {"tc MT2 KS8 U2", 1, 16, true},
    {"tc pipe KS8 P3", 1, 16, true},
};

// Default per m (variant numbers above): m = 1 stays fp32 (golden tests), m >= 2 tensor cores.
// Chosen from check_matmul on an H200 (2026-11-26, bench/results/gpu/*run5-check_matmul.log): the shared-memory
// fp32 GEMV (v1) at m = 1 (fastest on 4096x4096 and 4096x11008, and fp32-exact); the pipelined tensor-core GEMV
// (v10) at m = 2..8 (22016x4096: 24.5 us at m = 2 against v9's 31.0); v9 (two 16-row tiles per warp) at m = 9..16
// (22016x4096: 71.7 us at m = 16 against v10's 127.6).
int default_variant(int m) { return m == 1 ? 1 : m <= 8 ? 10 : 9; }

// Launches variant v (1..) for a vector-eligible call with m <= 16; cudaErrorNotSupported if v does not apply.
cudaError_t launch_int4_variant(const float* x, const Int4Fmt& f, float* y, int m, int rows, int cols, int v,
                                cudaStream_t s) {
  if (v < 1 || v >= kInt4VariantCount || m < kVariants[v].minM || m > kVariants[v].maxM) return cudaErrorNotSupported;
  switch (v) {
    case 1: {
      if (m == 1) return launch_gemv_vec<Int4Fmt, 1>(x, f, y, m, rows, cols, s);
      if (m == 2) return launch_gemv_vec<Int4Fmt, 2>(x, f, y, m, rows, cols, s);
      if (m <= 4) return launch_gemv_vec<Int4Fmt, 4>(x, f, y, m, rows, cols, s);
      if (m <= 8) return launch_gemv_vec<Int4Fmt, 8>(x, f, y, m, rows, cols, s);
      return launch_gemv_vec<Int4Fmt, 16>(x, f, y, m, rows, cols, s);
    }
    case 2: return launch_simt<1, 4, 4>(x, f, y, m, rows, cols, s);
    case 3: return launch_simt<2, 4, 4>(x, f, y, m, rows, cols, s);
    case 4: return launch_simt<4, 4, 2>(x, f, y, m, rows, cols, s);
    case 5: return launch_simt<2, 8, 2>(x, f, y, m, rows, cols, s);
    case 6: return launch_tc_gemv<1, 4, 4>(x, f, y, m, rows, cols, s);
    case 7: return launch_tc_gemv<2, 4, 2>(x, f, y, m, rows, cols, s);
    case 8: return launch_tc_gemv<1, 8, 2>(x, f, y, m, rows, cols, s);
    case 9: return launch_tc_gemv<2, 8, 2>(x, f, y, m, rows, cols, s);
    case 10: return launch_tc_pipe<8, 2, 3, 1, 3>(x, f, y, m, rows, cols, s);
  }
  return cudaErrorNotSupported;
}

// TPSERVE_INT4_VARIANT, read once: 0 / unset / invalid = default dispatch.
int env_variant() {
  static const int v = [] {
    const char* e = std::getenv("TPSERVE_INT4_VARIANT");
    if (!e || !*e) return 0;
    int n = std::atoi(e);
    return (n >= 1 && n < kInt4VariantCount) ? n : 0;
  }();
  return v;
}

}  // namespace

const char* int4_variant_name(int v) { return v >= 0 && v < kInt4VariantCount ? kVariants[v].name : "?"; }
bool int4_variant_bf16(int v) { return v >= 0 && v < kInt4VariantCount && kVariants[v].bf16; }

cudaError_t int4_matmul_variant(const float* x, const Int4Weight& w, float* y, int m, int variant,
                                cudaStream_t stream) {
  if (variant == 0) return int4_matmul(x, w, y, m, stream);
  if (!int4_args_ok(x, w, y, m)) return cudaErrorInvalidValue;
  if (m > 16 || !int4_vec(x, w)) return cudaErrorNotSupported;
  Int4Fmt f = make_int4_fmt(w);
  return launch_int4_variant(x, f, y, m, w.rows, w.cols, variant, stream);
}

cudaError_t int4_decode_gemv(const float* x, const Int4Weight& w, float* y, int m, bool honorEnv, cudaStream_t stream) {
  int v = honorEnv ? env_variant() : 0;
  if (v == 0 || m < kVariants[v].minM || m > kVariants[v].maxM) v = default_variant(m);
  return launch_int4_variant(x, make_int4_fmt(w), y, m, w.rows, w.cols, v, stream);
}

}  // namespace tpserve::cuda
