// Internal to check_ops.cu: the timings it prints after the checks (rmsnorm, decode attention over a paged fp16
// cache rotated past the L2).
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <vector>

#include "kernels/kernels.cuh"
#include "ops_check.cuh"

namespace ops_check {
namespace tc = tpserve::cuda;


// ---------------------------------------------------------------- benchmarks
__global__ void fill_random(float* p, size_t n, uint64_t seed) {
  for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
    uint64_t z = (i + seed) * 0x9E3779B97F4A7C15ull;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    p[i] = (float)((z >> 40) * (1.0 / 16777216.0)) * 2.0f - 1.0f;
  }
}

struct Bench {
  std::string name, shape;
  double us, gbs;
};
std::vector<Bench> g_bench;

int bench_rmsnorm(int rows, int dim) {
  Dev<float> x((size_t)rows * dim), r(x.n), w(dim), y(x.n);
  fill_random<<<256, 256>>>(x.p, x.n, 1), fill_random<<<256, 256>>>(r.p, r.n, 2);
  fill_random<<<64, 256>>>(w.p, w.n, 3);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> ms;
  CUDA_CHECK(time_events([&](int) { return tc::rmsnorm(x.p, r.p, w.p, y.p, rows, dim, 1e-5f, 0); }, 10, 100, ms));
  const double t = median(ms) * 1e-3, bytes = (double)rows * dim * 4 * 4 + dim * 4.0;  // x r/w, res, y, w
  g_bench.push_back({"rmsnorm+res", fmt("rows %d dim %d", rows, dim), t * 1e6, bytes / t / 1e9});
  return 0;
}

int bench_decode(const char* model, int heads, int kvHeads, int batch, int ctx) {
  const int hd = 128, bs = 16, nb = (ctx + bs - 1) / bs, kvd = kvHeads * hd;
  const double setBytes = (double)batch * nb * bs * kvd * sizeof(tc::kv_t) * 2;
  const int sets = (int)std::max(1.0, std::min(8.0, std::ceil(256e6 / setBytes)));  // rotate past the L2
  const int numPages = sets * batch * nb + 1;
  const size_t cacheN = (size_t)numPages * bs * kvd;
  Dev<__half> kc(cacheN), vc(cacheN);
  Dev<float> q((size_t)batch * heads * hd), out(q.n), kf(cacheN);
  if (!kc.p || !vc.p || !kf.p) return 1;
  fill_random<<<1024, 256>>>(kf.p, cacheN, 11);
  CUDA_CHECK(cudaGetLastError());
  {
    std::vector<float> h = kf.down();
    kc.up(to_half(h));
    for (auto& x : h) x = -x;
    vc.up(to_half(h));
  }
  fill_random<<<64, 256>>>(q.p, q.n, 13);
  std::vector<int32_t> bt((size_t)sets * batch * nb), ctxs(batch, ctx), qs(batch + 1);
  std::iota(bt.begin(), bt.end(), 1);
  Rng rng(7);
  for (size_t i = bt.size() - 1; i > 0; i--) std::swap(bt[i], bt[rng.below((uint32_t)i + 1)]);
  std::iota(qs.begin(), qs.end(), 0);
  Dev<int32_t> dbt(bt.size()), dctx(batch), dqs(batch + 1);
  dbt.up(bt), dctx.up(ctxs), dqs.up(qs);
  Dev<float> ws(tc::attention_workspace_bytes(batch, heads, hd, ctx) / 4 + 4);
  CUDA_CHECK(cudaDeviceSynchronize());
  tc::AttentionArgs a{};
  a.q = q.p, a.kCache = kc.p, a.vCache = vc.p, a.contextLens = dctx.p, a.queryStart = dqs.p, a.out = out.p;
  a.workspace = ws.p, a.numSeqs = batch, a.maxBlocks = nb, a.heads = heads, a.kvHeads = kvHeads, a.headDim = hd;
  a.blockSize = bs, a.maxContext = ctx, a.maxQueryLen = 1;
  std::vector<float> ms;
  CUDA_CHECK(time_events(
      [&](int i) {
        a.blockTables = dbt.p + (size_t)(i % sets) * batch * nb;
        return tc::attention(a, 0);
      },
      10, 60, ms));
  const double t = median(ms) * 1e-3, bytes = (double)batch * ctx * kvd * sizeof(tc::kv_t) * 2;
  g_bench.push_back({fmt("decode %s", model), fmt("batch %d ctx %d h %d/%d", batch, ctx, heads, kvHeads), t * 1e6,
                     bytes / t / 1e9});
  return 0;
}


}  // namespace ops_check
