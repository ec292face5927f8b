// One-shot push all-reduce, column gather and fused all-reduce + residual + RMSNorm over peer buffers (protocol in
// allreduce.cuh). Each thread owns 4 consecutive floats of the message: it stores them into every peer's buffer,
// resets its share of the previous slot, then polls the other ranks' copies in its own buffer. The first polls of
// all the copies a thread needs go out together (poll4_batch): one round trip to memory, not one per peer and
// float4, which at 4 ranks and a 8192-wide row was six in a row.
#include <algorithm>

#include "allreduce.cuh"
#include "block_reduce.cuh"
#include "kernels.cuh"
#include "p2p_device.cuh"
#include "pdl.cuh"
#include "ptx.cuh"
#include "row_norm.cuh"
#include "xprep.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kChunk = 4 * kThreads;  // floats per block of the plain kernels

__global__ void __launch_bounds__(kThreads) all_reduce_kernel(float* x, size_t n, P2pGroup g) {
  pdl_trigger();
  pdl_wait();
  const Call c = begin_call(g);
  const size_t idx = (size_t)blockIdx.x * kChunk + (size_t)threadIdx.x * 4;
  const int cnt = idx < n ? (int)min((size_t)4, n - idx) : 0;
  float mine[4] = {}, s[4] = {}, in[4];
  for (int i = 0; i < cnt; i++) mine[i] = x[idx + i];
  if (cnt) push(g, c.slot, idx, mine, cnt);
  reset_previous(g, c);
  bool ok = true;
  if (cnt == 4) {
    float4 s4;
    ok = sum_ranks4(g, c, idx, make_float4(mine[0], mine[1], mine[2], mine[3]), s4);
    s[0] = s4.x, s[1] = s4.y, s[2] = s4.z, s[3] = s4.w;
  } else {
    for (int j = 0; j < g.world && cnt && ok; j++) {
      if (j == g.rank) {
        for (int i = 0; i < cnt; i++) s[i] += mine[i];
      } else if ((ok = poll(region_of(g.base[g.rank], c.slot, j, g) + idx, cnt, in, g))) {
        for (int i = 0; i < cnt; i++) s[i] += in[i];
      }
    }
  }
  if (ok)
    for (int i = 0; i < cnt; i++) x[idx + i] = s[i];
  end_call(g, c, (uint32_t)n);
}

__global__ void __launch_bounds__(kThreads) gather_cols_kernel(const float* local, int cols, float* out, size_t n,
                                                               P2pGroup g) {
  pdl_trigger();
  pdl_wait();
  const Call c = begin_call(g);
  const size_t idx = (size_t)blockIdx.x * kChunk + (size_t)threadIdx.x * 4;
  const int cnt = idx < n ? (int)min((size_t)4, n - idx) : 0;
  float mine[4] = {}, in[4];
  for (int i = 0; i < cnt; i++) mine[i] = local[idx + i];
  if (cnt) push(g, c.slot, idx, mine, cnt);
  reset_previous(g, c);
  const size_t width = (size_t)g.world * cols;
  const auto put = [&](int j, const float* v) {
    for (int i = 0; i < cnt; i++) {
      const size_t e = idx + i;
      out[(e / cols) * width + (size_t)j * cols + e % cols] = v[i];
    }
  };
  if (cnt == 4) {  // every peer's copy polled at once
    float4 got[kP2pMaxRanks];
    if (poll_peers4(g, c, idx, got)) {
#pragma unroll
      for (int j = 0; j < kP2pMaxRanks; j++)
        if (j < g.world) put(j, j == g.rank ? mine : reinterpret_cast<const float*>(&got[j]));
    }
  } else {
    for (int j = 0; j < g.world && cnt; j++) {
      const float* v = mine;
      if (j != g.rank) {
        if (!poll(region_of(g.base[g.rank], c.slot, j, g) + idx, cnt, in, g)) break;
        v = in;
      }
      put(j, v);
    }
  }
  end_call(g, c, (uint32_t)n);
}

// p2p_gather_xprep: the push of gather_cols_kernel (grid-stride), then each thread's share of the (token, stored
// column) entries, each read from its owner's copy (polled there) and prepared. perm is constant: its entries are
// read before pdl_wait().
__global__ void __launch_bounds__(kThreads) gather_xprep_kernel(const float* local, int rows, int cols,
                                                                const int32_t* __restrict__ perm, int outCols,
                                                                __half* xp, P2pGroup g) {
  pdl_trigger();
  const int stride = (int)(gridDim.x * blockDim.x), first = (int)(blockIdx.x * blockDim.x + threadIdx.x);
  const int total = rows * outCols;
  const int src0 = first < total ? __ldg(perm + first % outCols) : 0;
  pdl_wait();
  const Call c = begin_call(g);
  const size_t n = (size_t)rows * cols;
  for (size_t idx = (size_t)first * 4; idx < n; idx += (size_t)stride * 4) {
    const int cnt = (int)min((size_t)4, n - idx);
    float mine[4] = {};
    for (int i = 0; i < cnt; i++) mine[i] = local[idx + i];
    push(g, c.slot, idx, mine, cnt);
  }
  reset_previous(g, c);
  for (int e = first; e < total; e += stride) {
    const int r = e / outCols, i = e % outCols;
    const int src = e == first ? src0 : __ldg(perm + i);
    const int owner = src / cols;
    const size_t off = (size_t)r * cols + src % cols;
    float v;
    if (owner == g.rank) v = local[off];
    else if (!poll(region_of(g.base[g.rank], c.slot, owner, g) + off, 1, &v, g)) break;
    xprep_store1(xp, rows, r, i, v);
  }
  // Every peer's whole message has landed before the kernel ends, the values this rank did not need included (a
  // shard's stored columns take only some of a peer's). The protocol resets this slot at the next call; a push
  // still on the way would land after that and leave a stale value, which lets a later call finish without its
  // peer, and then resets overtake pushes: without this wait the bundled model's act-order checkpoint hung at TP = 2
  // (docs/gpu-runs.md run 71). Each thread waits for the peers' float4s at the places it pushed its own.
  for (size_t idx = (size_t)first * 4; idx < n; idx += (size_t)stride * 4) {
    const int cnt = (int)min((size_t)4, n - idx);
    float in[4];
    bool ok = true;
    for (int j = 0; j < g.world && ok; j++)
      if (j != g.rank) ok = poll(region_of(g.base[g.rank], c.slot, j, g) + idx, cnt, in, g);
    if (!ok) break;
  }
  end_call(g, c, (uint32_t)n);
}

// One block per row, NT threads with NV float4 of the row each: the layout of rmsnorm_vec_kernel (ops.cu), and
// its tail (row_norm.cuh).
template <int NV, int NT>
__global__ void __launch_bounds__(NT) all_reduce_rmsnorm_kernel(const float* __restrict__ partial, float* x,
                                                                const float* __restrict__ w, float* y, int dim,
                                                                float eps, __half* xp, int rows, P2pGroup g) {
  __shared__ float red[NT / 32];
  pdl_trigger();
  pdl_wait();
  const Call c = begin_call(g);
  const int n4 = dim / 4;
  const size_t row = (size_t)blockIdx.x * dim;
  float4 part[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int col = threadIdx.x + k * NT;
    if (col < n4) {
      part[k] = ld_prev(reinterpret_cast<const float4*>(partial + row + 4 * col));
      push(g, c.slot, row + 4 * col, reinterpret_cast<const float*>(&part[k]), 4);
    }
  }
  reset_previous(g, c);
  // The peers' copies of this thread's NV float4, polled kB ranks at a time (NV * kB loads in flight together),
  // summed in rank order: the same order, so the same bits, on every rank.
  constexpr int kB = NV >= 3 ? 1 : NV == 2 ? 2 : 4;
  float4 s[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) s[k] = make_float4(0.f, 0.f, 0.f, 0.f);
  bool ok = true;
  for (int j0 = 0; j0 < g.world && ok; j0 += kB) {
    const float* ps[NV * kB];
    float4 got[NV * kB];
#pragma unroll
    for (int k = 0; k < NV; k++)
#pragma unroll
      for (int b = 0; b < kB; b++) {
        const int j = j0 + b, col = threadIdx.x + k * NT;
        ps[k * kB + b] =
            j < g.world && j != g.rank && col < n4 ? region_of(g.base[g.rank], c.slot, j, g) + row + 4 * col : nullptr;
      }
    ok = poll4_batch(ps, got, g);
#pragma unroll
    for (int k = 0; k < NV; k++)
#pragma unroll
      for (int b = 0; b < kB; b++) {
        const int j = j0 + b;
        if (j >= g.world || threadIdx.x + k * NT >= n4) continue;
        const float4 in = j == g.rank ? part[k] : got[k * kB + b];
        s[k].x += in.x, s[k].y += in.y, s[k].z += in.z, s[k].w += in.w;
      }
  }
  float4 v[NV];
#pragma unroll
  for (int k = 0; k < NV; k++) {
    const int col = threadIdx.x + k * NT;
    if (col < n4) {
      float4* xr = reinterpret_cast<float4*>(x + row) + col;
      v[k] = *xr;
      v[k].x += s[k].x, v[k].y += s[k].y, v[k].z += s[k].z, v[k].w += s[k].w;
      if (ok) *xr = v[k];
    }
  }
  red::rmsnorm_row_tail<NV, NT>(v, n4, dim, eps, w, y + row, xp, nullptr, rows, blockIdx.x, red);
  end_call(g, c, (uint32_t)((size_t)rows * dim));
}

// Folded norm (docs/tensor-parallel.md): one block per (row, part) of `chunk` columns, one float4 a thread. x +=
// the rank-order sum of the partials (COMM: pushed to and polled from the peers; else `partial` is that sum
// already), then the next GEMV's prepared input x * w and the part's sum of squares of x, which the GEMV turns into
// 1 / rms (int4_tiled.cu, folded_rnorm). No normalized row is written: its only reader is that GEMV.
template <bool COMM>
__global__ void __launch_bounds__(kThreads) all_reduce_fold_kernel(const float* __restrict__ partial, float* x,
                                                                   const float* __restrict__ w, __half* xp, float* ssq,
                                                                   int rows, int dim, int parts, P2pGroup g) {
  __shared__ float red[kThreads / 32];
  pdl_trigger();
  const int row = blockIdx.x / parts, part = blockIdx.x - row * parts, chunk = dim / parts;
  const int c = part * chunk + 4 * threadIdx.x;
  const bool act = 4 * (int)threadIdx.x < chunk;
  const float4 wv = act ? __ldg(reinterpret_cast<const float4*>(w + c)) : make_float4(0.f, 0.f, 0.f, 0.f);
  pdl_wait();
  const size_t idx = (size_t)row * dim + c;
  float4 mine = make_float4(0.f, 0.f, 0.f, 0.f), s = mine;
  if (act) mine = ld_prev(reinterpret_cast<const float4*>(partial + idx));
  bool ok = true;
  Call call{};
  if constexpr (COMM) {
    call = begin_call(g);
    if (act) push(g, call.slot, idx, reinterpret_cast<const float*>(&mine), 4);
    reset_previous(g, call);
    if (act) ok = sum_ranks4(g, call, idx, mine, s);
  } else {
    s = mine;
  }
  float ss = 0.f;
  if (act) {
    float4* xr = reinterpret_cast<float4*>(x + idx);
    float4 v = *xr;
    v.x += s.x, v.y += s.y, v.z += s.z, v.w += s.w;
    if (ok) *xr = v;
    ss = v.x * v.x + v.y * v.y + v.z * v.z + v.w * v.w;
    xprep_store2(xp, rows, row, c, v.x * wv.x, v.y * wv.y);
    xprep_store2(xp, rows, row, c + 2, v.z * wv.z, v.w * wv.w);
  }
  ss = red::block_sum(ss, red);
  if (threadIdx.x == 0) ssq[(size_t)row * parts + part] = ss;
  if constexpr (COMM) end_call(g, call, (uint32_t)((size_t)rows * dim));
}

using detail::aligned16;

}  // namespace

size_t p2p_buffer_bytes(size_t cap, int world) { return 3 * (size_t)world * cap * sizeof(float); }

cudaError_t p2p_all_reduce(float* x, size_t n, const P2pGroup& g, cudaStream_t stream) {
  if (!group_valid(g, n) || (n > 0 && !x)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((n + kChunk - 1) / kChunk);
  return launch_pdl(all_reduce_kernel, dim3(blocks), dim3(kThreads), 0, stream, x, n, g);
}

cudaError_t p2p_gather_cols(const float* local, int rows, int cols, float* out, const P2pGroup& g,
                            cudaStream_t stream) {
  const size_t n = (size_t)rows * cols;
  if (rows < 0 || cols <= 0 || !group_valid(g, n) || (n > 0 && (!local || !out))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((n + kChunk - 1) / kChunk);
  return launch_pdl(gather_cols_kernel, dim3(blocks), dim3(kThreads), 0, stream, local, cols, out, n, g);
}

cudaError_t p2p_gather_xprep(const float* local, int rows, int cols, const int32_t* perm, int outCols, __half* xp,
                             const P2pGroup& g, cudaStream_t stream) {
  const size_t n = (size_t)rows * cols;
  if (rows < 1 || rows > 16 || cols <= 0 || outCols <= 0 || outCols % 64 || !group_valid(g, n)) return cudaErrorInvalidValue;
  if (!local || !perm || !xp) return cudaErrorInvalidValue;
  const int total = rows * outCols;
  const unsigned blocks = (unsigned)std::min((total + kThreads - 1) / kThreads, 64);
  return launch_pdl(gather_xprep_kernel, dim3(blocks), dim3(kThreads), 0, stream, local, rows, cols, perm, outCols, xp,
                    g);
}

cudaError_t p2p_all_reduce_rmsnorm(const float* partial, float* x, const float* w, float* y, __half* xp, int rows,
                                   int dim, float eps, const P2pGroup& g, cudaStream_t stream) {
  const size_t n = (size_t)rows * dim;
  if (rows <= 0 || dim <= 0 || dim % 4 || dim > 16384 || !(eps >= 0.f) || !group_valid(g, n))
    return cudaErrorInvalidValue;
  if (!partial || !x || !w || !y || !aligned16(partial) || !aligned16(x) || !aligned16(w) || !aligned16(y))
    return cudaErrorInvalidValue;
  if (xp && (rows > 16 || dim % 64 != 0)) return cudaErrorInvalidValue;
  const int n4 = dim / 4;
  const dim3 grid(rows);
  if (n4 > kThreads) {  // the same choice of block shape as cuda::rmsnorm
    const dim3 wide(1024);
    switch ((n4 + 1023) / 1024) {
      case 1: return launch_pdl(all_reduce_rmsnorm_kernel<1, 1024>, grid, wide, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
      case 2: return launch_pdl(all_reduce_rmsnorm_kernel<2, 1024>, grid, wide, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
      case 3: return launch_pdl(all_reduce_rmsnorm_kernel<3, 1024>, grid, wide, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
      default: return launch_pdl(all_reduce_rmsnorm_kernel<4, 1024>, grid, wide, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
    }
  }
  const dim3 block(kThreads);
  switch ((n4 + kThreads - 1) / kThreads) {
    case 1: return launch_pdl(all_reduce_rmsnorm_kernel<1, kThreads>, grid, block, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
    case 2: return launch_pdl(all_reduce_rmsnorm_kernel<2, kThreads>, grid, block, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
    case 3: return launch_pdl(all_reduce_rmsnorm_kernel<3, kThreads>, grid, block, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
    default: return launch_pdl(all_reduce_rmsnorm_kernel<4, kThreads>, grid, block, 0, stream, partial, x, w, y, dim, eps, xp, rows, g);
  }
}

int fold_parts(int dim) {
  if (dim <= 0 || dim % 64) return 0;
  const int parts = (dim + 4 * kThreads - 1) / (4 * kThreads);
  return dim % (4 * parts) == 0 ? parts : 0;
}

cudaError_t all_reduce_fold(const float* partial, float* x, const float* w, __half* xp, float* ssq, int rows, int dim,
                            const P2pGroup* g, cudaStream_t stream) {
  const int parts = fold_parts(dim);
  if (rows <= 0 || rows > 16 || parts == 0 || !partial || !x || !w || !xp || !ssq) return cudaErrorInvalidValue;
  if (!aligned16(partial) || !aligned16(x) || !aligned16(w)) return cudaErrorInvalidValue;
  const dim3 grid((unsigned)(rows * parts)), block(kThreads);
  if (!g) {
    const P2pGroup none{};
    return launch_pdl(all_reduce_fold_kernel<false>, grid, block, 0, stream, partial, x, w, xp, ssq, rows, dim, parts,
                      none);
  }
  if (!group_valid(*g, (size_t)rows * dim)) return cudaErrorInvalidValue;
  return launch_pdl(all_reduce_fold_kernel<true>, grid, block, 0, stream, partial, x, w, xp, ssq, rows, dim, parts, *g);
}

}  // namespace tpserve::cuda
