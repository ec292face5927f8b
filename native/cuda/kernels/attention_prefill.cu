// Paged attention of the GPU backend for prefill and mixed batches: cuda::attention (attention.cu, with the function's
// definition and the decode kernels) calls attention_prefill() when a sequence has more than one query.
//
// Prefill / mixed (maxQueryLen > 1): flash-attention tiling. Grid (row tile, kv head, sequence); the rows of a
// block are 32 (query, head) pairs of one kv-head group, K/V tiles of 32 tokens go through shared memory, 4
// threads per row, online softmax in registers, causal limits per row.
#include "attention_prefill.cuh"
#include "kernels.cuh"
#include "ptx.cuh"

namespace tpserve::cuda {
namespace {

constexpr unsigned kFull = 0xffffffffu;
constexpr int kPreThreads = 128;
constexpr int kRT = 32;  // (query, head) rows per block
constexpr int kBK = 32;  // kv tokens per tile

template <int D>
__global__ void __launch_bounds__(kPreThreads) attention_prefill_kernel(
    const float* __restrict__ q, const kv_t* __restrict__ kCache, const kv_t* __restrict__ vCache,
    const int32_t* __restrict__ blockTables, const int32_t* __restrict__ contextLens,
    const int32_t* __restrict__ queryStart, float* __restrict__ out, int heads, int kvHeads, int maxBlocks,
    int blockSize, float qScale) {
  constexpr int D4 = D / 4;
  constexpr int LD = D + 4;  // padded rows: conflict-free float4 reads of 8 rows / 4 rows
  constexpr int NCH = D4 / 4;  // float4 output chunks per thread
  __shared__ __align__(16) float Qs[kRT][LD];
  __shared__ __align__(16) float KVs[kBK][LD];
  __shared__ float Ps[kRT][kBK + 1];

  const int seq = blockIdx.z, kvh = blockIdx.y;
  const int qs = queryStart[seq], qLen = queryStart[seq + 1] - qs;
  const int G = heads / kvHeads;
  const int nrows = qLen * G, r0 = blockIdx.x * kRT;
  if (r0 >= nrows) return;
  const int ctx = contextLens[seq];
  const int cap = min(ctx, maxBlocks * blockSize);  // never read past the block table
  const size_t kvd = (size_t)kvHeads * D;
  const int32_t* bt = blockTables + (size_t)seq * maxBlocks;
  const int tid = threadIdx.x;

  for (int idx = tid; idx < kRT * D4; idx += kPreThreads) {
    const int r = idx / D4, c4 = idx % D4, row = r0 + r;
    float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
    if (row < nrows) {
      const int tok = row / G, h = kvh * G + row % G;
      v = ld_prev(reinterpret_cast<const float4*>(q + ((size_t)(qs + tok) * heads + h) * D) + c4);
      v.x *= qScale, v.y *= qScale, v.z *= qScale, v.w *= qScale;
    }
    *reinterpret_cast<float4*>(&Qs[r][c4 * 4]) = v;
  }

  const int r = tid >> 2, sub = tid & 3, row = r0 + r;
  const int limit = row < nrows ? min(ctx - qLen + row / G + 1, cap) : 0;  // attends to positions < limit
  const int lastRow = min(r0 + kRT, nrows) - 1;
  const int kvEnd = max(0, min(ctx - qLen + lastRow / G + 1, cap));

  float m = -INFINITY, l = 0.f;
  float4 acc[NCH];
#pragma unroll
  for (int k = 0; k < NCH; k++) acc[k] = make_float4(0.f, 0.f, 0.f, 0.f);

  // Rows kb .. kb + kBK - 1 of a cache (K or V) into KVs, zeros past kvEnd.
  const auto load_tile = [&](const kv_t* __restrict__ cache, int kb) {
#pragma unroll
    for (int it = 0; it < kBK * D4 / kPreThreads; it++) {
      const int idx = tid + it * kPreThreads, c = idx / D4, c4 = idx % D4, j = kb + c;
      float4 v = make_float4(0.f, 0.f, 0.f, 0.f);
      if (j < kvEnd) {
        const int page = __ldg(bt + j / blockSize);
        v = ld_kv4(cache + ((size_t)page * blockSize + j % blockSize) * kvd + (size_t)kvh * D + 4 * c4);
      }
      *reinterpret_cast<float4*>(&KVs[c][c4 * 4]) = v;
    }
  };
  for (int kb = 0; kb < kvEnd; kb += kBK) {
    __syncthreads();  // Qs written / KVs free
    load_tile(kCache, kb);
    __syncthreads();
    float s[kBK / 4];
#pragma unroll
    for (int jj = 0; jj < kBK / 4; jj++) s[jj] = 0.f;
#pragma unroll 4
    for (int d4 = 0; d4 < D4; d4++) {
      const float4 qv = *reinterpret_cast<const float4*>(&Qs[r][d4 * 4]);
#pragma unroll
      for (int jj = 0; jj < kBK / 4; jj++) {
        const float4 kv = *reinterpret_cast<const float4*>(&KVs[sub + 4 * jj][d4 * 4]);
        s[jj] += qv.x * kv.x + qv.y * kv.y + qv.z * kv.z + qv.w * kv.w;
      }
    }
    float mx = -INFINITY;
#pragma unroll
    for (int jj = 0; jj < kBK / 4; jj++) {
      if (kb + sub + 4 * jj >= limit) s[jj] = -INFINITY;
      mx = fmaxf(mx, s[jj]);
    }
    mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 1));
    mx = fmaxf(mx, __shfl_xor_sync(kFull, mx, 2));
    const float mn = fmaxf(m, mx);
    const float alpha = m == -INFINITY ? 0.f : exp2f(m - mn);
    float ps = 0.f;
#pragma unroll
    for (int jj = 0; jj < kBK / 4; jj++) {
      const float p = s[jj] == -INFINITY ? 0.f : exp2f(s[jj] - mn);
      Ps[r][sub + 4 * jj] = p;
      ps += p;
    }
    ps += __shfl_xor_sync(kFull, ps, 1);
    ps += __shfl_xor_sync(kFull, ps, 2);
    l = l * alpha + ps;
    m = mn;
#pragma unroll
    for (int k = 0; k < NCH; k++) acc[k].x *= alpha, acc[k].y *= alpha, acc[k].z *= alpha, acc[k].w *= alpha;
    __syncthreads();  // done with K
    load_tile(vCache, kb);
    __syncthreads();
    const int cn = min(kBK, kvEnd - kb);
    for (int c = 0; c < cn; c++) {
      const float p = Ps[r][c];
#pragma unroll
      for (int k = 0; k < NCH; k++) {
        const float4 v = *reinterpret_cast<const float4*>(&KVs[c][(sub + 4 * k) * 4]);
        acc[k].x += p * v.x, acc[k].y += p * v.y, acc[k].z += p * v.z, acc[k].w += p * v.w;
      }
    }
  }
  if (row < nrows) {
    const int tok = row / G, h = kvh * G + row % G;
    float4* o = reinterpret_cast<float4*>(out + ((size_t)(qs + tok) * heads + h) * D);
    const float inv = l > 0.f ? __fdiv_rn(1.0f, l) : 0.f;
#pragma unroll
    for (int k = 0; k < NCH; k++)
      o[sub + 4 * k] = make_float4(acc[k].x * inv, acc[k].y * inv, acc[k].z * inv, acc[k].w * inv);
  }
}

template <int D>
cudaError_t launch_prefill(const AttentionArgs& a, float qScale, cudaStream_t stream) {
  const long long rowTiles = ((long long)a.maxQueryLen * (a.heads / a.kvHeads) + kRT - 1) / kRT;
  if (rowTiles > 0x7fffffffLL) return cudaErrorInvalidValue;
  dim3 grid((unsigned)rowTiles, a.kvHeads, a.numSeqs);
  attention_prefill_kernel<D><<<grid, kPreThreads, 0, stream>>>(a.q, a.kCache, a.vCache, a.blockTables,
                                                               a.contextLens, a.queryStart, a.out, a.heads,
                                                               a.kvHeads, a.maxBlocks, a.blockSize, qScale);
  return cudaGetLastError();
}

}  // namespace

cudaError_t attention_prefill(const AttentionArgs& a, float qScale, cudaStream_t stream) {
  if (a.headDim == 128) return launch_prefill<128>(a, qScale, stream);
  if (a.headDim == 64) return launch_prefill<64>(a, qScale, stream);
  return cudaErrorInvalidValue;
}

}  // namespace tpserve::cuda
