// The tiled int4 GEMM (more than 16 tokens; dispatch in int4_tiled.cu, layout described there).
#include <cuda_fp16.h>

#include <atomic>

#include "int4_tiled_common.cuh"
#include "pdl.cuh"

namespace tpserve::cuda {
namespace {

using detail::kGemmWarps;

// ---- GEMM (m > 16) -----------------------------------------------------------------------------------------------
// Block: kGemmWarps (8) 16-row tiles (128 rows) and TOK tokens (64, or 32 for up to 32 tokens), as 8 / RT warps of
// RT tiles each; k in 64-column chunks through a 3-stage cp.async ring in shared memory holding the chunk's weights
// (8 x 512 B), scales and zero points, and the TOK tokens' x (prepared once for all m tokens by xprep: one fp16
// column per token, 128 B a token per chunk). Each warp unpacks the A fragments of its RT tiles once per chunk and
// runs TOK / 8 n-tiles x 4 k-steps of mma on each, so every B fragment read from shared memory feeds RT tiles
// (RT = 2 halves the block's shared memory reads per mma, which bound RT = 1); the group scale multiplies each
// chunk's fp32 result. x's 16-byte pieces are stored with piece ^ (token & 1), so the eight lanes of a quarter warp
// read eight different bank groups. Weights are read once per TOK tokens.
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;" ::: "memory"); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
}

constexpr int kGemmStages = 3;
constexpr int kGemmA = kGemmWarps * 512, kGemmS = kGemmWarps * 64, kGemmZ = kGemmWarps * 16;
/** A stage's bytes for TOK tokens: 12,928 at 64. */
__host__ __device__ constexpr int gemm_stage_bytes(int tok) { return kGemmA + kGemmS + kGemmZ + tok * 128; }

__device__ __forceinline__ void cp_async16(uint32_t dst, const void* src, bool valid) {
  // src_bytes 0: the 16 bytes are zero-filled (tokens past m)
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;" ::"r"(dst), "l"(src), "r"(valid ? 16 : 0) : "memory");
}

template <bool ZP, int RT, int TOK>
__global__ void __launch_bounds__(kGemmWarps / RT * 32) int4t_gemm(const __half* __restrict__ xp, Int4Tiled w,
                                                                   float* __restrict__ y,
                                                                   const float* __restrict__ residual, int m,
                                                                   Int4Epilogue ep, int kSplit,
                                                                   float* __restrict__ partial) {
  constexpr int NT = kGemmWarps / RT * 32, NTILE = TOK / 8, kStage = gemm_stage_bytes(TOK);  // threads, n-tiles
  extern __shared__ __align__(16) unsigned char gsm[];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int tiles = (w.rows + 15) / 16, tile0 = blockIdx.x * kGemmWarps, tok0 = blockIdx.y * TOK;
  const int KB = w.cols >> 6, GC = w.group >> 6, NG = KB / GC;
  // Split k (blockIdx.z of kSplit): chunks [kb0, kb1); the partial sums go to `partial` for gemm_splitk_reduce.
  const int KBs = (KB + kSplit - 1) / kSplit, kb0 = blockIdx.z * KBs, kb1 = min(KB, kb0 + KBs);
  const uint32_t base = (uint32_t)__cvta_generic_to_shared(gsm);
  // Loads of chunk kb into stage st: weights (512 bytes a tile, 16 a thread), scales / zeros (threads 0..39), x.
  auto issue = [&](int kb, int st) {
    const uint32_t sb = base + st * kStage;
#pragma unroll
    for (int i = 0; i < RT; ++i) {
      const int piece = threadIdx.x + i * NT;  // kGemmWarps * 32 pieces: tile piece / 32, lane piece % 32
      const int rtc = min(tile0 + (piece >> 5), tiles - 1);
      cp_async16(sb + piece * 16, w.q + ((size_t)rtc * KB + kb) * 32 + (piece & 31), true);
    }
    const int gi = kb / GC;
    if (threadIdx.x < 32) {
      const int tt = min(tile0 + (threadIdx.x >> 2), tiles - 1);
      cp_async16(sb + kGemmA + threadIdx.x * 16, w.scales + ((size_t)tt * NG + gi) * 16 + (threadIdx.x & 3) * 4, true);
    } else if (ZP && threadIdx.x < 40) {
      const int tt = min(tile0 + (int)threadIdx.x - 32, tiles - 1);
      cp_async16(sb + kGemmA + kGemmS + (threadIdx.x - 32) * 16, w.zeros + ((size_t)tt * NG + gi) * 16, true);
    }
#pragma unroll
    for (int i = 0; i < TOK * 8 / NT; ++i) {
      const int piece = threadIdx.x + i * NT;  // TOK * 8 pieces: token piece / 8, 16 bytes piece % 8
      const int n = piece >> 3, tok = tok0 + n;
      const __half* src = xp + (((size_t)kb * m + min(tok, m - 1)) * 64) + (piece & 7) * 8;
      cp_async16(sb + kGemmA + kGemmS + kGemmZ + (n * 8 + ((piece & 7) ^ (n & 1))) * 16, src, tok < m);
    }
  };
  pdl_trigger();
  pdl_wait();
#pragma unroll
  for (int p = 0; p < kGemmStages - 1; ++p) {
    if (kb0 + p < kb1) issue(kb0 + p, p);
    cp_async_commit();
  }
  float acc[RT][NTILE][4];
#pragma unroll
  for (int r = 0; r < RT; ++r)
#pragma unroll
    for (int nt = 0; nt < NTILE; ++nt) acc[r][nt][0] = acc[r][nt][1] = acc[r][nt][2] = acc[r][nt][3] = 0.f;
  for (int kb = kb0; kb < kb1; ++kb) {
    cp_async_wait<kGemmStages - 2>();
    __syncthreads();
    const unsigned char* st = gsm + ((kb - kb0) % kGemmStages) * kStage;
    uint32_t a[RT][4][4];
    float s0[RT], s1[RT];
#pragma unroll
    for (int r = 0; r < RT; ++r) {
      const int lt = warp * RT + r;  // the tile's place in the block
      const uint4 qv = *reinterpret_cast<const uint4*>(st + lt * 512 + lane * 16);
      const float* sc = reinterpret_cast<const float*>(st + kGemmA + lt * 64);
      s0[r] = sc[g], s1[r] = sc[g + 8];
      uint32_t zl = zero_lo(8u), zh = zero_hi(8u);
      if (ZP) zl = zero_lo(st[kGemmA + kGemmS + lt * 16 + g]), zh = zero_hi(st[kGemmA + kGemmS + lt * 16 + g + 8]);
      dequant_word(qv.x, zl, zh, a[r][0]);
      dequant_word(qv.y, zl, zh, a[r][1]);
      dequant_word(qv.z, zl, zh, a[r][2]);
      dequant_word(qv.w, zl, zh, a[r][3]);
    }
    const unsigned char* bs = st + kGemmA + kGemmS + kGemmZ;
#pragma unroll
    for (int nt = 0; nt < NTILE; ++nt) {
      const uint4* bp = reinterpret_cast<const uint4*>(bs + (nt * 8 + g) * 128);  // token nt * 8 + g
      const uint4 b01 = bp[(2 * t) ^ (g & 1)], b23 = bp[(2 * t + 1) ^ (g & 1)];
#pragma unroll
      for (int r = 0; r < RT; ++r) {
        float d[4] = {0.f, 0.f, 0.f, 0.f};
        mma_f16(d, a[r][0], b01.x, b01.y);
        mma_f16(d, a[r][1], b01.z, b01.w);
        mma_f16(d, a[r][2], b23.x, b23.y);
        mma_f16(d, a[r][3], b23.z, b23.w);
        acc[r][nt][0] = fmaf(s0[r], d[0], acc[r][nt][0]);
        acc[r][nt][1] = fmaf(s0[r], d[1], acc[r][nt][1]);
        acc[r][nt][2] = fmaf(s1[r], d[2], acc[r][nt][2]);
        acc[r][nt][3] = fmaf(s1[r], d[3], acc[r][nt][3]);
      }
    }
    if (kb + kGemmStages - 1 < kb1) issue(kb + kGemmStages - 1, (kb - kb0 + kGemmStages - 1) % kGemmStages);
    cp_async_commit();
  }
  cp_async_wait<0>();
  // C fragment: c0, c1 = (row g, tokens 2t, 2t+1), c2, c3 = (row g + 8, same tokens) of each n-tile.
#pragma unroll
  for (int r = 0; r < RT; ++r) {
    const int rt = tile0 + warp * RT + r;
    if (rt >= tiles) continue;
#pragma unroll
    for (int nt = 0; nt < NTILE; ++nt) {
#pragma unroll
      for (int e = 0; e < 2; ++e) {
        const int tok = tok0 + nt * 8 + 2 * t + e;
        if (tok >= m) continue;
        if (kSplit > 1) {  // rows of this tile, this split: summed (and finished) by gemm_splitk_reduce
          float* pp = partial + ((size_t)blockIdx.z * m + tok) * (tiles * 16) + rt * 16 + g;
          pp[0] = acc[r][nt][e], pp[8] = acc[r][nt][2 + e];
          continue;
        }
        if (ep.kind != Int4Epilogue::kPlain) {
          pair_epilogue(ep, w.rows, rt, g, tok, m, acc[r][nt][e], acc[r][nt][2 + e], y);
          continue;
        }
        const size_t o = (size_t)tok * w.rows;
        const int r0 = rt * 16 + g, r1 = r0 + 8;
        if (r0 < w.rows) y[o + r0] = acc[r][nt][e] + (residual ? ld_prev(residual + o + r0) : 0.f);
        if (r1 < w.rows) y[o + r1] = acc[r][nt][2 + e] + (residual ? ld_prev(residual + o + r1) : 0.f);
      }
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
      for (int z = 0; z < kSplit; ++z) s += ld_prev(partial + z * plane + (size_t)tok * rowsPad + row);
      if (residual) s += ld_prev(residual + i);
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
      a += ld_prev(pp), b += ld_prev(pp + 8);
    }
    pair_epilogue(ep, w.rows, rt, r, tok, m, a, b, y);
  }
}

}  // namespace

namespace detail {

int gemm_tokens_per_block(int m) { return m <= 32 ? 32 : kGemmTok; }

namespace {

using GemmKernel = decltype(&int4t_gemm<false, 1, 64>);

/** The instantiation for (zero points, row tiles a warp, tokens a block) and its warps a block. */
struct GemmKernelPick {
  GemmKernel kernel;
  int warps;
};
GemmKernelPick gemm_kernel(bool zp, int rt, int tok) {
  constexpr int W1 = kGemmWarps, W2 = kGemmWarps / 2;
  if (tok == 32)
    return zp ? (rt == 2 ? GemmKernelPick{int4t_gemm<true, 2, 32>, W2} : GemmKernelPick{int4t_gemm<true, 1, 32>, W1})
              : (rt == 2 ? GemmKernelPick{int4t_gemm<false, 2, 32>, W2} : GemmKernelPick{int4t_gemm<false, 1, 32>, W1});
  return zp ? (rt == 2 ? GemmKernelPick{int4t_gemm<true, 2, 64>, W2} : GemmKernelPick{int4t_gemm<true, 1, 64>, W1})
            : (rt == 2 ? GemmKernelPick{int4t_gemm<false, 2, 64>, W2} : GemmKernelPick{int4t_gemm<false, 1, 64>, W1});
}

size_t gemm_smem(int tok) { return (size_t)kGemmStages * gemm_stage_bytes(tok); }

/** Resident blocks an SM of that instantiation, asked once (one device a process); 1 if the query fails. */
int blocks_per_sm(bool zp, int rt, int tok) {
  static std::atomic<int> known[2][2][2] = {};  // [zeros][rt 2][tok 64]; 0 = not asked yet
  std::atomic<int>& slot = known[zp][rt == 2][tok == 64];
  int v = slot.load(std::memory_order_relaxed);
  if (v > 0) return v;
  const GemmKernelPick k = gemm_kernel(zp, rt, tok);
  if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&v, k.kernel, k.warps * 32, gemm_smem(tok)) != cudaSuccess ||
      v < 1) {
    cudaGetLastError();
    v = 1;
  }
  slot.store(v, std::memory_order_relaxed);
  return v;
}

}  // namespace

// The plan of least modelled time (docs/gpu-runs.md run 61, fitted on an H200): waves of blocks (the resident
// blocks per SM of each kernel, from the occupancy API) x 64-column chunks a block x a chunk's time (1.13 us with a
// row tile a warp, 1.41 us with two: two tiles a warp read each x fragment once for both, but 168 registers leave 3
// blocks an SM), plus, with k split, the reduce kernel (its reads and writes at 3 TB/s, and 2 us). Splits leave a
// block at least 8 chunks and must fit ws. TPSERVE_GEMM_RT=1|2 and TPSERVE_GEMM_SPLIT=1|2|4|8 force either.
GemmPlan gemm_plan(int rows, int cols, int m, bool zeros, size_t wsFloats) {
  static const int forcedRt = env_int("TPSERVE_GEMM_RT"), forcedSplit = env_int("TPSERVE_GEMM_SPLIT");
  const int tiles = (rows + 15) / 16, KB = cols / 64, tok = gemm_tokens_per_block(m);
  const int blocks = ((tiles + kGemmWarps - 1) / kGemmWarps) * ((m + tok - 1) / tok);
  GemmPlan best{1, forcedRt == 2 ? 2 : 1};  // what no candidate beats (a forced split that does not fit)
  double bestT = 1e30;
  for (int rt = 1; rt <= 2; ++rt) {
    if ((forcedRt == 1 || forcedRt == 2) && rt != forcedRt) continue;
    const double chunkUs = rt == 2 ? 1.41 : 1.13;
    const int perWave = blocks_per_sm(zeros, rt, tok) * sm_count();
    for (int ks = 1; ks <= 8; ks *= 2) {
      if (forcedSplit > 0 && ks != forcedSplit) continue;
      if (ks > 1 && (KB / ks < 8 || (size_t)ks * m * tiles * 16 > wsFloats)) continue;
      const int waves = (blocks * ks + perWave - 1) / perWave;
      double t = (double)waves * ((KB + ks - 1) / ks) * chunkUs;
      if (ks > 1) t += (ks + 1.0) * m * tiles * 16 * 4 / 3.0e6 + 2.0;
      if (t < bestT) bestT = t, best = GemmPlan{ks, rt};
    }
  }
  return best;
}

cudaError_t int4t_gemm_launch(const __half* xp, const Int4Tiled& w, float* y, const float* residual, int m,
                              const Int4Epilogue& ep, const GemmPlan& plan, float* ws, cudaStream_t stream) {
  const int tiles = (w.rows + 15) / 16, tok = gemm_tokens_per_block(m), kSplit = plan.kSplit;
  if ((plan.rt != 1 && plan.rt != 2) || kSplit < 1) return cudaErrorInvalidValue;
  const dim3 grid((tiles + kGemmWarps - 1) / kGemmWarps, (m + tok - 1) / tok, kSplit);
  if (grid.y > 65535) return cudaErrorInvalidValue;
  const GemmKernelPick k = gemm_kernel(w.zeros != nullptr, plan.rt, tok);
  const cudaError_t e =
      launch_pdl(k.kernel, grid, dim3(k.warps * 32), gemm_smem(tok), stream, xp, w, y, residual, m, ep, kSplit, ws);
  if (e != cudaSuccess || kSplit == 1) return e;
  return launch_pdl(gemm_splitk_reduce, dim3(4 * sm_count()), dim3(256), 0, stream, (const float*)ws, kSplit, m, w, y,
                    residual, ep);
}

}  // namespace detail
}  // namespace tpserve::cuda
