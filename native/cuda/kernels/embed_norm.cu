// The first kernel of a step: the embedding lookup and layer 0's RMSNorm in one kernel, with the vocab-parallel
// embedding's all-reduce between them on the p2p path (protocol in allreduce.cuh). A rank's rows of other ranks'
// tokens are zero, so the sum in rank order is the owner's row, bit for bit; the norm is rmsnorm_vec_kernel's (ops.cu)
// block shape and tail (row_norm.cuh). So the step's x, y and xp are those of embedding, p2p_all_reduce and
// rmsnorm run apart, one kernel instead of three (two at TP = 1).
#include "allreduce.cuh"
#include "block_reduce.cuh"
#include "kernels.cuh"
#include "p2p_device.cuh"
#include "pdl.cuh"
#include "row_norm.cuh"

namespace tpserve::cuda {
namespace {

// One block per row, NT threads with NV float4 of the row each (rmsnorm_vec_kernel's layout).
template <int NV, int NT, bool COMM>
__global__ void __launch_bounds__(NT) embed_rmsnorm_kernel(const int32_t* __restrict__ ids,
                                                           const float* __restrict__ table, int begin, int count,
                                                           const float* __restrict__ w, float* __restrict__ x,
                                                           float* __restrict__ y, __half* __restrict__ xp,
                                                           const int32_t* __restrict__ xpMap, int rows, int dim,
                                                           float eps, P2pGroup g) {
  __shared__ float red[NT / 32];
  pdl_trigger();
  pdl_wait();
  Call c{};
  if constexpr (COMM) c = begin_call(g);
  const int n4 = dim / 4;
  const size_t row = (size_t)blockIdx.x * dim;
  const int32_t id = ids[blockIdx.x] - begin;
  const bool here = id >= 0 && id < count;  // another rank's row (or a bad id): zeros, as cuda::embedding
  const float4* src = reinterpret_cast<const float4*>(table + (size_t)(here ? id : 0) * dim);
  float4 v[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int col = threadIdx.x + k * NT;
    v[k] = here && col < n4 ? __ldg(src + col) : make_float4(0.f, 0.f, 0.f, 0.f);
    if constexpr (COMM)
      if (col < n4) push(g, c.slot, row + 4 * col, reinterpret_cast<const float*>(&v[k]), 4);
  }
  bool ok = true;
  if constexpr (COMM) {
    reset_previous(g, c);
#pragma unroll
    for (int k = 0; k < NV; k++) {
      const int col = threadIdx.x + k * NT;
      if (col >= n4) continue;
      float4 s;
      ok = sum_ranks4(g, c, row + 4 * col, v[k], s) && ok;
      v[k] = s;
    }
  }
  float4* xr = reinterpret_cast<float4*>(x + row);
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int col = threadIdx.x + k * NT;
    if (col < n4 && ok) xr[col] = v[k];
  }
  red::rmsnorm_row_tail<NV, NT>(v, n4, dim, eps, w, y + row, xp, xpMap, rows, blockIdx.x, red);
  if constexpr (COMM) end_call(g, c, (uint32_t)((size_t)rows * dim));
}

using detail::aligned16;

template <int NT, bool COMM>
cudaError_t launch(int nv, const int32_t* ids, const float* table, int begin, int count, const float* w, float* x,
                   float* y, __half* xp, const int32_t* xpMap, int rows, int dim, float eps, const P2pGroup& g,
                   cudaStream_t stream) {
  const auto go = [&](auto kernel) {
    return launch_pdl(kernel, dim3(rows), dim3(NT), 0, stream, ids, table, begin, count, w, x, y, xp, xpMap, rows, dim,
                      eps, g);
  };
  switch (nv) {
    case 1: return go(embed_rmsnorm_kernel<1, NT, COMM>);
    case 2: return go(embed_rmsnorm_kernel<2, NT, COMM>);
    case 3: return go(embed_rmsnorm_kernel<3, NT, COMM>);
    default: return go(embed_rmsnorm_kernel<4, NT, COMM>);
  }
}

}  // namespace

cudaError_t embed_rmsnorm(const int32_t* ids, int rows, const float* table, int begin, int count, const float* w,
                          float* x, float* y, __half* xp, int dim, float eps, const P2pGroup* g, cudaStream_t stream,
                          const int32_t* xpMap) {
  if (rows <= 0 || dim <= 0 || dim % 4 || dim > 16384 || count < 0 || !(eps >= 0.f)) return cudaErrorInvalidValue;
  if (!ids || !table || !w || !x || !y || !aligned16(table) || !aligned16(w) || !aligned16(x) || !aligned16(y))
    return cudaErrorInvalidValue;
  if (xp && (rows > 16 || dim % 64 != 0)) return cudaErrorInvalidValue;
  if (g && !group_valid(*g, (size_t)rows * dim)) return cudaErrorInvalidValue;
  const int n4 = dim / 4;
  const P2pGroup none{};
  // rmsnorm's block shapes: 1024 threads for rows wider than 1024, else 256 (one float4 each).
  if (n4 > 256) {
    const int nv = (n4 + 1023) / 1024;
    return g ? launch<1024, true>(nv, ids, table, begin, count, w, x, y, xp, xpMap, rows, dim, eps, *g, stream)
             : launch<1024, false>(nv, ids, table, begin, count, w, x, y, xp, xpMap, rows, dim, eps, none, stream);
  }
  return g ? launch<256, true>(1, ids, table, begin, count, w, x, y, xp, xpMap, rows, dim, eps, *g, stream)
           : launch<256, false>(1, ids, table, begin, count, w, x, y, xp, xpMap, rows, dim, eps, none, stream);
}

}  // namespace tpserve::cuda
