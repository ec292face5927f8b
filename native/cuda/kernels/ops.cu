// Elementwise / row kernels of the GPU backend: embedding, rmsnorm (+fused residual), rope, silu_mul, kv_write,
// argmax_rows. fp32 throughout; the arithmetic that decides accuracy uses round-to-nearest intrinsics
// (__fsqrt_rn, __fdiv_rn) and double sin/cos, so the library's --use_fast_math does not change the results.
// Results match native/src/kernels_common.cc (the CPU engine) to fp32 rounding.
#include <cfloat>
#include <climits>

#include "block_reduce.cuh"
#include "kernels.cuh"
#include "pdl.cuh"
#include "ptx.cuh"
#include "row_norm.cuh"
#include "xprep.cuh"

namespace tpserve::cuda {
namespace {

using detail::aligned16;

using red::block_sum;
using red::warp_sum;

// ---------------------------------------------------------------- embedding
template <bool VEC>
__global__ void embedding_kernel(const int32_t* __restrict__ ids, const float* __restrict__ table, int dim,
                                 float* __restrict__ out, int begin, int count) {
  const int i = blockIdx.x;
  const int32_t id = ids[i] - begin;
  float* dst = out + (size_t)i * dim;
  if (id < 0 || id >= count) {  // another rank's row (or a negative id): zero instead of a fault
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = 0.f;
    return;
  }
  const float* src = table + (size_t)id * dim;
  if (VEC) {
    const float4* s4 = reinterpret_cast<const float4*>(src);
    float4* d4 = reinterpret_cast<float4*>(dst);
    for (int c = threadIdx.x; c < dim / 4; c += blockDim.x) d4[c] = __ldg(s4 + c);
  } else {
    for (int c = threadIdx.x; c < dim; c += blockDim.x) dst[c] = __ldg(src + c);
  }
}

// ---------------------------------------------------------------- permute_cols
// Act-order int4 weights (GPTQ desc_act) store their columns in group order: their input is x gathered by perm.
__global__ void permute_cols_kernel(const float* __restrict__ x, int rows, int cols, int xCols,
                                    const int32_t* __restrict__ perm, float* __restrict__ out) {
  for (int r = blockIdx.y; r < rows; r += gridDim.y) {
    const float* src = x + (size_t)r * xCols;
    float* dst = out + (size_t)r * cols;
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < cols; i += gridDim.x * blockDim.x)
      dst[i] = src[__ldg(perm + i)];
  }
}

// The same on the decode GEMV's prepared input: one thread per (stored column, prepared column n).
__global__ void permute_xprep_kernel(const __half* __restrict__ xp, int nc, int cols, const int32_t* __restrict__ perm,
                                     __half* __restrict__ out) {
  const int total = nc * cols;
  for (int e = blockIdx.x * blockDim.x + threadIdx.x; e < total; e += gridDim.x * blockDim.x) {
    const int i = e % cols, n = e / cols;
    out[xprep_index(nc, n, i)] = xp[xprep_index(nc, n, __ldg(perm + i))];
  }
}

// ---------------------------------------------------------------- rmsnorm
// One block per row. The row (with the residual added) is kept in registers when it fits (NV float4 per thread),
// so x is read once and written once (when residual is set) and y written once.
constexpr int kNormThreads = 256;

// NT threads (256, or 1024 for wide rows: a decode step normalizes one row per block, so wide blocks cut latency).
template <int NV, int NT>
__global__ void __launch_bounds__(NT) rmsnorm_vec_kernel(float* __restrict__ x,
                                                                   const float* __restrict__ residual,
                                                                   const float* __restrict__ w,
                                                                   float* __restrict__ y, int dim, float eps,
                                                                   __half* __restrict__ xp,
                                                                   const int32_t* __restrict__ xpMap, int rows) {
  __shared__ float red[NT / 32];
  pdl_trigger();
  pdl_wait();
  const int n4 = dim / 4;
  float4* xr = reinterpret_cast<float4*>(x + (size_t)blockIdx.x * dim);
  const float4* rr = residual ? reinterpret_cast<const float4*>(residual + (size_t)blockIdx.x * dim) : nullptr;
  float4 v[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int c = threadIdx.x + k * NT;
    if (c < n4) {
      v[k] = xr[c];
      if (rr) {
        const float4 r = ld_prev(rr + c);
        v[k].x += r.x, v[k].y += r.y, v[k].z += r.z, v[k].w += r.w;
        xr[c] = v[k];
      }
    }
  }
  red::rmsnorm_row_tail<NV, NT>(v, n4, dim, eps, w, y + (size_t)blockIdx.x * dim, xp, xpMap, rows, blockIdx.x,
                                red);
}

// Any dim / alignment: two passes over the row (the second from L1/L2).
__global__ void __launch_bounds__(kNormThreads) rmsnorm_generic_kernel(float* __restrict__ x,
                                                                       const float* __restrict__ residual,
                                                                       const float* __restrict__ w,
                                                                       float* __restrict__ y, int dim, float eps,
                                                                       __half* __restrict__ xp,
                                                                       const int32_t* __restrict__ xpMap, int rows) {
  __shared__ float red[kNormThreads / 32];
  pdl_trigger();
  pdl_wait();
  float* xr = x + (size_t)blockIdx.x * dim;
  const float* rr = residual ? residual + (size_t)blockIdx.x * dim : nullptr;
  float ss = 0.f;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) {
    float v = xr[c];
    if (rr) v += rr[c], xr[c] = v;
    ss += v * v;
  }
  ss = block_sum(ss, red);
  const float inv = __fdiv_rn(1.0f, __fsqrt_rn(__fdiv_rn(ss, (float)dim) + eps));
  float* yr = y + (size_t)blockIdx.x * dim;
  for (int c = threadIdx.x; c < dim; c += blockDim.x) yr[c] = (xr[c] * inv) * w[c];
  if (xp) {
    __syncthreads();
    for (int c = 2 * threadIdx.x; c < dim; c += 2 * blockDim.x)
      xprep_store2(xp, xpMap, rows, blockIdx.x, c, yr[c], yr[c + 1]);
  }
}

// ---------------------------------------------------------------- rope
// One block per token. cos/sin of the token's angles go to shared memory once (angles as the CPU engine and
// Hugging Face compute them: inv_freq = 1 / theta^(2i/d) in fp32, angle = pos * inv_freq in fp32; cos/sin of that
// fp32 angle in double), then every (head, 4 pairs) of q and k is rotated with float4 accesses.
constexpr int kRopeThreads = 128;

template <bool VEC>
__global__ void __launch_bounds__(kRopeThreads) rope_kernel(float* __restrict__ q, float* __restrict__ k,
                                                            const int32_t* __restrict__ positions, int heads,
                                                            int kvHeads, int headDim, float theta) {
  extern __shared__ float cs[];  // [half] cos then [half] sin
  const int half = headDim / 2;
  float* sn = cs + half;
  const int t = blockIdx.x;
  const float pos = (float)positions[t];
  for (int i = threadIdx.x; i < half; i += blockDim.x) {
    const float e = __fdiv_rn((float)(2 * i), (float)headDim);
    const float p = (float)pow((double)theta, (double)e);
    const float invFreq = __fdiv_rn(1.0f, p);
    const float ang = __fmul_rn(pos, invFreq);
    double s, c;
    sincos((double)ang, &s, &c);
    cs[i] = (float)c;
    sn[i] = (float)s;
  }
  __syncthreads();
  constexpr int W = VEC ? 4 : 1;
  const int per = half / W;  // vectors per half head
  const int total = (heads + kvHeads) * per;
  for (int idx = threadIdx.x; idx < total; idx += blockDim.x) {
    const int h = idx / per, i = (idx - h * per) * W;
    float* p = h < heads ? q + ((size_t)t * heads + h) * headDim : k + ((size_t)t * kvHeads + (h - heads)) * headDim;
    if (VEC) {
      float4* pa = reinterpret_cast<float4*>(p + i);
      float4* pb = reinterpret_cast<float4*>(p + i + half);
      const float4 a = *pa, b = *pb;
      const float4 c = *reinterpret_cast<const float4*>(cs + i), s = *reinterpret_cast<const float4*>(sn + i);
      // Same rounding as the CPU: a*c - b*s with each product rounded (no FMA contraction).
      *pa = make_float4(__fsub_rn(__fmul_rn(a.x, c.x), __fmul_rn(b.x, s.x)),
                        __fsub_rn(__fmul_rn(a.y, c.y), __fmul_rn(b.y, s.y)),
                        __fsub_rn(__fmul_rn(a.z, c.z), __fmul_rn(b.z, s.z)),
                        __fsub_rn(__fmul_rn(a.w, c.w), __fmul_rn(b.w, s.w)));
      *pb = make_float4(__fadd_rn(__fmul_rn(b.x, c.x), __fmul_rn(a.x, s.x)),
                        __fadd_rn(__fmul_rn(b.y, c.y), __fmul_rn(a.y, s.y)),
                        __fadd_rn(__fmul_rn(b.z, c.z), __fmul_rn(a.z, s.z)),
                        __fadd_rn(__fmul_rn(b.w, c.w), __fmul_rn(a.w, s.w)));
    } else {
      const float a = p[i], b = p[i + half], c = cs[i], s = sn[i];
      p[i] = __fsub_rn(__fmul_rn(a, c), __fmul_rn(b, s));
      p[i + half] = __fadd_rn(__fmul_rn(b, c), __fmul_rn(a, s));
    }
  }
}

// ---------------------------------------------------------------- silu_mul
__device__ __forceinline__ float silu_mul1(float g, float u) {
  // g / (1 + exp(-g)) * u as on the CPU; __expf is within a few ulp here, the division is exact-rounded.
  return __fdiv_rn(g, 1.0f + __expf(-g)) * u;
}

template <bool VEC>
__global__ void silu_mul_kernel(const float* __restrict__ gu, float* __restrict__ out, int rows, int inter,
                                __half* __restrict__ xp) {
  pdl_trigger();
  pdl_wait();
  const int W = VEC ? 4 : 1;
  const int per = inter / W;
  const size_t total = (size_t)rows * per;
  for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < total; idx += (size_t)gridDim.x * blockDim.x) {
    const size_t r = idx / per, c = (idx - r * per) * W;
    const float* g = gu + r * 2 * inter + c;
    float* o = out + r * inter + c;
    if (VEC) {
      const float4 a = ld_prev(reinterpret_cast<const float4*>(g));
      const float4 b = ld_prev(reinterpret_cast<const float4*>(g + inter));
      const float4 v = make_float4(silu_mul1(a.x, b.x), silu_mul1(a.y, b.y), silu_mul1(a.z, b.z), silu_mul1(a.w, b.w));
      *reinterpret_cast<float4*>(o) = v;
      if (xp) {
        xprep_store2(xp, rows, (int)r, (int)c, v.x, v.y);
        xprep_store2(xp, rows, (int)r, (int)c + 2, v.z, v.w);
      }
    } else {
      *o = silu_mul1(g[0], g[inter]);
    }
  }
}

// ---------------------------------------------------------------- kv_write
template <bool VEC>
__global__ void kv_write_kernel(const float* __restrict__ k, const float* __restrict__ v,
                                const int32_t* __restrict__ slots, kv_t* __restrict__ kCache,
                                kv_t* __restrict__ vCache, int kvd) {
  const int t = blockIdx.x;
  const int slot = slots[t];
  if (slot < 0) return;
  const float* ks = k + (size_t)t * kvd;
  const float* vs = v + (size_t)t * kvd;
  kv_t* kd = kCache + (size_t)slot * kvd;
  kv_t* vd = vCache + (size_t)slot * kvd;
  if (VEC) {  // 4 values a thread: one 16-byte load, one 8-byte store each
    for (int c = threadIdx.x; c < kvd / 4; c += blockDim.x) {
      st_kv4(kd + 4 * c, __ldg(reinterpret_cast<const float4*>(ks) + c));
      st_kv4(vd + 4 * c, __ldg(reinterpret_cast<const float4*>(vs) + c));
    }
  } else {
    for (int c = threadIdx.x; c < kvd; c += blockDim.x) st_kv(kd + c, ks[c]), st_kv(vd + c, vs[c]);
  }
}

// ---------------------------------------------------------------- argmax_rows
constexpr int kArgmaxThreads = 512;

__device__ __forceinline__ void better(float v, int i, float& bv, int& bi) {
  // NaN never wins; ties go to the lowest index.
  if (v > bv || (v == bv && i < bi)) bv = v, bi = i;
}

template <bool VEC>
__global__ void __launch_bounds__(kArgmaxThreads) argmax_kernel(const float* __restrict__ logits, int vocab,
                                                                int32_t* __restrict__ out) {
  const float* row = logits + (size_t)blockIdx.x * vocab;
  float bv = -INFINITY;
  int bi = INT_MAX;
  if (VEC) {
    const float4* r4 = reinterpret_cast<const float4*>(row);
    const int n4 = vocab / 4;
    int c = threadIdx.x;
    for (; c + 3 * kArgmaxThreads < n4; c += 4 * kArgmaxThreads) {  // 4 loads in flight per thread
      float4 a[4];
#pragma unroll
      for (int u = 0; u < 4; u++) a[u] = __ldg(r4 + c + u * kArgmaxThreads);
#pragma unroll
      for (int u = 0; u < 4; u++) {
        const int i = 4 * (c + u * kArgmaxThreads);
        better(a[u].x, i, bv, bi), better(a[u].y, i + 1, bv, bi), better(a[u].z, i + 2, bv, bi),
            better(a[u].w, i + 3, bv, bi);
      }
    }
    for (; c < n4; c += kArgmaxThreads) {
      const float4 a = __ldg(r4 + c);
      const int i = 4 * c;
      better(a.x, i, bv, bi), better(a.y, i + 1, bv, bi), better(a.z, i + 2, bv, bi), better(a.w, i + 3, bv, bi);
    }
  } else {
    for (int c = threadIdx.x; c < vocab; c += kArgmaxThreads) better(row[c], c, bv, bi);
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(0xffffffffu, bv, o);
    const int oi = __shfl_xor_sync(0xffffffffu, bi, o);
    better(ov, oi, bv, bi);
  }
  __shared__ float sv[kArgmaxThreads / 32];
  __shared__ int si[kArgmaxThreads / 32];
  const int w = threadIdx.x >> 5;
  if ((threadIdx.x & 31) == 0) sv[w] = bv, si[w] = bi;
  __syncthreads();
  if (threadIdx.x == 0) {
    for (int i = 1; i < kArgmaxThreads / 32; i++) better(sv[i], si[i], bv, bi);
    out[blockIdx.x] = bi == INT_MAX ? 0 : bi;  // all-NaN row: 0
  }
}

}  // namespace

// ================================================================ launchers

cudaError_t embedding(const int32_t* ids, int n, const float* table, int dim, float* out, cudaStream_t stream,
                      int begin, int count) {
  if (n < 0 || dim <= 0 || count < 0 || (n > 0 && (!ids || !table || !out))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && aligned16(table) && aligned16(out);
  const int threads = dim >= 1024 ? 256 : 128;
  if (vec) embedding_kernel<true><<<n, threads, 0, stream>>>(ids, table, dim, out, begin, count);
  else embedding_kernel<false><<<n, threads, 0, stream>>>(ids, table, dim, out, begin, count);
  return cudaGetLastError();
}

cudaError_t permute_cols(const float* x, int rows, int cols, const int32_t* perm, float* out, cudaStream_t stream,
                         int xCols) {
  if (xCols == 0) xCols = cols;
  if (rows < 0 || cols <= 0 || xCols < cols || (rows > 0 && (!x || !perm || !out || x == out)))
    return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  constexpr int threads = 256;
  const dim3 grid((unsigned)std::min((cols + threads - 1) / threads, 64), (unsigned)std::min(rows, 65535));
  permute_cols_kernel<<<grid, threads, 0, stream>>>(x, rows, cols, xCols, perm, out);
  return cudaGetLastError();
}

cudaError_t permute_xprep(const __half* xp, int m, int cols, const int32_t* perm, __half* out, cudaStream_t stream) {
  if (m < 1 || m > 16 || cols <= 0 || cols % 64 != 0 || !xp || !perm || !out || xp == out) return cudaErrorInvalidValue;
  const int nc = xprep_cols(m), threads = 256;
  const int blocks = std::min((nc * cols + threads - 1) / threads, 1024);
  permute_xprep_kernel<<<blocks, threads, 0, stream>>>(xp, nc, cols, perm, out);
  return cudaGetLastError();
}

cudaError_t rmsnorm(float* x, const float* residual, const float* w, float* y, int rows, int dim, float eps,
                    cudaStream_t stream, __half* xp, const int32_t* xpMap) {
  if (rows < 0 || dim <= 0 || !(eps >= 0.f) || (rows > 0 && (!x || !w || !y))) return cudaErrorInvalidValue;
  if (xp && (rows > 16 || dim % 64 != 0)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = dim % 4 == 0 && aligned16(x) && aligned16(w) && aligned16(y) && (!residual || aligned16(residual));
  const int n4 = dim / 4;
  const dim3 grid(rows), block(kNormThreads);
  const auto go = [&](auto kernel, dim3 threads) {
    return launch_pdl(kernel, grid, threads, 0, stream, x, residual, w, y, dim, eps, xp, xpMap, rows);
  };
  if (vec && n4 > kNormThreads && n4 <= 4 * 1024) {  // wide rows (dim > 1024): 1024 threads
    const int nv = (n4 + 1023) / 1024;
    const dim3 wide(1024);
    switch (nv) {
      case 1: return go(rmsnorm_vec_kernel<1, 1024>, wide);
      case 2: return go(rmsnorm_vec_kernel<2, 1024>, wide);
      case 3: return go(rmsnorm_vec_kernel<3, 1024>, wide);
      default: return go(rmsnorm_vec_kernel<4, 1024>, wide);
    }
  }
  const int nv = (n4 + kNormThreads - 1) / kNormThreads;
  if (vec && nv <= 4) {
    switch (nv) {
      case 1: return go(rmsnorm_vec_kernel<1, kNormThreads>, block);
      case 2: return go(rmsnorm_vec_kernel<2, kNormThreads>, block);
      case 3: return go(rmsnorm_vec_kernel<3, kNormThreads>, block);
      default: return go(rmsnorm_vec_kernel<4, kNormThreads>, block);
    }
  }
  return go(rmsnorm_generic_kernel, block);
}

cudaError_t rope(float* q, float* k, const int32_t* positions, int tokens, int heads, int kvHeads, int headDim,
                 float theta, cudaStream_t stream) {
  if (tokens < 0 || heads < 0 || kvHeads < 0 || headDim <= 0 || headDim % 2 || headDim > 4096 || !(theta > 0.f))
    return cudaErrorInvalidValue;
  if (tokens == 0 || heads + kvHeads == 0) return cudaSuccess;
  if (!positions || (heads > 0 && !q) || (kvHeads > 0 && !k)) return cudaErrorInvalidValue;
  const bool vec = (headDim / 2) % 4 == 0 && (heads == 0 || aligned16(q)) && (kvHeads == 0 || aligned16(k));
  const size_t smem = (size_t)headDim * sizeof(float);
  if (vec) rope_kernel<true><<<tokens, kRopeThreads, smem, stream>>>(q, k, positions, heads, kvHeads, headDim, theta);
  else rope_kernel<false><<<tokens, kRopeThreads, smem, stream>>>(q, k, positions, heads, kvHeads, headDim, theta);
  return cudaGetLastError();
}

cudaError_t silu_mul(const float* gu, float* out, int rows, int inter, cudaStream_t stream, __half* xp) {
  if (rows < 0 || inter <= 0 || (rows > 0 && (!gu || !out))) return cudaErrorInvalidValue;
  if (xp && (rows > 16 || inter % 64 != 0)) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = inter % 4 == 0 && aligned16(gu) && aligned16(out);
  if (xp && !vec) return cudaErrorInvalidValue;
  const size_t work = (size_t)rows * (vec ? inter / 4 : inter);
  const int threads = 256;
  const int blocks = (int)std::min<size_t>((work + threads - 1) / threads, 132 * 16);
  if (vec) return launch_pdl(silu_mul_kernel<true>, dim3(blocks), dim3(threads), 0, stream, gu, out, rows, inter, xp);
  return launch_pdl(silu_mul_kernel<false>, dim3(blocks), dim3(threads), 0, stream, gu, out, rows, inter, xp);
}

cudaError_t kv_write(const float* k, const float* v, const int32_t* slots, int tokens, kv_t* kCache, kv_t* vCache,
                     int kvHeads, int headDim, cudaStream_t stream) {
  if (tokens < 0 || kvHeads <= 0 || headDim <= 0) return cudaErrorInvalidValue;
  if (tokens == 0) return cudaSuccess;
  if (!k || !v || !slots || !kCache || !vCache) return cudaErrorInvalidValue;
  const int kvd = kvHeads * headDim;
  const bool vec = kvd % 4 == 0 && aligned16(k) && aligned16(v) && aligned16(kCache) && aligned16(vCache);
  const int threads = kvd >= 2048 ? 256 : 128;
  if (vec) kv_write_kernel<true><<<tokens, threads, 0, stream>>>(k, v, slots, kCache, vCache, kvd);
  else kv_write_kernel<false><<<tokens, threads, 0, stream>>>(k, v, slots, kCache, vCache, kvd);
  return cudaGetLastError();
}

cudaError_t argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t stream) {
  if (rows < 0 || vocab <= 0 || (rows > 0 && (!logits || !out))) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  const bool vec = vocab % 4 == 0 && aligned16(logits);
  if (vec) argmax_kernel<true><<<rows, kArgmaxThreads, 0, stream>>>(logits, vocab, out);
  else argmax_kernel<false><<<rows, kArgmaxThreads, 0, stream>>>(logits, vocab, out);
  return cudaGetLastError();
}

namespace {
__global__ void advance_decode_kernel(const int32_t* __restrict__ ids, int32_t* __restrict__ hostIds, AdvanceStep a) {
  for (int i = threadIdx.x; i < a.S; i += blockDim.x) {
    const int32_t id = ids[i];
    a.tok[i] = id, hostIds[i] = id;
    a.pos[i] += 1, a.ctx[i] += 1;
    a.kvSlot[i] = a.slot[i];
    a.bt[(size_t)i * a.mb + a.blk[i]] = a.page[i];
  }
}
}  // namespace

cudaError_t advance_decode(const int32_t* ids, int32_t* hostIds, const AdvanceStep& a, cudaStream_t stream) {
  if (a.S <= 0 || a.S > AdvanceStep::kMaxSeqs || a.mb <= 0 || !ids || !hostIds || !a.tok || !a.pos || !a.kvSlot ||
      !a.ctx || !a.bt)
    return cudaErrorInvalidValue;
  advance_decode_kernel<<<1, 128, 0, stream>>>(ids, hostIds, a);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
