// check_chain --tma's list of variants: the register-ring references (chain_kernels.cuh), the deep rings
// (chain_tma.cuh) and the lean consumer (chain_lean.cuh), in the order of docs/gpu-runs.md's runs 106-118.
#pragma once
#include <vector>

#include "chain_lean.cuh"
#include "chain_tma.cuh"

namespace {

/** check_chain --tma: runs 106-118 (docs/gpu-runs.md), the register-ring references first. */
inline std::vector<ChainVariant> deep_ring_variants() {
  using V = ChainVariant;
  const auto fn = [](auto f) { return reinterpret_cast<void*>(f); };
  const auto ring = [](const char* how, void* f, int smem, int cw, int perSm = 1) {  // a deep-ring block
    V v{how, f, smem, true};
    v.threads = (cw + 1) * 32, v.perSmCap = perSm;
    return v;
  };
  const auto claimed = [&](const char* how, void* f, int smem, int cw) {  // whole tiles: y stored, not added
    V v = ring(how, f, smem, cw);
    v.zeroY = false, v.counters = true;
    return v;
  };
  const auto timing = [](V v) {
    v.timingOnly = true;
    return v;
  };
  const auto order = [](V v) {  // O and down summed in another order (int8, two chains, other warp counts)
    v.otherOrder = true;
    return v;
  };
  const auto lean = [&](const char* how, void* f, int smem, int cw) {  // chain_kernel_lean: a reducer warp more
    V v = order(claimed(how, f, smem, cw));
    v.threads = (cw + 2) * 32;
    return v;
  };
  const auto flow = [&](const char* how, void* f, int smem, int cw, bool signaller, bool waiter = false) {  // run 122
    V v = lean(how, f, smem, cw);
    v.chunks = true;
    v.threads = (cw + 2 + signaller + waiter) * 32;
    return v;
  };
  const auto pf = [](const char* how, void* f) {  // the register ring and one prefetch warp
    V v{how, f, 0};
    v.threads = kThreads + 32;
    return v;
  };
  constexpr int R16x1x12 = tma_ring_bytes<16, 1, 12>(), R16x2x6 = tma_ring_bytes<16, 2, 6>(),
                R16x1x5 = tma_ring_bytes<16, 1, 5>(), XS = tma_xs_bytes();
  return {
      // references: the register ring (chain_kernels.cuh)
      {"persistent, grid barriers", fn(chain_kernel<true>), 0},
      {"persistent, no barriers", fn(chain_kernel<false>), 0},
      {"balanced, grid barriers", fn(chain_kernel_bal<true>), 0, true},
      {"tiles claimed, grid barriers", fn(chain_kernel_dyn<true>), 0, false, true},
      // run 106: fixed shares, a named barrier at each tile's end
      ring("deep ring 16w x1 D12, grid barriers", fn(chain_kernel_tma<true, 16, 1, 12>), R16x1x12, 16),
      ring("deep ring 16w x1 D12, no barriers", fn(chain_kernel_tma<false, 16, 1, 12>), R16x1x12, 16),
      ring("deep ring 16w x1 D4, grid barriers", fn(chain_kernel_tma<true, 16, 1, 4>), tma_ring_bytes<16, 1, 4>(), 16),
      ring("deep ring 16w x2 D6, grid barriers", fn(chain_kernel_tma<true, 16, 2, 6>), R16x2x6, 16),
      order(ring("deep ring 24w x1 D8, grid barriers", fn(chain_kernel_tma<true, 24, 1, 8>), tma_ring_bytes<24, 1, 8>(),
                 24)),
      order(ring("deep ring 8w x2 D12, grid barriers", fn(chain_kernel_tma<true, 8, 2, 12>), tma_ring_bytes<8, 2, 12>(),
                 8)),
      order(ring("deep ring 8w x1 D24, grid barriers", fn(chain_kernel_tma<true, 8, 1, 24>), tma_ring_bytes<8, 1, 24>(),
                 8)),
      // run 107: the last warp of a tile adds the sums (no block-wide wait); loads only
      ring("deep ring 16w x2 D6 last-warp sums, grid barriers", fn(chain_kernel_tma<true, 16, 2, 6, true>), R16x2x6,
           16),
      ring("deep ring 16w x2 D6 last-warp sums, no barriers", fn(chain_kernel_tma<false, 16, 2, 6, true>), R16x2x6, 16),
      ring("deep ring 16w x1 D12 last-warp sums, grid barriers", fn(chain_kernel_tma<true, 16, 1, 12, true>), R16x1x12,
           16),
      order(ring("deep ring 8w x4 D6 last-warp sums, grid barriers", fn(chain_kernel_tma<true, 8, 4, 6, true>),
                 tma_ring_bytes<8, 4, 6>(), 8)),
      order(ring("deep ring 16w x4 D3 last-warp sums, grid barriers", fn(chain_kernel_tma<true, 16, 4, 3, true>),
                 tma_ring_bytes<16, 4, 3>(), 16)),
      timing(ring("deep ring 16w x2 D6, loads only, no barriers", fn(chain_kernel_tma<false, 16, 2, 6, true, 0>),
                  R16x2x6, 16)),
      timing(ring("deep ring 16w x2 D6, loads only, grid barriers", fn(chain_kernel_tma<true, 16, 2, 6, true, 0>),
                  R16x2x6, 16)),
      // run 108: tiles claimed by the producers
      claimed("deep ring claimed 16w x2 D6, grid barriers", fn(chain_kernel_tma_dyn<16, 2, 6>), R16x2x6, 16),
      claimed("deep ring claimed 16w x1 D12, grid barriers", fn(chain_kernel_tma_dyn<16, 1, 12>), R16x1x12, 16),
      timing(claimed("deep ring claimed 16w x2 D6, loads only, grid barriers", fn(chain_kernel_tma_dyn<16, 2, 6, 0>),
                     R16x2x6, 16)),
      timing(claimed("deep ring claimed 16w x1 D12, loads only, grid barriers", fn(chain_kernel_tma_dyn<16, 1, 12, 0>),
                     R16x1x12, 16)),
      // run 109: two accumulator chains; two or three blocks an SM
      order(ring("deep ring 16w x2 D6 last-warp sums, 2 chains, grid barriers",
                 fn(chain_kernel_tma<true, 16, 2, 6, true, 2>), R16x2x6, 16)),
      ring("deep ring 2 blocks/SM 16w x1 D5, grid barriers", fn(chain_kernel_tma<true, 16, 1, 5, true, 1, 2>), R16x1x5,
           16, 2),
      ring("deep ring 2 blocks/SM 16w x1 D5, no barriers", fn(chain_kernel_tma<false, 16, 1, 5, true, 1, 2>), R16x1x5,
           16, 2),
      ring("deep ring 2 blocks/SM 16w x2 D2, grid barriers", fn(chain_kernel_tma<true, 16, 2, 2, true, 1, 2>),
           tma_ring_bytes<16, 2, 2>(), 16, 2),
      ring("deep ring 3 blocks/SM 16w x1 D3, grid barriers", fn(chain_kernel_tma<true, 16, 1, 3, true, 1, 3>),
           tma_ring_bytes<16, 1, 3>(), 16, 3),
      timing(ring("deep ring 2 blocks/SM 16w x1 D5, loads only, grid barriers",
                  fn(chain_kernel_tma<true, 16, 1, 5, true, 0, 2>), R16x1x5, 16, 2)),
      // run 110: the s8 mma on x's int8 pieces
      order(ring("deep ring int8 16w x2 D6, grid barriers", fn(chain_kernel_tma<true, 16, 2, 6, true, 3>), R16x2x6,
                 16)),
      order(ring("deep ring int8 16w x2 D6, no barriers", fn(chain_kernel_tma<false, 16, 2, 6, true, 3>), R16x2x6, 16)),
      order(ring("deep ring int8 16w x1 D12, grid barriers", fn(chain_kernel_tma<true, 16, 1, 12, true, 3>), R16x1x12,
                 16)),
      order(ring("deep ring int8 2 blocks/SM 16w x1 D5, grid barriers",
                 fn(chain_kernel_tma<true, 16, 1, 5, true, 3, 2>), R16x1x5, 16, 2)),
      order(claimed("deep ring claimed int8 16w x2 D6, grid barriers", fn(chain_kernel_tma_dyn<16, 2, 6, 3>), R16x2x6,
                    16)),
      // run 115: the u8 x s8 mma (one AND a register, zero points off the int32 sums), no branch per group
      order(ring("deep ring u8 16w x2 D6, grid barriers", fn(chain_kernel_tma<true, 16, 2, 6, true, 6>), R16x2x6, 16)),
      order(ring("deep ring u8 16w x2 D6, no barriers", fn(chain_kernel_tma<false, 16, 2, 6, true, 6>), R16x2x6, 16)),
      order(ring("deep ring u8 16w x2 D3, grid barriers", fn(chain_kernel_tma<true, 16, 2, 3, true, 6>),
                 tma_ring_bytes<16, 2, 3>(), 16)),
      order(ring("deep ring u8 16w x2 D3, no barriers", fn(chain_kernel_tma<false, 16, 2, 3, true, 6>),
                 tma_ring_bytes<16, 2, 3>(), 16)),
      order(ring("deep ring u8 16w x1 D12, grid barriers", fn(chain_kernel_tma<true, 16, 1, 12, true, 6>), R16x1x12,
                 16)),
      order(ring("deep ring u8 2 blocks/SM 16w x1 D5, grid barriers", fn(chain_kernel_tma<true, 16, 1, 5, true, 6, 2>),
                 R16x1x5, 16, 2)),
      order(claimed("deep ring claimed u8 16w x2 D6, grid barriers", fn(chain_kernel_tma_dyn<16, 2, 6, 6>), R16x2x6,
                    16)),
      order(claimed("deep ring claimed u8 16w x2 D3, grid barriers", fn(chain_kernel_tma_dyn<16, 2, 3, 6>),
                    tma_ring_bytes<16, 2, 3>(), 16)),
      order(ring("deep ring u8 x in smem 16w x2 D5, grid barriers", fn(chain_kernel_tma<true, 16, 2, 5, true, 8>),
                 tma_ring_bytes<16, 2, 5>() + XS, 16)),
      order(ring("deep ring u8 x in smem 16w x2 D5, no barriers", fn(chain_kernel_tma<false, 16, 2, 5, true, 8>),
                 tma_ring_bytes<16, 2, 5>() + XS, 16)),
      order(ring("deep ring u8 x in smem 16w x2 D3, grid barriers", fn(chain_kernel_tma<true, 16, 2, 3, true, 8>),
                 tma_ring_bytes<16, 2, 3>() + XS, 16)),
      order(ring("deep ring u8 x in smem 16w x2 D3, no barriers", fn(chain_kernel_tma<false, 16, 2, 3, true, 8>),
                 tma_ring_bytes<16, 2, 3>() + XS, 16)),
      timing(ring("deep ring u8 16w x2 D3, x made up, no barriers", fn(chain_kernel_tma<false, 16, 2, 3, true, 7>),
                  tma_ring_bytes<16, 2, 3>(), 16)),
      timing(ring("deep ring u8 16w x2 D6, x made up, no barriers", fn(chain_kernel_tma<false, 16, 2, 6, true, 7>),
                  R16x2x6, 16)),
      timing(ring("deep ring u8 16w x2 D3, x made up, grid barriers", fn(chain_kernel_tma<true, 16, 2, 3, true, 7>),
                  tma_ring_bytes<16, 2, 3>(), 16)),
      timing(claimed("deep ring claimed u8 16w x2 D3, x made up, grid barriers",
                     fn(chain_kernel_tma_dyn<16, 2, 3, 7>), tma_ring_bytes<16, 2, 3>(), 16)),
      // run 118: the lean consumer (32-bit shared addresses, a reducer warp, x's lane pointers), tiles claimed
      lean("deep ring lean u8 16w D6, grid barriers", fn(chain_kernel_lean<16, 6, 6>), R16x2x6, 16),
      lean("deep ring lean u8 16w D3, grid barriers", fn(chain_kernel_lean<16, 3, 6>), tma_ring_bytes<16, 2, 3>(), 16),
      lean("deep ring lean u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6>), tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean u8 8w D12, grid barriers", fn(chain_kernel_lean<8, 12, 6>), tma_ring_bytes<8, 2, 12>(), 8),
      lean("deep ring lean u8 16w D2, grid barriers", fn(chain_kernel_lean<16, 2, 6>), tma_ring_bytes<16, 2, 2>(), 16),
      lean("deep ring lean u8 16w D3, no barriers", fn(chain_kernel_lean<16, 3, 6, false>), tma_ring_bytes<16, 2, 3>(),
           16),
      // run 119: the claims paced, at most K tiles of a matrix the consumers have not reached
      lean("deep ring lean paced K1 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 1>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K2 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 2>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K3 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 3>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 4>),
           tma_ring_bytes<16, 2, 4>(), 16),
      // run 120: x's pieces made in every block at each matrix's start (from x itself, so the same sums)
      lean("deep ring lean paced K4 u8 16w D4, x quantized here, grid barriers",
           fn(chain_kernel_lean<16, 4, 9, true, 4>), tma_ring_bytes<16, 2, 4>() + XS, 16),
      lean("deep ring lean paced K4 u8 16w D4, x quantized here, no barriers",
           fn(chain_kernel_lean<16, 4, 9, false, 4>), tma_ring_bytes<16, 2, 4>() + XS, 16),
      lean("deep ring lean u8 16w D4, x quantized here, grid barriers", fn(chain_kernel_lean<16, 4, 9>),
           tma_ring_bytes<16, 2, 4>() + XS, 16),
      // run 121: the lean kernel with the engine's fp16 multiply on x's hi/lo columns
      lean("deep ring lean paced K4 fp16 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 10, true, 4>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 fp16 16w D4, no barriers", fn(chain_kernel_lean<16, 4, 10, false, 4>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 fp16 16w D3, grid barriers", fn(chain_kernel_lean<16, 3, 10, true, 4>),
           tma_ring_bytes<16, 2, 3>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, grid barriers (again)", fn(chain_kernel_lean<16, 4, 6, true, 4>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 u8 16w D3, grid barriers", fn(chain_kernel_lean<16, 3, 6, true, 4>),
           tma_ring_bytes<16, 2, 3>(), 16),
      lean("deep ring lean paced K4 u8 16w D5, grid barriers", fn(chain_kernel_lean<16, 5, 6, true, 4>),
           tma_ring_bytes<16, 2, 5>(), 16),
      lean("deep ring lean paced K6 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 6>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K8 u8 16w D4, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 8>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean per-matrix claims unpaced u8 16w D4, grid barriers",
           fn(chain_kernel_lean<16, 4, 6, true, 1000>), tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, no barriers", fn(chain_kernel_lean<16, 4, 6, false, 4>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K2 u8 16w D3, grid barriers", fn(chain_kernel_lean<16, 3, 6, true, 2>),
           tma_ring_bytes<16, 2, 3>(), 16),
      lean("deep ring lean paced K2 u8 16w D6, grid barriers", fn(chain_kernel_lean<16, 6, 6, true, 2>), R16x2x6, 16),
      lean("deep ring lean paced K3 u8 16w D6, grid barriers", fn(chain_kernel_lean<16, 6, 6, true, 3>), R16x2x6, 16),
      lean("deep ring lean paced K2 u8 16w D4, no barriers", fn(chain_kernel_lean<16, 4, 6, false, 2>),
           tma_ring_bytes<16, 2, 4>(), 16),
      timing(lean("deep ring lean paced K2 u8 16w D4, x made up, grid barriers",
                  fn(chain_kernel_lean<16, 4, 7, true, 2>), tma_ring_bytes<16, 2, 4>(), 16)),
      lean("deep ring lean paced K1 u8 16w D3, grid barriers", fn(chain_kernel_lean<16, 3, 6, true, 1>),
           tma_ring_bytes<16, 2, 3>(), 16),
      lean("deep ring lean paced K1 u8 16w D6, grid barriers", fn(chain_kernel_lean<16, 6, 6, true, 1>),
           R16x2x6, 16),
      timing(lean("deep ring lean paced K1 u8 16w D4, x made up, grid barriers",
                  fn(chain_kernel_lean<16, 4, 7, true, 1>), tma_ring_bytes<16, 2, 4>(), 16)),
      lean("deep ring lean paced K1 u8 16w D4, no barriers", fn(chain_kernel_lean<16, 4, 6, false, 1>),
           tma_ring_bytes<16, 2, 4>(), 16),
      timing(lean("deep ring lean u8 16w D4, x made up, grid barriers", fn(chain_kernel_lean<16, 4, 7>),
                  tma_ring_bytes<16, 2, 4>(), 16)),
      timing(lean("deep ring lean u8 16w D4, x made up, no barriers", fn(chain_kernel_lean<16, 4, 7, false>),
                  tma_ring_bytes<16, 2, 4>(), 16)),
      lean("deep ring lean u8 16w D4, no barriers", fn(chain_kernel_lean<16, 4, 6, false>), tma_ring_bytes<16, 2, 4>(),
           16),
      // run 122: dependencies per input chunk instead of grid barriers (LeanFlow, chain_lean.cuh)
      flow("deep ring lean paced K4 u8 16w D4, dataflow, signaller", fn(chain_kernel_lean<16, 4, 6, false, 4, 1>),
           tma_ring_bytes<16, 2, 4>(), 16, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow paired, signaller",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 2>), tma_ring_bytes<16, 2, 4>(), 16, true),
      flow("deep ring lean paced K4 u8 16w D6, dataflow paired, signaller",
           fn(chain_kernel_lean<16, 6, 6, false, 4, 2>), R16x2x6, 16, true),
      flow("deep ring lean unpaced u8 16w D4, dataflow paired, signaller",
           fn(chain_kernel_lean<16, 4, 6, false, 1000, 2>), tma_ring_bytes<16, 2, 4>(), 16, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow paired, signaller, relaxed polls",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 5>), tma_ring_bytes<16, 2, 4>(), 16, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow whole matrix, signaller, relaxed polls",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 6>), tma_ring_bytes<16, 2, 4>(), 16, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow paired, signaller, waiter warp",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 7>), tma_ring_bytes<16, 2, 4>(), 16, true, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow whole matrix, signaller, waiter warp",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 8>), tma_ring_bytes<16, 2, 4>(), 16, true, true),
      flow("deep ring lean paced K4 u8 16w D4, dataflow paired, reducer releases",
           fn(chain_kernel_lean<16, 4, 6, false, 4, 4>), tma_ring_bytes<16, 2, 4>(), 16, false),
      lean("deep ring lean paced K4 u8 16w D4, paired, grid barriers", fn(chain_kernel_lean<16, 4, 6, true, 4, 3>),
           tma_ring_bytes<16, 2, 4>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, paired, no barriers", fn(chain_kernel_lean<16, 4, 6, false, 4, 3>),
           tma_ring_bytes<16, 2, 4>(), 16),
      // run 123: each warp makes the pieces of its own groups (MODE 11; MODE 12 keeps two groups in registers)
      lean("deep ring lean paced K4 u8 16w D4, x quantized by each warp, grid barriers",
           fn(chain_kernel_lean<16, 4, 11, true, 4>), tma_ring_bytes<16, 2, 4>() + warp_xs_bytes<16>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, x quantized by each warp, no barriers",
           fn(chain_kernel_lean<16, 4, 11, false, 4>), tma_ring_bytes<16, 2, 4>() + warp_xs_bytes<16>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, x quantized by each warp, in registers, grid barriers",
           fn(chain_kernel_lean<16, 4, 12, true, 4>), tma_ring_bytes<16, 2, 4>() + warp_xs_bytes<16>(), 16),
      lean("deep ring lean paced K4 u8 16w D4, x quantized by each warp, in registers, no barriers",
           fn(chain_kernel_lean<16, 4, 12, false, 4>), tma_ring_bytes<16, 2, 4>() + warp_xs_bytes<16>(), 16),
      lean("deep ring lean paced K4 u8 16w D3, x quantized by each warp, in registers, grid barriers",
           fn(chain_kernel_lean<16, 3, 12, true, 4>), tma_ring_bytes<16, 2, 3>() + warp_xs_bytes<16>(), 16),
      // run 112: the register ring with a warp that prefetches its block's next tiles into L2
      pf("persistent + L2 prefetch 1 tile ahead, grid barriers", fn(chain_kernel<true, 1, false, 1>)),
      pf("persistent + L2 prefetch 2 tiles ahead, grid barriers", fn(chain_kernel<true, 1, false, 2>)),
      pf("persistent + L2 prefetch 4 tiles ahead, grid barriers", fn(chain_kernel<true, 1, false, 4>)),
      pf("persistent + L2 prefetch 8 tiles ahead, grid barriers", fn(chain_kernel<true, 1, false, 8>)),
      pf("persistent + L2 prefetch 2 tiles ahead, no barriers", fn(chain_kernel<false, 1, false, 2>)),
      // run 113: x's pieces in shared memory; a shallower ring that leaves L1 room for x
      order(ring("deep ring int8 x in smem 16w x2 D5, grid barriers", fn(chain_kernel_tma<true, 16, 2, 5, true, 5>),
                 tma_ring_bytes<16, 2, 5>() + XS, 16)),
      order(ring("deep ring int8 x in smem 16w x2 D5, no barriers", fn(chain_kernel_tma<false, 16, 2, 5, true, 5>),
                 tma_ring_bytes<16, 2, 5>() + XS, 16)),
      order(ring("deep ring int8 16w x2 D3, no barriers (L1 room)", fn(chain_kernel_tma<false, 16, 2, 3, true, 3>),
                 tma_ring_bytes<16, 2, 3>(), 16)),
  };
}

}  // namespace
