// Shared pieces of check_chain.cu (one translation unit): the matrices, the grid barrier, the per-item multiply.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

#include "check_util.cuh"
#include "kernels/int4_tiled_common.cuh"

namespace tc = tpserve::cuda;

namespace {

using tpserve::check::global_ns;
using tpserve::check::ld_acquire;
using tpserve::check::wait_at_least;

constexpr int kWarps = 16, kThreads = kWarps * 32, kGroup = 128, kMaxMats = 128;
constexpr int kBlocksPerSm = 2;

struct Mat {
  const uint4* q;
  const float* scales;
  const __half* xp;  // m = 1 prepared input (hi/lo columns)
  float* y;
  int rows, cols;
};

/**
 * The int8 consumers' x (chain_tma.cuh, chain_lean.cuh) for one matrix role: its s8 pieces (int8_pieces.cuh, engine
 * order), their scale and their sums per group (8 ints: pieces 0-2, then 0), and x itself (chain_lean.cuh's MODE 9
 * makes the pieces from it in every block). Per role rather than in Mat, whose copies fill the kernels' shared
 * memory: Bar::pieces[j % 4] is matrix j's (the chain is layer after layer of QKV, O, gate/up, down).
 */
struct XPieces {
  const uint4* xq;
  const float* sx;
  const int* ps;
  const float* xf;
};

struct Bar {
  unsigned* count;
  int* timedOut;
  long long* stamps;  // when set: (barrier, block) -> arrival and departure times (globaltimer, ns)
  const float* cum = nullptr;  // chain_kernel_bal: block b's share of every matrix is [cum[b], cum[b + 1]) (0 to 1)
  int* smids = nullptr;        // chain_kernel_bal: when set, block b writes the SM it runs on
  long long* stamps3 = nullptr;  // chain_kernel_lean: (barrier, block) -> entry, arrival, departure (globaltimer, ns)
  const XPieces* pieces = nullptr;  // the int8 consumers' x, by matrix role
  unsigned* chunks = nullptr;  // chain_kernel_lean's dataflow: matrix j's input chunk c counts [j * kChunkStride + c]
  long long* sigStats = nullptr;  // chain_kernel_lean's signaller, per block: fences, their ns, tiles released
};

/** One persistent variant of check_chain: its kernel, dynamic shared memory, block size and checks. */
struct ChainVariant {
  const char* how;
  void* fn;
  int smem;
  bool zeroY = false;     // partial tiles add into y
  bool counters = false;  // tiles claimed through per-matrix counters
  bool flow = false;      // dataflow counters instead of barriers
  int threads = kThreads, perSmCap = kBlocksPerSm;
  bool timingOnly = false;  // wrong sums by design (loads only)
  bool otherOrder = false;  // O and down summed in another order than the graph's (relative check only)
  bool chunks = false;      // Bar::chunks zeroed before each launch (chain_kernel_lean's dataflow)
};

/**
 * Grid barrier number `n` (from 0) over counters that only grow; 1 s without progress sets timedOut. Spread = 1:
 * one counter. Spread = S > 1: block b arrives on counter b % S (each in its own 128-byte line), and the first S
 * lanes of warp 0 poll one counter each and sum them, so no counter takes more than gridDim / S arrivals.
 */
/** The kThreads computing threads of a block (named barrier 1: chain_kernel's extra prefetch warp, PF, stays out). */
__device__ __forceinline__ void block_sync() { asm volatile("bar.sync 1, %0;" ::"n"(kThreads) : "memory"); }

template <int Spread>
__device__ __forceinline__ void grid_barrier(const Bar& b, unsigned n) {
  block_sync();
  const unsigned target = (n + 1) * gridDim.x;
  if (Spread == 1) {
    if (threadIdx.x == 0) {
      long long* st = b.stamps ? b.stamps + ((size_t)n * gridDim.x + blockIdx.x) * 2 : nullptr;
      if (st) st[0] = global_ns();
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(b.count) : "memory");
      wait_at_least(b.count, target, b.timedOut);
      if (st) st[1] = global_ns();
    }
  } else if (threadIdx.x < 32) {
    const int lane = threadIdx.x;
    if (lane == 0)
      asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(b.count + (blockIdx.x % Spread) * 32) : "memory");
    const long long t0 = global_ns();
    for (int k = 0;; k++) {
      unsigned v = lane < Spread ? ld_acquire(b.count + lane * 32) : 0u;
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (v >= target) break;
      if ((k & 1023) == 1023 && global_ns() - t0 > 1000000000LL) {
        if (lane == 0) atomicExch(b.timedOut, 1);
        break;
      }
    }
  }
  block_sync();
}

/** This warp's groups of a tile of matrix m: warp, warp + kWarps, ... */
__device__ __forceinline__ int groups_of(const Mat& m, int warp) {
  const int ng = m.cols / kGroup;
  return warp < ng ? (ng - warp + kWarps - 1) / kWarps : 0;
}

/** The warp's item after (j, tile, u), in the order the main loop consumes them; false past the last matrix. */
__device__ __forceinline__ bool next_item(const Mat* mats, int nMats, int warp, int& j, int& tile, int& u) {
  if (++u < groups_of(mats[j], warp)) return true;
  u = 0;
  tile += gridDim.x;
  while (j < nMats && (tile >= (mats[j].rows + 15) / 16 || groups_of(mats[j], warp) == 0)) {
    if (++j < nMats) tile = blockIdx.x;
  }
  return j < nMats;
}

/**
 * A tile's U items through a two-slot register ring: item(slot, u) for u = 0 .. U - 1, the slot (an
 * std::integral_constant, so the ring stays in registers) alternating from `par`, which is left at the next one.
 */
template <class Item>
__device__ __forceinline__ void ring_items(Item&& item, int U, int& par) {
  const std::integral_constant<int, 0> I0;
  const std::integral_constant<int, 1> I1;
  for (int u = 0; u < U; u += 2) {
    if (par == 0) {
      item(I0, u);
      if (u + 1 < U) item(I1, u + 1);
    } else {
      item(I1, u);
      if (u + 1 < U) item(I0, u + 1);
    }
  }
  if (U & 1) par ^= 1;
}

/** Each warp's sums of a tile's 16 rows into red[buf], then one block_sync. */
__device__ __forceinline__ void tile_to_red(float (&red)[2][kWarps][16], int buf, int warp, int g, int t,
                                            const float (&acc)[4]) {
  if (t == 0) red[buf][warp][g] = acc[0] + acc[1], red[buf][warp][g + 8] = acc[2] + acc[3];
  block_sync();
}

/** Row threadIdx.x's (< 16) total over the warps in red[buf], in warp order. */
__device__ __forceinline__ float red_sum(const float (&red)[2][kWarps][16], int buf) {
  float s = 0.f;
  for (int k = 0; k < kWarps; ++k) s += red[buf][k][threadIdx.x];
  return s;
}

/** This lane's weights (wq) and the scales (wsc) of tile `tile` of m. */
__device__ __forceinline__ const uint4* tile_q(const Mat& m, int tile, int lane) {
  return m.q + (size_t)tile * (m.cols >> 6) * 32 + lane;
}
__device__ __forceinline__ const float* tile_scales(const Mat& m, int tile) {
  return m.scales + (size_t)tile * (m.cols / kGroup) * 16;
}

/** Loads group gi of a tile for this lane: its two 64-column chunks into q, rows g and g + 8's scales into s0, s1. */
__device__ __forceinline__ void load_group(const uint4* wq, const float* wsc, int gi, int g, uint4 (&q)[2], float& s0,
                                           float& s1) {
  q[0] = tc::ld_stream(wq + (size_t)(gi * 2) * 32);
  q[1] = tc::ld_stream(wq + (size_t)(gi * 2 + 1) * 32);
  s0 = __ldg(wsc + gi * 16 + g), s1 = __ldg(wsc + gi * 16 + g + 8);
}
__device__ __forceinline__ void load_group(const Mat& m, int tile, int gi, int lane, int g, uint4 (&q)[2], float& s0,
                                           float& s1) {
  const uint4* wq = tile_q(m, tile, lane);
  q[0] = tc::ld_stream(wq + (size_t)(gi * 2) * 32);
  q[1] = tc::ld_stream(wq + (size_t)(gi * 2 + 1) * 32);
  const float* wsc = tile_scales(m, tile);
  s0 = __ldg(wsc + gi * 16 + g), s1 = __ldg(wsc + gi * 16 + g + 8);
}

/** One item: group gi's two 64-column chunks (q0, q1) of a tile times the prepared x, scaled into acc. */
__device__ __forceinline__ void group_mma(const uint4& q0, const uint4& q1, float s0, float s1,
                                          const __half* __restrict__ xp, int gi, int g, int t, float (&acc)[4]) {
  const uint32_t zlo = tc::zero_lo(8u), zhi = tc::zero_hi(8u);  // symmetric weights
  float d[4] = {0.f, 0.f, 0.f, 0.f};
  tc::one_token_chunk(q0, xp, gi * 2, g, t, zlo, zhi, d);
  tc::one_token_chunk(q1, xp, gi * 2 + 1, g, t, zlo, zhi, d);
  acc[0] = fmaf(s0, d[0], acc[0]);
  acc[1] = fmaf(s0, d[1], acc[1]);
  acc[2] = fmaf(s1, d[2], acc[2]);
  acc[3] = fmaf(s1, d[3], acc[3]);
}

// Dataflow instead of barriers (Flow): group gi of matrix j reads the input chunk gi, which here stands for the
// outputs of tiles [gi T / G, (gi + 1) T / G) of matrix j - 1 (T its tiles, G matrix j's groups a row); a producer
// tile adds 1 to its chunk's counter (release) once its y is stored, and the consumer warp waits (acquire) for the
// chunk's count before its first multiply with that group (the weights are loaded already).
constexpr int kChunkStride = 128;  // counters per matrix (groups a row <= 128)

__device__ __forceinline__ int chunk_lo(int c, int T, int G) { return (int)((long long)c * T / G); }

__device__ __forceinline__ int chunk_of(int tile, int T, int G) {
  int c = (int)((long long)tile * G / T);
  while (chunk_lo(c + 1, T, G) <= tile) ++c;
  while (c > 0 && chunk_lo(c, T, G) > tile) --c;
  return c;
}

}  // namespace
