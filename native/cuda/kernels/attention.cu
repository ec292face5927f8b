// Paged attention of the GPU backend (fp32 math, SIMT; the KV cache is fp16, kv_cache.cuh). Same function as native/src/kernels_impl.h attention*: query i
// of a sequence with qLen queries sits at position contextLen - qLen + i and attends to positions 0..its own; head h
// reads kv head h / (heads / kvHeads); scale 1/sqrt(headDim); softmax in fp32 (computed base 2: q is pre-scaled by
// log2(e)/sqrt(d), so exp2 of the shifted score is the same weight).
//
// Decode (maxQueryLen == 1): flash-decoding. Grid (head group, partition, sequence); a block of 4 warps takes one
// sequence, HPB query heads that share one kv head (GQA: K/V loaded once for all of them) and one partition of
// the context (P tokens, P in 64..512 chosen so the grid fills the GPU). Warps take 16-token chunks in turn: for
// QK^T, TPT = headDim/16 lanes share a token (16 dims each, float4 loads, sector-complete), then an online
// softmax per warp, then P·V with each lane owning headDim/32 output dims (coalesced V rows, 16 rows in flight).
// The 4 warps merge in shared memory; with one partition the block writes the output, else (max, sum, acc) go to
// the workspace and attention_reduce_kernel merges the partitions (in groups of threads when there are many). Small
// grids over contexts of up to 256 tokens take blocks of 16 warps instead (12 up to 192 tokens, 8 up to 128), one partition
// (kWideWarps below: one kernel, no reduce). Prefill and mixed batches: attention_prefill.cu.
#include <algorithm>
#include <cfloat>

#include "attention_prefill.cuh"
#include "kernels.cuh"
#include "pdl.cuh"
#include "ptx.cuh"
#include "xprep.cuh"

namespace tpserve::cuda {
namespace {

constexpr float kLog2e = 1.4426950408889634f;
constexpr unsigned kFull = 0xffffffffu;

// K and V rows through L2 only (ld.global.cg): decode attention may read the older rows before pdl_wait()
// (attention_decode_kernel's EARLY), and a line it brought into L1 then could hold a stale copy of the newest row.
__device__ __forceinline__ uint2 ld_kv4_l2(const kv_t* p) { return __ldcg(reinterpret_cast<const uint2*>(p)); }
template <int VPL>
__device__ __forceinline__ uint2 ld_v_l2(const kv_t* p) {
  if constexpr (VPL == 4) return ld_kv4_l2(p);
  else return make_uint2(__ldcg(reinterpret_cast<const uint32_t*>(p)), 0u);
}

// ---------------------------------------------------------------- decode
constexpr int kDecWarps = 4;
constexpr int kChunk = 16;                   // tokens per warp step
constexpr int kMaxPart = 512;
constexpr long long kTargetBlocks = 1024;    // (seq, head, partition) items wanted before splitting finer

// Partitions down to 64 tokens: on an H200 (docs/gpu-runs.md, run 10), splitting a 150-token context of a batch
// of one into 64-token partitions plus the reduce kernel beats one block per head (12 vs 17 us per layer).
constexpr int kMinSplitPart = kDecWarps * kChunk;

int choose_partition(long long rows, int maxContext) {
  int P = kMaxPart;
  while (P > kMinSplitPart && rows * ((maxContext + P - 1) / P) < kTargetBlocks) P /= 2;
  return P;
}

struct DecodeWs {
  float* acc;  // (numSeqs * heads * maxParts, D)
  float* m;    // (numSeqs * heads * maxParts)
  float* l;
};

DecodeWs decode_ws(float* ws, long long rows, int maxParts, int D) {
  const size_t n = (size_t)rows * maxParts;
  return {ws, ws + n * D, ws + n * D + n};
}

// Blocks of 8 warps or more are bounded as 16-warp blocks: at most 128 registers a thread, so a 12-warp block leaves
// a quarter of the SM's registers free (left to the compiler it takes 168, the whole SM), an 8-warp block half.
template <int D, int HPB, int NW = kDecWarps, bool EARLY = false>
__global__ void __launch_bounds__(NW >= 8 ? 512 : NW * 32) attention_decode_kernel(
    const float* __restrict__ q, const kv_t* __restrict__ kCache, const kv_t* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, const int32_t* __restrict__ contextLens,
    const int32_t* __restrict__ queryStart, float* __restrict__ out, DecodeWs ws, int heads, int kvHeads,
    int maxBlocks, int blockSize, int P, int maxParts, float qScale, __half* __restrict__ xpOut,
    const int32_t* __restrict__ xpMap) {
  constexpr int DPL = 16;         // dims per lane in QK^T
  constexpr int TPT = D / DPL;    // lanes per token
  constexpr int TPI = 32 / TPT;   // tokens per warp instruction
  constexpr int U = kChunk / TPI; // QK^T steps per chunk
  constexpr int NF4 = DPL / 4;
  constexpr int VPL = D / 32;     // output dims per lane
  static_assert(D == 64 || D == 128, "headDim");

  __shared__ float sm_m[NW][HPB], sm_l[NW][HPB];
  __shared__ __align__(16) float sm_acc[NW][HPB][D];

  pdl_trigger();
  // The sequence layout and the block table come from the host copies at the start of the step, complete before
  // any kernel of the step starts, so they are read before pdl_wait() (docs/gpu-runs.md run 40); after it q and the
  // cache rows (the QKV epilogue just wrote this step's row), K and V of a chunk together, or with EARLY the first
  // chunk's rows before it and only the newest row after it (below).
  const int seq = blockIdx.z, part = blockIdx.y;
  const int qs = queryStart[seq];
  if (queryStart[seq + 1] - qs != 1) return;
  int ctx = contextLens[seq];
  ctx = min(ctx, maxBlocks * blockSize);  // never read past the block table
  const int start = part * P;
  if (part > 0 && start >= ctx) return;
  const int end = min(ctx, start + P);
  // Head groups vary fastest in the grid: blocks dispatched together read the same tokens' rows of every head (0.5%
  // off Llama-2-7B's batch-1 step at 3,072 tokens against partitions fastest, docs/gpu-runs.md run 94).
  const int h0 = blockIdx.x * HPB;
  const int kvh = h0 / (heads / kvHeads);
  const size_t kvd = (size_t)kvHeads * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int sub = lane % TPT, ti = lane / TPT;
  const int32_t* bt = blockTables + (size_t)seq * maxBlocks;

  // Cache rows (page * blockSize + slot) of a chunk's tokens: K (U tokens a lane) and V (all 16). Tokens past the
  // end take the last valid row (read, then zeroed).
  int kRow[U], vRow[kChunk];
  const auto rows = [&](int c0) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const int jj = min(c0 + u * TPI + ti, end - 1);
      kRow[u] = __ldg(bt + jj / blockSize) * blockSize + jj % blockSize;
    }
#pragma unroll
    for (int t = 0; t < kChunk; t++) {
      const int jj = min(c0 + t, end - 1);
      vRow[t] = __ldg(bt + jj / blockSize) * blockSize + jj % blockSize;
    }
  };
  constexpr int kStride = NW * kChunk;  // a warp's chunks: cFirst, cFirst + kStride, ...
  const int cFirst = start + warp * kChunk;
  if (cFirst < end) rows(cFirst);
  // O's prepared input through an act-order map: this thread's first output column's place, a constant, read now.
  const int xc0 = xpOut && xpMap && (int)threadIdx.x < HPB * D ? __ldg(xpMap + h0 * D + threadIdx.x) : -1;
  // Every K and V load of chunk c0 (rows from the last rows() call; past the end zeroed by a select) is issued
  // before any is converted.
  const auto issue = [&](int c0, uint2 (&kr)[U][NF4], uint2 (&vr)[kChunk]) {
#pragma unroll
    for (int u = 0; u < U; u++) {
      const kv_t* kp = kCache + (size_t)kRow[u] * kvd + (size_t)kvh * D;
#pragma unroll
      for (int i = 0; i < NF4; i++) {
        const uint2 r = ld_kv4_l2(kp + 4 * (sub + TPT * i));
        kr[u][i] = c0 + u * TPI + ti < end ? r : make_uint2(0u, 0u);
      }
    }
#pragma unroll
    for (int t = 0; t < kChunk; t++) {
      const kv_t* vp = vCache + (size_t)vRow[t] * kvd + (size_t)kvh * D + lane * VPL;
      const uint2 r = ld_v_l2<VPL>(vp);
      vr[t] = c0 + t < end ? r : make_uint2(0u, 0u);
    }
  };
  // EARLY: the first chunk's loads go out before pdl_wait(): every row but the newest (position ctx - 1, which this
  // step's QKV epilogue writes) comes from earlier steps. Those loads skip L1 (ld.global.cg), so the newest row,
  // read again after the wait, cannot come from a line fetched before it.
  uint2 kr[U][NF4], vr[kChunk];
  const bool early = EARLY && cFirst < end;
  if (early) issue(cFirst, kr, vr);
  pdl_wait();

  float4 qv[HPB][NF4];
#pragma unroll
  for (int h = 0; h < HPB; h++) {
    const float4* qp = reinterpret_cast<const float4*>(q + ((size_t)qs * heads + h0 + h) * D);
#pragma unroll
    for (int i = 0; i < NF4; i++) {
      float4 v = ld_prev(qp + sub + TPT * i);
      qv[h][i] = make_float4(v.x * qScale, v.y * qScale, v.z * qScale, v.w * qScale);
    }
  }
  float m[HPB], l[HPB], acc[HPB][VPL];
#pragma unroll
  for (int h = 0; h < HPB; h++) {
    m[h] = -INFINITY, l[h] = 0.f;
#pragma unroll
    for (int e = 0; e < VPL; e++) acc[h][e] = 0.f;
  }

  // Scores of the chunk's 16 tokens, the online softmax (per warp), then P·V (lane owns VPL dims).
  const auto compute = [&](int c0, const uint2 (&kr)[U][NF4], const uint2 (&vr)[kChunk]) {
    float s[U][HPB];
#pragma unroll
    for (int u = 0; u < U; u++) {
      const bool valid = c0 + u * TPI + ti < end;
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        float d = 0.f;
#pragma unroll
        for (int i = 0; i < NF4; i++) {
          const float4 k = kv4_f32(kr[u][i]);
          d += qv[h][i].x * k.x + qv[h][i].y * k.y + qv[h][i].z * k.z + qv[h][i].w * k.w;
        }
#pragma unroll
        for (int o = TPT / 2; o > 0; o >>= 1) d += __shfl_xor_sync(kFull, d, o);
        s[u][h] = valid ? d : -INFINITY;
      }
    }
#pragma unroll
    for (int h = 0; h < HPB; h++) {
      float cm = s[0][h];
#pragma unroll
      for (int u = 1; u < U; u++) cm = fmaxf(cm, s[u][h]);
#pragma unroll
      for (int o = TPT; o < 32; o <<= 1) cm = fmaxf(cm, __shfl_xor_sync(kFull, cm, o));
      const float mn = fmaxf(m[h], cm);  // finite: the chunk has at least one valid token
      const float alpha = exp2f(m[h] - mn);  // 0 while m is -inf
      m[h] = mn;
      l[h] *= alpha;
#pragma unroll
      for (int e = 0; e < VPL; e++) acc[h][e] *= alpha;
#pragma unroll
      for (int u = 0; u < U; u++) {
        const float p = exp2f(s[u][h] - mn);  // -inf -> 0
        s[u][h] = p;
        l[h] += p;
      }
    }
#pragma unroll
    for (int t = 0; t < kChunk; t++) {
      float vv[4];
      const float4 v4 = kv4_f32(vr[t]);
      vv[0] = v4.x, vv[1] = v4.y, vv[2] = v4.z, vv[3] = v4.w;
#pragma unroll
      for (int h = 0; h < HPB; h++) {
        const float p = __shfl_sync(kFull, s[t / TPI][h], (t % TPI) * TPT);
#pragma unroll
        for (int e = 0; e < VPL; e++) acc[h][e] += p * vv[e];
      }
    }
  };

  const int newest = ctx - 1;
  if (early && newest < end && newest < cFirst + kChunk) {  // the newest row again, now that it is written
    const size_t row = (size_t)__ldg(bt + newest / blockSize) * blockSize + newest % blockSize;
#pragma unroll
    for (int u = 0; u < U; u++)
      if (cFirst + u * TPI + ti == newest) {
        const kv_t* kp = kCache + row * kvd + (size_t)kvh * D;
#pragma unroll
        for (int i = 0; i < NF4; i++) kr[u][i] = ld_kv4_l2(kp + 4 * (sub + TPT * i));
      }
#pragma unroll
    for (int t = 0; t < kChunk; t++)
      if (cFirst + t == newest) vr[t] = ld_v_l2<VPL>(vCache + row * kvd + (size_t)kvh * D + lane * VPL);
  }
  int c0 = cFirst;
  if (early) {
    if (c0 + kStride < end) rows(c0 + kStride);
    compute(c0, kr, vr);
    c0 += kStride;
  }
  for (; c0 < end; c0 += kStride) {
    issue(c0, kr, vr);
    if (c0 + kStride < end) rows(c0 + kStride);  // the next chunk's rows while this one computes
    compute(c0, kr, vr);
  }

  // ---- merge the warps
#pragma unroll
  for (int h = 0; h < HPB; h++) {
    float lt = l[h];  // each token group holds its own tokens' weights (replicated over its TPT lanes)
#pragma unroll
    for (int o = TPT; o < 32; o <<= 1) lt += __shfl_xor_sync(kFull, lt, o);
    if (lane == 0) sm_m[warp][h] = m[h], sm_l[warp][h] = lt;
#pragma unroll
    for (int e = 0; e < VPL; e++) sm_acc[warp][h][lane * VPL + e] = acc[h][e];
  }
  __syncthreads();
  for (int idx = threadIdx.x; idx < HPB * D; idx += NW * 32) {
    const int h = idx / D, d = idx % D;
    float M = -INFINITY;
#pragma unroll
    for (int w = 0; w < NW; w++) M = fmaxf(M, sm_m[w][h]);
    float L = 0.f, A = 0.f;
#pragma unroll
    for (int w = 0; w < NW; w++) {
      const float f = sm_m[w][h] == -INFINITY ? 0.f : exp2f(sm_m[w][h] - M);
      L += f * sm_l[w][h];
      A += f * sm_acc[w][h][d];
    }
    const int head = h0 + h;
    if (gridDim.y == 1) {
      const float v = L > 0.f ? __fdiv_rn(A, L) : 0.f;
      out[((size_t)qs * heads + head) * D + d] = v;
      if (xpOut) {
        const int col = head * D + d;  // = h0 * D + idx
        xprep_store1(xpOut, gridDim.z, qs, !xpMap ? col : idx == (int)threadIdx.x ? xc0 : __ldg(xpMap + col), v);
      }
    } else {
      const size_t r = ((size_t)seq * heads + head) * maxParts + part;
      ws.acc[r * D + d] = A;
      if (d == 0) ws.m[r] = M, ws.l[r] = L;
    }
  }
}

// Adds the first n (at most N) of N loaded partitions (max mb, sum lb, accumulator ab) into L and A, each scaled to
// the common max M, in partition order.
template <int N>
__device__ __forceinline__ void add_partitions(const float (&mb)[N], const float (&lb)[N], const float (&ab)[N], int n,
                                               float M, float& L, float& A) {
#pragma unroll
  for (int b = 0; b < N; b++) {
    if (b >= n) break;
    const float f = mb[b] == -INFINITY ? 0.f : exp2f(mb[b] - M);
    L += f * lb[b];
    A += f * ab[b];
  }
}

// Merges the partitions of a (sequence, head) (m, l and acc in the workspace) into its output: one block of G groups
// of D threads, the thread of dimension d taking acc[d]. The sequence layout is host data, read before pdl_wait()
// (see attention_decode_kernel).
//  - G = 1 (up to kReduceGroupsFrom partitions): the partitions in batches of kRB = 4, every load of a batch issued
//    before any is used (one round trip to memory for up to 4 partitions, where a loop that loads as it goes may wait
//    once per partition); indices past the last partition are clamped (a repeated m leaves the max as it is; the sums
//    stop at `parts`); sums in partition order.
//  - G = 512 / D (more partitions: long contexts): after pdl_wait() two rounds of loads, every partition's m at once
//    (one a thread) for the largest, then each group's contiguous share of the partitions, kRB = 8 loads of each kind
//    in flight; the groups' sums added in group order (the same bits every run). One group went through the 52
//    partitions of a 3,072-token context in 13 rounds of loads, twice: Llama-2-7B's batch-1 step there 2.301 -> 2.002
//    ms on an H200 (docs/gpu-runs.md run 89).
template <int D, int G>
__global__ void __launch_bounds__(D * G) attention_reduce_kernel(const int32_t* __restrict__ contextLens,
                                                                 const int32_t* __restrict__ queryStart,
                                                                 float* __restrict__ out, DecodeWs ws, int heads,
                                                                 int maxBlocks, int blockSize, int P, int maxParts,
                                                                 __half* __restrict__ xpOut,
                                                                 const int32_t* __restrict__ xpMap, int numSeqs) {
  pdl_trigger();
  const int head = blockIdx.x, seq = blockIdx.y, d = G == 1 ? threadIdx.x : threadIdx.x % D;
  const int qs = queryStart[seq];
  if (queryStart[seq + 1] - qs != 1) return;
  const int ctx = min(contextLens[seq], maxBlocks * blockSize);
  const int parts = ctx > 0 ? min((ctx + P - 1) / P, maxParts) : 0;
  const int xcol = xpOut && xpMap ? __ldg(xpMap + head * D + d) : head * D + d;  // constant: read before the wait
  pdl_wait();
  const size_t r0 = ((size_t)seq * heads + head) * maxParts;
  float M = -INFINITY, L = 0.f, A = 0.f;
  if constexpr (G == 1) {
    constexpr int kRB = 4;
    float mb[kRB], lb[kRB], ab[kRB];
    const auto load = [&](int p0) {
#pragma unroll
      for (int b = 0; b < kRB; b++) {
        const int p = min(p0 + b, parts - 1);
        mb[b] = ws.m[r0 + p], lb[b] = ws.l[r0 + p], ab[b] = ws.acc[(r0 + p) * D + d];
      }
    };
    if (parts > 0) {
      load(0);
#pragma unroll
      for (int b = 0; b < kRB; b++) M = fmaxf(M, mb[b]);
      for (int p0 = kRB; p0 < parts; p0 += kRB) {
        float x[kRB];
#pragma unroll
        for (int b = 0; b < kRB; b++) x[b] = ws.m[r0 + min(p0 + b, parts - 1)];
#pragma unroll
        for (int b = 0; b < kRB; b++) M = fmaxf(M, x[b]);
      }
    }
    for (int p0 = 0; p0 < parts; p0 += kRB) {
      if (p0 > 0) load(p0);
      add_partitions(mb, lb, ab, parts - p0, M, L, A);
    }
  } else {
    constexpr int NT = D * G, NW = NT / 32, kRB = 8;
    __shared__ float sMax[NW], sL[G], sA[G][D];
    const int g = threadIdx.x / D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int p = threadIdx.x; p < parts; p += NT) M = fmaxf(M, ws.m[r0 + p]);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) M = fmaxf(M, __shfl_xor_sync(kFull, M, o));
    if (lane == 0) sMax[warp] = M;
    __syncthreads();
#pragma unroll
    for (int w = 0; w < NW; w++) M = fmaxf(M, sMax[w]);
    // Group g's partitions [p0, p1) (indices past p1 clamped, not summed), in partition order.
    const int p0 = (int)((long long)g * parts / G), p1 = (int)((long long)(g + 1) * parts / G);
    for (int b0 = p0; b0 < p1; b0 += kRB) {
      float mb[kRB], lb[kRB], ab[kRB];
#pragma unroll
      for (int b = 0; b < kRB; b++) {
        const int p = min(b0 + b, p1 - 1);
        mb[b] = ws.m[r0 + p], lb[b] = ws.l[r0 + p], ab[b] = ws.acc[(r0 + p) * D + d];
      }
      add_partitions(mb, lb, ab, p1 - b0, M, L, A);
    }
    sA[g][d] = A;
    if (d == 0) sL[g] = L;
    __syncthreads();
    if (g != 0) return;
    L = 0.f, A = 0.f;
#pragma unroll
    for (int k = 0; k < G; k++) L += sL[k], A += sA[k][d];
  }
  const float v = L > 0.f ? __fdiv_rn(A, L) : 0.f;
  out[((size_t)qs * heads + head) * D + d] = v;
  if (xpOut) xprep_store1(xpOut, numSeqs, qs, xcol, v);
}

using detail::aligned16;

// Short contexts that the split would cut into partitions, in grids of at most about one block an SM (small
// batches): one block of kWideWarps warps a head group takes the whole context in one pass (a 16-token chunk a
// warp), so there is no reduce kernel (docs/gpu-runs.md run 59; with more blocks, batch 32, the 4-warp blocks are
// faster). A head group is one query head, or two at headDim 64 where two share a kv head; GQA at headDim 128 too
// since run 127 (wide_gqa_on). TPSERVE_ATTN_WIDE=0: the split path.
constexpr int kWideWarps = 16;
constexpr long long kWideMaxBlocks = 128;  // about one block an SM: more (Llama-2-7B at TP=2, batch 32) ran slower
bool wide_on() {
  static const bool on = detail::env_on("TPSERVE_ATTN_WIDE");
  return on;
}
// Up to kShortWarps chunks (192 tokens) the one-pass kernel takes 12 warps, still one chunk a warp: a block then
// leaves a quarter of the SM's registers to the QKV GEMV's last blocks, so it starts sooner (Llama-2-7B's batch-1
// step at 129-168 tokens 0.008 ms shorter on an H200, docs/gpu-runs.md runs 97 and 126). Past it, 12 warps would
// take two chunks a warp and lose (0.028 ms at 200-240 tokens). TPSERVE_ATTN_SHORT=0: 16 always; in a
// tensor-parallel group (AttentionArgs::group) only with TPSERVE_ATTN_SHORT=all.
constexpr int kShortWarps = 12;
bool short_on(const AttentionArgs& a) {
  static const bool on = detail::env_on("TPSERVE_ATTN_SHORT"), all = detail::env_is("TPSERVE_ATTN_SHORT", "all");
  return on && (!a.group || all);
}
// Up to 128 tokens, 8 warps (half the SM's registers), in a graph bucket of its own too. TPSERVE_ATTN_SHORT8=0: 12.
constexpr int kShortWarps8 = 8;
bool short8_on() {
  static const bool on = detail::env_on("TPSERVE_ATTN_SHORT8");
  return on;
}
// GQA at headDim 128 (Llama-3-8B: 4 query heads a kv head) in the one-pass form too, one query head a block: the
// heads of a kv head read its K/V rows each (the later ones from L2) instead of one 4-warp block a partition loading
// them once for all, plus the reduce kernel. TPSERVE_ATTN_WIDE_GQA=0: the split path; in a group only with =all.
bool wide_gqa_on(const AttentionArgs& a) {
  static const bool on = detail::env_on("TPSERVE_ATTN_WIDE_GQA");
  static const bool all = detail::env_is("TPSERVE_ATTN_WIDE_GQA", "all");
  return on && (!a.group || all);
}

// The one-pass (wide) decode attention with its first chunk of K/V rows loaded before pdl_wait()
// (attention_decode_kernel's EARLY): Llama-2-7B's batch-1 step 0.016 ms shorter at TP = 1 on an H200 (docs/gpu-runs.md
// run 71). In a group it is off (AttentionArgs::kvEarly): each rank's attention gets shorter with it, but the O
// GEMV's exchange right after it waits longer for the later rank, and Llama-2-7B's TP = 2 step was 0.007 ms longer
// (run 77). TPSERVE_ATTN_EARLY=0 turns it off everywhere, =all on in groups too.
bool kv_early_on() {
  static const bool on = detail::env_on("TPSERVE_ATTN_EARLY");
  return on;
}

// More partitions than this take attention_reduce_kernel's groups (fewer: one round of loads in one group);
// TPSERVE_ATTN_REDUCE_GROUPS=0: one group always (A/B, run 89).
constexpr int kReduceGroupsFrom = 8;
bool reduce_groups_on() {
  static const bool on = detail::env_on("TPSERVE_ATTN_REDUCE_GROUPS");
  return on;
}

template <int D, int HPB, int NW = kDecWarps, bool EARLY = false>
cudaError_t launch_decode(const AttentionArgs& a, int P, int parts, DecodeWs ws, float qScale, cudaStream_t stream) {
  dim3 grid(a.heads / HPB, parts, a.numSeqs);
  return launch_pdl(attention_decode_kernel<D, HPB, NW, EARLY>, grid, dim3(NW * 32), 0, stream, a.q, a.kCache,
                    a.vCache, a.blockTables, a.contextLens, a.queryStart, a.out, ws, a.heads, a.kvHeads, a.maxBlocks,
                    a.blockSize, P, parts, qScale, parts > 1 ? nullptr : a.xpOut, a.xpMap);
}

// The one-pass kernel's warps a block for contexts of at most `context` tokens (one head a block): 8, 12 or
// kWideWarps. The launch below and the decode graphs' buckets (attention_short_bucket) both follow it.
int one_pass_warps(int context, const AttentionArgs& a) {
  if (!short_on(a)) return kWideWarps;
  if (context <= kShortWarps8 * kChunk && short8_on()) return kShortWarps8;
  return context <= kShortWarps * kChunk ? kShortWarps : kWideWarps;
}

template <int D, int HPB, int NW>
cudaError_t launch_one_pass(const AttentionArgs& a, bool early, float qScale, cudaStream_t stream) {
  const DecodeWs none{};
  return early ? launch_decode<D, HPB, NW, true>(a, 1 << 30, 1, none, qScale, stream)
               : launch_decode<D, HPB, NW>(a, 1 << 30, 1, none, qScale, stream);
}

template <int D>
cudaError_t attention_d(const AttentionArgs& a, cudaStream_t stream) {
  const float qScale = kLog2e / sqrtf((float)D);
  if (a.maxQueryLen == 1) {
    const long long rows = (long long)a.numSeqs * a.heads;
    int P = choose_partition(rows, a.maxContext);
    int parts = (a.maxContext + P - 1) / P;
    if (parts <= 1) parts = 1, P = 1 << 30;  // one partition covers any context
    else if (!a.workspace || !aligned16(a.workspace)) return cudaErrorInvalidValue;
    if (parts > 65535) return cudaErrorInvalidValue;
    if (a.xpOut && (a.numSeqs > 16 || (a.heads * D) % 64 != 0)) return cudaErrorInvalidValue;
    const int G = a.heads / a.kvHeads;
    // (Two heads a block only at headDim 64: at 128 the 16-warp kernel would spill 188 bytes a thread.)
    const int hpbWide = D == 64 && G % 2 == 0 ? 2 : 1;
    const bool wideShape = (G % 4 != 0 && (D == 64 || G % 2 != 0)) || (D == 128 && wide_gqa_on(a));
    if (parts > 1 && a.maxContext <= kWideWarps * kChunk && wideShape && rows / hpbWide <= kWideMaxBlocks &&
        wide_on()) {
      const bool early = kv_early_on() && a.kvEarly;
      if constexpr (D == 64)
        if (G % 2 == 0) return launch_one_pass<D, 2, kWideWarps>(a, early, qScale, stream);
      switch (one_pass_warps(a.maxContext, a)) {
        case kShortWarps8: return launch_one_pass<D, 1, kShortWarps8>(a, early, qScale, stream);
        case kShortWarps: return launch_one_pass<D, 1, kShortWarps>(a, early, qScale, stream);
        default: return launch_one_pass<D, 1, kWideWarps>(a, early, qScale, stream);
      }
    }
    const DecodeWs ws = decode_ws(a.workspace, rows, parts, D);
    const cudaError_t e = G % 4 == 0   ? launch_decode<D, 4>(a, P, parts, ws, qScale, stream)
                          : G % 2 == 0 ? launch_decode<D, 2>(a, P, parts, ws, qScale, stream)
                                       : launch_decode<D, 1>(a, P, parts, ws, qScale, stream);
    if (e != cudaSuccess) return e;
    if (parts > 1) {
      // parts is the grid's most (the bucket's context); a sequence's own count can only be smaller.
      constexpr int G = 512 / D;
      const bool groups = parts > kReduceGroupsFrom && reduce_groups_on();
      return launch_pdl(groups ? attention_reduce_kernel<D, G> : attention_reduce_kernel<D, 1>,
                        dim3(a.heads, a.numSeqs), dim3(groups ? D * G : D), 0, stream, a.contextLens, a.queryStart,
                        a.out, ws, a.heads, a.maxBlocks, a.blockSize, P, parts, a.xpOut, a.xpMap, a.numSeqs);
    }
    return cudaGetLastError();
  }
  return attention_prefill(a, qScale, stream);
}

}  // namespace

int attention_short_bucket(int context) {
  const AttentionArgs one{};  // the form as one GPU takes it (a group's graphs keep the same buckets)
  const int warps = wide_on() ? one_pass_warps(context, one) : kWideWarps;
  return warps < kWideWarps ? warps * kChunk : 0;
}

size_t attention_workspace_bytes(int tokens, int heads, int headDim, int maxContext) {
  if (tokens <= 0 || heads <= 0 || headDim <= 0 || maxContext <= 0) return 0;
  // choose_partition(rows, .) gives P = 512, or a smaller P with rows * ceil(maxContext / P) < 2 * kTargetBlocks;
  // rows = numSeqs * heads <= tokens * heads in decode.
  const long long rows = (long long)tokens * heads;
  const long long parts512 = (maxContext + kMaxPart - 1) / kMaxPart;
  const long long items = std::max(rows * parts512, 2 * kTargetBlocks);
  return (size_t)items * (headDim + 2) * sizeof(float);
}

cudaError_t attention(const AttentionArgs& a, cudaStream_t stream) {
  if (a.numSeqs < 0) return cudaErrorInvalidValue;
  if (a.numSeqs == 0) return cudaSuccess;
  if (!a.q || !a.kCache || !a.vCache || !a.blockTables || !a.contextLens || !a.queryStart || !a.out)
    return cudaErrorInvalidValue;
  if (a.heads <= 0 || a.kvHeads <= 0 || a.heads % a.kvHeads || a.blockSize <= 0 || a.maxBlocks <= 0 ||
      a.maxContext < 0 || a.maxQueryLen < 1 || a.numSeqs > 65535 || a.kvHeads > 65535)
    return cudaErrorInvalidValue;
  if ((long long)a.maxBlocks * a.blockSize > 0x7fffffffLL) return cudaErrorInvalidValue;
  if (!aligned16(a.q) || !aligned16(a.kCache) || !aligned16(a.vCache) || !aligned16(a.out))
    return cudaErrorInvalidValue;
  if (a.headDim == 128) return attention_d<128>(a, stream);
  if (a.headDim == 64) return attention_d<64>(a, stream);
  return cudaErrorInvalidValue;
}

}  // namespace tpserve::cuda
