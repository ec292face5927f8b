// Internal to native/cuda/kernels: the device side of the push protocol (allreduce.cuh), shared by the p2p
// collectives (allreduce.cu) and the decode GEMV whose epilogue does the all-reduce itself (int4_tiled_split.cu).
// Its pieces sit in an anonymous namespace: each file that includes it gets its own copy.
#pragma once
#include <cuda_runtime.h>

#include <cstdint>

#include "allreduce.cuh"
#include "ptx.cuh"

namespace tpserve::cuda {
namespace {

constexpr uint32_t kSentinel = 0xFFFFFFFFu;
constexpr uint32_t kCanonicalNan = 0x7FC00000u;

__device__ __forceinline__ float4 ld_volatile4(const float* p) {
  float4 v;
  asm volatile("ld.volatile.global.v4.f32 {%0, %1, %2, %3}, [%4];"
               : "=f"(v.x), "=f"(v.y), "=f"(v.z), "=f"(v.w)
               : "l"(p));
  return v;
}
__device__ __forceinline__ float ld_volatile(const float* p) {
  float v;
  asm volatile("ld.volatile.global.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ void st_volatile4(float* p, float4 v) {
  asm volatile("st.volatile.global.v4.f32 [%0], {%1, %2, %3, %4};" ::"l"(p), "f"(v.x), "f"(v.y), "f"(v.z), "f"(v.w)
               : "memory");
}
__device__ __forceinline__ void st_volatile(float* p, float v) {
  asm volatile("st.volatile.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
}
__device__ __forceinline__ bool is_sentinel(float v) { return __float_as_uint(v) == kSentinel; }
__device__ __forceinline__ float sanitize(float v) { return is_sentinel(v) ? __uint_as_float(kCanonicalNan) : v; }

/** Region `region` of slot `slot` of a rank's buffer. */
__device__ __forceinline__ float* region_of(uint8_t* base, uint32_t slot, int region, const P2pGroup& g) {
  return reinterpret_cast<float*>(base) + ((size_t)slot * g.world + region) * g.cap;
}

/** The call's slot and what the previous slot carried (read once per block, before the last block advances). */
struct Call {
  uint32_t slot, prevUsed;
};

/** The call's slot and what the previous slot carried, read by one thread (the block shares them itself). */
__device__ __forceinline__ Call read_call(const P2pGroup& g) {
  const uint32_t slot = g.state->slot % 3u;
  return Call{slot, g.state->used[(slot + 2u) % 3u]};
}

__device__ __forceinline__ Call begin_call(const P2pGroup& g) {
  __shared__ Call c;
  if (threadIdx.x == 0) c = read_call(g);
  __syncthreads();
  return c;
}

/** Stores v[0..cnt) (element idx onward of this rank's message) into every peer's slot. */
__device__ __forceinline__ void push(const P2pGroup& g, uint32_t slot, size_t idx, const float* v, int cnt) {
  for (int j = 0; j < g.world; j++) {
    if (j == g.rank) continue;
    float* dst = region_of(g.base[j], slot, g.rank, g) + idx;
    if (cnt == 4) {
      st_volatile4(dst, make_float4(sanitize(v[0]), sanitize(v[1]), sanitize(v[2]), sanitize(v[3])));
    } else {
      for (int i = 0; i < cnt; i++) st_volatile(dst + i, sanitize(v[i]));
    }
  }
}

/** This thread's share (grid-stride) of writing the sentinel over the previous slot's regions of the peers. */
__device__ __forceinline__ void reset_previous(const P2pGroup& g, const Call& c) {
  const size_t stride = (size_t)gridDim.x * blockDim.x * 4, start = ((size_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
  const uint32_t prev = (c.slot + 2u) % 3u;
  const float s = __uint_as_float(kSentinel);
  for (int j = 0; j < g.world; j++) {
    if (j == g.rank) continue;
    float* r = region_of(g.base[g.rank], prev, j, g);
    for (size_t i = start; i < c.prevUsed; i += stride) {
      if (i + 4 <= c.prevUsed) *reinterpret_cast<float4*>(r + i) = make_float4(s, s, s, s);
      else
        for (size_t k = i; k < c.prevUsed; k++) r[k] = s;
    }
  }
}

/** Polls cnt (<= 4) values at p until none is the sentinel; false when the wait failed (err set). */
__device__ __forceinline__ bool poll(const float* p, int cnt, float* out, const P2pGroup& g) {
  long long t0 = 0;
  for (int k = 0;; k++) {
    bool ready = true;
    if (cnt == 4) {
      const float4 v = ld_volatile4(p);
      out[0] = v.x, out[1] = v.y, out[2] = v.z, out[3] = v.w;
    } else {
      for (int i = 0; i < cnt; i++) out[i] = ld_volatile(p + i);
    }
    for (int i = 0; i < cnt; i++) ready = ready && !is_sentinel(out[i]);
    if (ready) return true;
    if (k == 0) t0 = global_ns();
    if ((k & 255) == 255 &&
        (*reinterpret_cast<const volatile int*>(g.abortFlag) != 0 || global_ns() - t0 > g.timeoutNs)) {
      *reinterpret_cast<volatile int*>(g.err) = 1;
      return false;
    }
  }
}

/**
 * Polls the float4 at each non-null ps[i] until it holds no sentinel. The first loads of all of them are issued
 * before any is tested; only copies that had not arrived are polled again. False when a wait failed (err set).
 */
template <int N>
__device__ __forceinline__ bool poll4_batch(const float* const (&ps)[N], float4 (&out)[N], const P2pGroup& g) {
#pragma unroll
  for (int i = 0; i < N; i++)
    if (ps[i]) out[i] = ld_volatile4(ps[i]);
#pragma unroll
  for (int i = 0; i < N; i++) {
    if (!ps[i] || !(is_sentinel(out[i].x) || is_sentinel(out[i].y) || is_sentinel(out[i].z) || is_sentinel(out[i].w)))
      continue;
    float v[4];
    if (!poll(ps[i], 4, v, g)) return false;
    out[i] = make_float4(v[0], v[1], v[2], v[3]);
  }
  return true;
}

/** Every other rank's copy of the float4 at idx of this call's slot, polled at once; got[own rank] is not set. */
__device__ __forceinline__ bool poll_peers4(const P2pGroup& g, const Call& c, size_t idx,
                                            float4 (&got)[kP2pMaxRanks]) {
  const float* ps[kP2pMaxRanks];
#pragma unroll
  for (int j = 0; j < kP2pMaxRanks; j++)
    ps[j] = j < g.world && j != g.rank ? region_of(g.base[g.rank], c.slot, j, g) + idx : nullptr;
  return poll4_batch(ps, got, g);
}

/**
 * This rank's float4 at idx plus every peer's copy of it, polled at once and added in rank order (the same bits on
 * every rank) into s, which starts at zero. False when a wait failed (err set).
 */
__device__ __forceinline__ bool sum_ranks4(const P2pGroup& g, const Call& c, size_t idx, float4 mine, float4& s) {
  float4 got[kP2pMaxRanks];
  const bool ok = poll_peers4(g, c, idx, got);
  s = make_float4(0.f, 0.f, 0.f, 0.f);
#pragma unroll
  for (int j = 0; j < kP2pMaxRanks; j++) {
    if (j >= g.world) continue;
    const float4 v = j == g.rank ? mine : got[j];
    s.x += v.x, s.y += v.y, s.z += v.z, s.w += v.w;
  }
  return ok;
}

/**
 * sum_ranks4 for one float: this rank's value at idx plus every peer's copy (the first loads of all of them issued
 * before any is tested), added in rank order into s. False when a wait failed (err set).
 */
__device__ __forceinline__ bool sum_ranks1(const P2pGroup& g, const Call& c, size_t idx, float mine, float& s) {
  float got[kP2pMaxRanks];
  bool ok = true;
#pragma unroll
  for (int j = 0; j < kP2pMaxRanks; j++)
    if (j < g.world && j != g.rank) got[j] = ld_volatile(region_of(g.base[g.rank], c.slot, j, g) + idx);
#pragma unroll
  for (int j = 0; j < kP2pMaxRanks; j++)
    if (j < g.world && j != g.rank && is_sentinel(got[j]))
      ok = poll(region_of(g.base[g.rank], c.slot, j, g) + idx, 1, &got[j], g) && ok;
  s = 0.f;
#pragma unroll
  for (int j = 0; j < kP2pMaxRanks; j++)
    if (j < g.world) s += j == g.rank ? mine : got[j];
  return ok;
}

/**
 * One thread of a block whose threads have all got the call's slot: counts the block done, and the last block of the
 * call records what the slot carried and moves the group to the next slot.
 */
__device__ __forceinline__ void count_done(const P2pGroup& g, const Call& c, uint32_t n) {
  __threadfence();
  if (atomicAdd(&g.state->done, 1u) == gridDim.x - 1) {
    g.state->done = 0;
    g.state->used[c.slot] = n;
    g.state->slot = (c.slot + 1u) % 3u;
  }
}

/** Host side: the group is complete and a call of n floats per rank fits its buffer. */
inline bool group_valid(const P2pGroup& g, size_t n) {
  if (g.world < 1 || g.world > kP2pMaxRanks || g.rank < 0 || g.rank >= g.world || n > g.cap || g.cap % 4) return false;
  if (!g.state || !g.err || !g.abortFlag) return false;
  for (int j = 0; j < g.world; j++)
    if (!g.base[j]) return false;
  return true;
}

/** The last block of the call records what the slot carried and moves the group to the next slot. */
__device__ __forceinline__ void end_call(const P2pGroup& g, const Call& c, uint32_t n) {
  __syncthreads();
  if (threadIdx.x == 0) count_done(g, c, n);
}

}  // namespace
}  // namespace tpserve::cuda
