// Checks the non-matmul kernels of native/cuda/kernels (ops.cu, attention.cu) against CPU double-precision
// references on fresh random inputs (outputs poisoned with NaN first, every element compared), then times rmsnorm
// and decode attention. Usage: check_ops [--json FILE] [--seed N] [--no-bench]. Exit 1 on any failure.
//
// Tolerances (relative L2 error ||out - ref|| / ||ref||, NaN/Inf never pass):
//   embedding, permute_cols, permute_xprep: exact (copies). The producers' column map (rmsnorm, embed_rmsnorm,
//   decode attention writing an act-order consumer's prepared input through xpMap): bitwise equal to the same
//   output written in order, column k found at map[k]. kv_write: exact against each value rounded to fp16
//   (the cache's type). argmax: exact index. advance_decode: exact against StepInts::fill of the next step. attention reads fp16 caches filled with fp16-representable values, so its reference sees the same K/V.
//   qkv_rope's cache writes: 1e-3 (fp16 storage: each value's relative rounding is at most 2^-11).
//   rmsnorm, silu_mul, rope, attention: 1e-5 (fp32 arithmetic lands near 1e-7..1e-6).
//   rope's reference uses the CPU engine's fp32 angle (inv_freq = 1/theta^(2i/d) in fp32, pos*inv_freq in fp32)
//   and double for the rest, as the GPU kernel does (an fp64 angle would differ by the fp32 angle's rounding).
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdlib>
#include <cstdio>
#include <numeric>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/kernels.cuh"
#include "kernels/xprep.cuh"
#include "ops_bench.cuh"
#include "step_ints.h"
#include "ops_check.cuh"
#include "xp_map_check.cuh"

using namespace tpserve::check;
using namespace ops_check;
namespace tc = tpserve::cuda;

namespace {

// ---------------------------------------------------------------- elementwise checks
void check_rmsnorm(Rng& rng, int rows, int dim, bool withRes) {
  std::vector<float> x((size_t)rows * dim), r(withRes ? x.size() : 0), w(dim);
  rng.fill_normal(x, 2.0f);
  rng.fill_normal(r, 1.0f);
  rng.fill_uniform(w, 0.5f, 1.5f);
  const float eps = 1e-5f;
  Dev<float> dx(x.size()), dr(r.size()), dw(w.size()), dy(x.size());
  dx.up(x), dr.up(r), dw.up(w), dy.poison();
  if (!launch_ok(tc::rmsnorm(dx.p, withRes ? dr.p : nullptr, dw.p, dy.p, rows, dim, eps, 0), "rmsnorm")) return;
  auto y = dy.down(), xo = dx.down();
  ErrStats sy, sx;
  for (int i = 0; i < rows; i++) {
    std::vector<double> v(dim);
    double ss = 0;
    for (int c = 0; c < dim; c++) {
      v[c] = (double)x[(size_t)i * dim + c] + (withRes ? (double)r[(size_t)i * dim + c] : 0.0);
      ss += v[c] * v[c];
    }
    const double inv = 1.0 / std::sqrt(ss / dim + eps);
    for (int c = 0; c < dim; c++) {
      sy.add(y[(size_t)i * dim + c], v[c] * inv * w[c]);
      sx.add(xo[(size_t)i * dim + c], v[c]);
    }
  }
  const std::string shape = fmt("rows %d dim %d%s", rows, dim, withRes ? " +residual" : "");
  record("rmsnorm", shape, sy, 1e-5);
  record("rmsnorm.x", shape, sx, withRes ? 1e-7 : 0.0);
}

// rmsnorm (and embed_rmsnorm, which ends in the same tail) writing its prepared output through a column map: the
// bits of the output written in order, column k at map[k]. rows <= 16, dim % 64 == 0.
void check_norm_xp_map(Rng& rng, int rows, int dim, bool embed) {
  std::vector<float> x((size_t)rows * dim), w(dim);
  rng.fill_normal(x, 2.0f), rng.fill_uniform(w, 0.5f, 1.5f);
  std::vector<int32_t> ids(rows);
  for (int r = 0; r < rows; r++) ids[r] = (int32_t)rng.below((uint32_t)rows);
  const std::vector<int32_t> map = inverse_perm(random_perm(rng, dim));
  const size_t nxp = tc::xprep_halves(rows, dim);
  Dev<float> dx(x.size()), dw(dim), dy(x.size()), dxo(x.size());
  Dev<__half> xp0(nxp), xp1(nxp);
  Dev<int32_t> dmap(dim), dids(rows);
  dw.up(w), dmap.up(map), dids.up(ids), xp0.poison(), xp1.poison();
  const std::string shape = fmt("%s rows %d dim %d", embed ? "embed_rmsnorm" : "rmsnorm", rows, dim);
  for (int pass = 0; pass < 2; pass++) {
    dx.up(x);
    __half* xp = pass ? xp1.p : xp0.p;
    const int32_t* m = pass ? dmap.p : nullptr;
    const cudaError_t e =
        embed ? tc::embed_rmsnorm(dids.p, rows, dx.p, 0, rows, dw.p, dxo.p, dy.p, xp, dim, 1e-5f, nullptr, 0, m)
              : tc::rmsnorm(dx.p, nullptr, dw.p, dy.p, rows, dim, 1e-5f, 0, xp, m);
    if (!launch_ok(e, "xp map")) return record_bool("xp map", shape, false, "launch failed");
  }
  const std::vector<__half> plain = xp0.down();
  const size_t bad = xp_map_mismatches(plain, xp1.down(), map, rows, dim);
  record_bool("xp map", shape, bad == 0, bad ? "mapped prepared input differs" : "");
  // In order: the prepared layout of y itself (the kernel's own output), bitwise.
  const size_t badY = xp_mismatches(plain, host_xprep(dy.down(), rows, dim));
  record_bool("xp", shape, badY == 0, badY ? "prepared input differs from xprep(y)" : "");
}

void check_rope(Rng& rng, int tokens, int heads, int kvHeads, int hd, float theta) {
  std::vector<float> q((size_t)tokens * heads * hd), k((size_t)tokens * kvHeads * hd);
  std::vector<int32_t> pos(tokens);
  rng.fill_normal(q), rng.fill_normal(k);
  for (int t = 0; t < tokens; t++) pos[t] = t == 0 ? 4095 : (int)rng.below(4097);
  Dev<float> dq(q.size()), dk(k.size());
  Dev<int32_t> dp(pos.size());
  dq.up(q), dk.up(k), dp.up(pos);
  if (!launch_ok(tc::rope(dq.p, dk.p, dp.p, tokens, heads, kvHeads, hd, theta, 0), "rope")) return;
  auto qo = dq.down(), ko = dk.down();
  ErrStats st;
  const int half = hd / 2;
  for (int t = 0; t < tokens; t++)
    for (int i = 0; i < half; i++) {
      const float invFreq = 1.0f / std::pow(theta, (float)(2 * i) / (float)hd);  // CPU engine's fp32 angle
      const double ang = (double)((float)pos[t] * invFreq);
      const double c = std::cos(ang), s = std::sin(ang);
      auto one = [&](const std::vector<float>& in, const std::vector<float>& o, int nh) {
        for (int h = 0; h < nh; h++) {
          const size_t b = ((size_t)t * nh + h) * hd;
          const double a = in[b + i], bb = in[b + i + half];
          st.add(o[b + i], a * c - bb * s);
          st.add(o[b + i + half], bb * c + a * s);
        }
      };
      one(q, qo, heads), one(k, ko, kvHeads);
    }
  record("rope", fmt("tok %d h %d/%d d %d theta %g", tokens, heads, kvHeads, hd, theta), st, 1e-5);
}

void check_silu(Rng& rng, int rows, int inter) {
  std::vector<float> gu((size_t)rows * 2 * inter);
  rng.fill_normal(gu, 3.0f);
  Dev<float> dg(gu.size()), d_o((size_t)rows * inter);
  dg.up(gu), d_o.poison();
  if (!launch_ok(tc::silu_mul(dg.p, d_o.p, rows, inter, 0), "silu_mul")) return;
  auto o = d_o.down();
  ErrStats st;
  for (int r = 0; r < rows; r++)
    for (int c = 0; c < inter; c++) {
      const double g = gu[(size_t)r * 2 * inter + c], u = gu[(size_t)r * 2 * inter + inter + c];
      st.add(o[(size_t)r * inter + c], g / (1.0 + std::exp(-g)) * u);
    }
  record("silu_mul", fmt("rows %d inter %d", rows, inter), st, 1e-5);
}

// begin/count: a vocabulary shard (tensor parallelism); ids outside it give zero rows.
void check_embedding(Rng& rng, int n, int vocab, int dim, int begin = 0, int count = 0) {
  if (count == 0) count = vocab;
  std::vector<float> table((size_t)count * dim);
  rng.fill_normal(table);
  std::vector<int32_t> ids(n);
  for (auto& i : ids) i = (int32_t)rng.below(vocab);
  ids[0] = begin + count - 1;
  Dev<float> dt(table.size()), d_o((size_t)n * dim);
  Dev<int32_t> di(n);
  dt.up(table), di.up(ids), d_o.poison();
  if (!launch_ok(tc::embedding(di.p, n, dt.p, dim, d_o.p, 0, begin, count), "embedding")) return;
  auto o = d_o.down();
  ErrStats st;
  for (int i = 0; i < n; i++) {
    const int r = ids[i] - begin;
    for (int c = 0; c < dim; c++) st.add(o[(size_t)i * dim + c], r >= 0 && r < count ? table[(size_t)r * dim + c] : 0.f);
  }
  record("embedding", fmt("n %d vocab %d dim %d shard %d+%d", n, vocab, dim, begin, count), st, 0.0);
}

// The input of an act-order int4 weight: out[r][i] = x[r][perm[i]], a random permutation.
// xCols > cols: perm picks cols distinct columns of a wider input (a row-parallel act-order shard in a group).
void check_permute_cols(Rng& rng, int rows, int cols, int xCols = 0) {
  const int xc = xCols ? xCols : cols;
  std::vector<float> x((size_t)rows * xc);
  rng.fill_normal(x);
  std::vector<int32_t> perm = random_perm(rng, xc);
  perm.resize(cols);
  Dev<float> dx(x.size()), d_o((size_t)rows * cols);
  Dev<int32_t> dp(cols);
  dx.up(x), dp.up(perm), d_o.poison();
  if (!launch_ok(tc::permute_cols(dx.p, rows, cols, dp.p, d_o.p, 0, xCols), "permute_cols")) return;
  auto o = d_o.down();
  ErrStats st;
  for (int r = 0; r < rows; r++)
    for (int i = 0; i < cols; i++) st.add(o[(size_t)r * cols + i], x[(size_t)r * xc + perm[i]]);
  record("permute_cols", fmt("rows %d cols %d of %d", rows, cols, xc), st, 0.0);
}

// The same permutation on a prepared decode input (xprep.cuh: hi/lo columns up to 8 tokens, one column up to 16).
void check_permute_xprep(Rng& rng, int m, int cols) {
  const int nc = tc::xprep_cols(m);
  const size_t n = tc::xprep_halves(m, cols);
  std::vector<float> vals(n);
  rng.fill_normal(vals);
  const std::vector<__half> src = to_half(vals);
  const std::vector<int32_t> perm = random_perm(rng, cols);
  Dev<__half> ds(n), d_o(n);
  Dev<int32_t> dp(cols);
  ds.up(src), dp.up(perm), d_o.poison();
  if (!launch_ok(tc::permute_xprep(ds.p, m, cols, dp.p, d_o.p, 0), "permute_xprep")) return;
  auto o = d_o.down();
  ErrStats st;
  for (int c = 0; c < nc; c++)
    for (int i = 0; i < cols; i++)
      st.add(__half2float(o[tc::xprep_index(nc, c, i)]), __half2float(src[tc::xprep_index(nc, c, perm[i])]));
  record("permute_xprep", fmt("m %d cols %d", m, cols), st, 0.0);
}

void check_kv_write(Rng& rng, int tokens, int kvHeads, int hd, int numPages, int bs) {
  const size_t kvd = (size_t)kvHeads * hd, cache = (size_t)numPages * bs * kvd;
  std::vector<float> k(tokens * kvd), v(tokens * kvd), kc(cache), vc(cache);
  rng.fill_normal(k), rng.fill_normal(v), rng.fill_normal(kc), rng.fill_normal(vc);
  std::vector<int32_t> slots(numPages * bs - bs);
  std::iota(slots.begin(), slots.end(), bs);  // page 0 reserved
  for (size_t i = slots.size() - 1; i > 0; i--) std::swap(slots[i], slots[rng.below((uint32_t)i + 1)]);
  slots.resize(tokens);
  for (int t = 0; t < tokens; t += 5) slots[t] = -1;
  Dev<float> dk(k.size()), dv(v.size());
  Dev<__half> dkc(cache), dvc(cache);
  Dev<int32_t> ds(tokens);
  dk.up(k), dv.up(v), dkc.up(to_half(kc)), dvc.up(to_half(vc)), ds.up(slots);
  if (!launch_ok(tc::kv_write(dk.p, dv.p, ds.p, tokens, dkc.p, dvc.p, kvHeads, hd, 0), "kv_write")) return;
  std::vector<float> ek = from_half(to_half(kc)), ev = from_half(to_half(vc));
  for (int t = 0; t < tokens; t++)
    if (slots[t] >= 0)
      for (size_t c = 0; c < kvd; c++)
        ek[slots[t] * kvd + c] = round_half(k[t * kvd + c]), ev[slots[t] * kvd + c] = round_half(v[t * kvd + c]);
  auto ok = from_half(dkc.down()), ov = from_half(dvc.down());
  ErrStats st;
  for (size_t i = 0; i < cache; i++) st.add(ok[i], ek[i]), st.add(ov[i], ev[i]);
  record("kv_write", fmt("tok %d kvh %d d %d pages %d (every 5th slot -1)", tokens, kvHeads, hd, numPages), st, 0.0);
}

void check_argmax(Rng& rng, int rows, int vocab) {
  std::vector<float> l((size_t)rows * vocab);
  rng.fill_normal(l);
  std::vector<int32_t> expect(rows);
  for (int r = 0; r < rows; r++) {
    float* p = &l[(size_t)r * vocab];
    // Ties: plant the maximum at two or three places (lowest must win); some rows tie on exact equal values.
    const int a = (int)rng.below(vocab), b = (int)rng.below(vocab), c = (int)rng.below(vocab);
    const float top = 10.0f + (float)(r % 3);
    p[a] = top, p[b] = top;
    if (r % 2) p[c] = top;
    if (r % 4 == 3) p[vocab - 1] = top;  // tail element
    int best = 0;
    for (int i = 1; i < vocab; i++)
      if (p[i] > p[best]) best = i;
    expect[r] = best;
  }
  Dev<float> dl(l.size());
  Dev<int32_t> d_o(rows);
  dl.up(l), d_o.poison();
  if (!launch_ok(tc::argmax_rows(dl.p, rows, vocab, d_o.p, 0), "argmax")) return;
  auto o = d_o.down();
  int bad = 0;
  for (int r = 0; r < rows; r++) bad += o[r] != expect[r];
  record_bool("argmax", fmt("rows %d vocab %d (ties)", rows, vocab), bad == 0, bad ? "wrong index" : "");
}

// advance_decode: a decode step's integers on the device, advanced, against StepInts::fill of the step after it
// (exact). The step before lacks the page of its sequences' next position where that position opens a block, as
// when the executor adds the page between the two steps.
void check_advance(Rng& rng, int S, int mbUsed, int bs) {
  const int mb = (mbUsed + 15) / 16 * 16;
  tpserve::BatchIn b, before;
  b.maxBlocksPerSeq = mbUsed;
  for (int i = 0; i < S; i++) {
    const int ctx = 1 + (int)rng.below(mbUsed * bs - 1);  // the next position, ctx, still has a block
    b.seqLens.push_back(1), b.contextLens.push_back(ctx), b.tokens.push_back((int32_t)rng.below(32000));
    for (int k = 0; k < mbUsed; k++) b.blockTables.push_back(k <= ctx / bs ? 1 + (int32_t)rng.below(100000) : 0);
  }
  before = b;
  for (int i = 0; i < S; i++)
    if (b.contextLens[i] % bs == 0) before.blockTables[(size_t)i * mbUsed + b.contextLens[i] / bs] = 0;
  const size_t n = tpserve::StepInts::count(S, S, S, mb);
  std::vector<int32_t> cur(n), next(n);
  int maxCtx = 0, maxQ = 0;
  tpserve::StepInts(cur.data(), S, S, S).fill(before, bs, mb, 0, maxCtx, maxQ);
  const tpserve::StepInts ne(next.data(), S, S, S);
  ne.fill(b, bs, mb, 1, maxCtx, maxQ);
  std::vector<int32_t> ids(S);
  for (int i = 0; i < S; i++) ids[i] = (int32_t)rng.below(128256), ne.tok[i] = ids[i];
  tc::AdvanceStep a;
  a.S = S, a.mb = mb;
  ne.advanceEntries(S, mb, bs, a.slot, a.blk, a.page);
  Dev<int32_t> di(n), dids(S);
  int32_t* host = nullptr;
  if (!di.up(cur) || !dids.up(ids) || cudaMallocHost(&host, S * sizeof(int32_t)) != cudaSuccess) {
    record_bool("advance_decode", "setup", false, "allocation");
    return;
  }
  std::fill(host, host + S, -1);
  const tpserve::StepInts on(di.p, S, S, S);
  a.tok = on.tok, a.pos = on.pos, a.kvSlot = on.slot, a.ctx = on.ctx, a.bt = on.bt;
  const bool launched = launch_ok(tc::advance_decode(dids.p, host, a, 0), "advance_decode");
  if (launched) {
    auto o = di.down();  // synchronous: the kernel's stores to host memory are in too
    int bad = 0;
    for (size_t k = 0; k < n; k++) bad += o[k] != next[k];
    for (int i = 0; i < S; i++) bad += host[i] != ids[i];
    record_bool("advance_decode", fmt("%d seqs, %d of %d blocks, block %d", S, mbUsed, mb, bs), bad == 0,
                bad ? "integers differ from StepInts::fill(ahead = 1)" : "");
  }
  cudaFreeHost(host);
}

// ---------------------------------------------------------------- attention
struct AttnCase {
  int heads, kvHeads, hd, bs;
  std::vector<int> ctx, qlen;
};

// Builds shuffled pages, NaN in every cache slot no sequence owns (over-reads show), runs, compares.
void check_attention(Rng& rng, const AttnCase& c, const std::string& label) {
  const int S = (int)c.ctx.size(), bs = c.bs, kvd = c.kvHeads * c.hd;
  int maxBlocks = 1, totalBlocks = 0, maxCtx = 0, maxQ = 0, T = 0;
  std::vector<int32_t> qstart(S + 1, 0);
  for (int s = 0; s < S; s++) {
    const int nb = (c.ctx[s] + bs - 1) / bs;
    maxBlocks = std::max(maxBlocks, nb + 1);  // one padding entry (-1) per table
    totalBlocks += nb, maxCtx = std::max(maxCtx, c.ctx[s]), maxQ = std::max(maxQ, c.qlen[s]);
    T += c.qlen[s], qstart[s + 1] = T;
  }
  const int numPages = totalBlocks + 3;
  std::vector<int32_t> pages(numPages - 1);
  std::iota(pages.begin(), pages.end(), 1);
  for (size_t i = pages.size() - 1; i > 0; i--) std::swap(pages[i], pages[rng.below((uint32_t)i + 1)]);
  std::vector<int32_t> bt((size_t)S * maxBlocks, -1);
  const size_t cacheN = (size_t)numPages * bs * kvd;
  std::vector<float> kc(cacheN, NAN), vc(cacheN, NAN);
  for (int s = 0, pi = 0; s < S; s++)
    for (int j = 0; j < c.ctx[s]; j++) {
      if (j % bs == 0) bt[(size_t)s * maxBlocks + j / bs] = pages[pi++];
      const size_t off = ((size_t)bt[(size_t)s * maxBlocks + j / bs] * bs + j % bs) * kvd;
      for (int e = 0; e < kvd; e++) kc[off + e] = round_half(rng.normal()), vc[off + e] = round_half(rng.normal());
    }
  std::vector<float> q((size_t)T * c.heads * c.hd);
  rng.fill_normal(q, 1.5f);
  const size_t wsBytes = tc::attention_workspace_bytes(T, c.heads, c.hd, maxCtx);
  Dev<float> dq(q.size()), d_o(q.size()), dws(wsBytes / 4 + 4);
  Dev<__half> dk(cacheN), dv(cacheN);
  Dev<int32_t> dbt(bt.size()), dctx(S), dqs(S + 1);
  std::vector<int32_t> ctx32(c.ctx.begin(), c.ctx.end());
  dq.up(q), dk.up(to_half(kc)), dv.up(to_half(vc)), dbt.up(bt), dctx.up(ctx32), dqs.up(qstart), d_o.poison(), dws.poison();
  tc::AttentionArgs a{};
  a.q = dq.p, a.kCache = dk.p, a.vCache = dv.p, a.blockTables = dbt.p, a.contextLens = dctx.p, a.queryStart = dqs.p;
  a.out = d_o.p, a.workspace = dws.p, a.numSeqs = S, a.maxBlocks = maxBlocks, a.heads = c.heads;
  a.kvHeads = c.kvHeads, a.headDim = c.hd, a.blockSize = bs, a.maxContext = maxCtx, a.maxQueryLen = maxQ;
  std::string shape = fmt("%s h %d/%d d %d seqs %d", label.c_str(), c.heads, c.kvHeads, c.hd, S);
  if (!launch_ok(tc::attention(a, 0), "attention")) {
    record_bool("attention", shape, false, "launch failed");
    return;
  }
  auto o = d_o.down();
  ErrStats st;
  const int G = c.heads / c.kvHeads;
  const double scale = 1.0 / std::sqrt((double)c.hd);
  for (int s = 0; s < S; s++)
    for (int i = 0; i < c.qlen[s]; i++) {
      const int t = qstart[s] + i, n = c.ctx[s] - c.qlen[s] + i + 1;
      for (int h = 0; h < c.heads; h++) {
        const int kvh = h / G;
        const float* qp = &q[((size_t)t * c.heads + h) * c.hd];
        std::vector<double> sc(n);
        double mx = -INFINITY;
        for (int j = 0; j < n; j++) {
          const float* kp = &kc[((size_t)bt[(size_t)s * maxBlocks + j / bs] * bs + j % bs) * kvd + (size_t)kvh * c.hd];
          double d = 0;
          for (int e = 0; e < c.hd; e++) d += (double)qp[e] * kp[e];
          sc[j] = d * scale, mx = std::max(mx, sc[j]);
        }
        double sum = 0;
        for (int j = 0; j < n; j++) sc[j] = std::exp(sc[j] - mx), sum += sc[j];
        std::vector<double> acc(c.hd, 0.0);
        for (int j = 0; j < n; j++) {
          const float* vp = &vc[((size_t)bt[(size_t)s * maxBlocks + j / bs] * bs + j % bs) * kvd + (size_t)kvh * c.hd];
          for (int e = 0; e < c.hd; e++) acc[e] += sc[j] / sum * vp[e];
        }
        for (int e = 0; e < c.hd; e++) st.add(o[((size_t)t * c.heads + h) * c.hd + e], acc[e]);
      }
    }
  record("attention", shape, st, 1e-5);
  // Decode of up to 16 sequences also writes O's prepared input: in order, and through an act-order map.
  const int cols = c.heads * c.hd;
  if (maxQ != 1 || S > 16 || cols % 64 != 0) return;
  const std::vector<int32_t> map = inverse_perm(random_perm(rng, cols));
  const size_t nxp = tc::xprep_halves(S, cols);
  Dev<__half> xp0(nxp), xp1(nxp);
  Dev<int32_t> dmap(cols);
  dmap.up(map), xp0.poison(), xp1.poison();
  a.xpOut = xp0.p;
  bool ok = launch_ok(tc::attention(a, 0), "attention xp");
  a.xpOut = xp1.p, a.xpMap = dmap.p;
  ok = ok && launch_ok(tc::attention(a, 0), "attention xp map");
  const std::vector<__half> plain = xp0.down();
  const size_t bad = ok ? xp_map_mismatches(plain, xp1.down(), map, S, cols) : 1;
  record_bool("xp map", "attention " + shape, bad == 0, bad ? "mapped prepared input differs" : "");
  const size_t badO = ok ? xp_mismatches(plain, host_xprep(o, S, cols)) : 1;
  record_bool("xp", "attention " + shape, badO == 0, badO ? "prepared input differs from xprep(out)" : "");
}

void check_invalid_args() {
  tc::AttentionArgs a{};
  bool ok = tc::attention(a, 0) == cudaSuccess;  // numSeqs 0: no-op
  a.numSeqs = 1;
  ok = ok && tc::attention(a, 0) == cudaErrorInvalidValue;  // null pointers
  ok = ok && tc::rmsnorm(nullptr, nullptr, nullptr, nullptr, 1, 0, 1e-5f, 0) == cudaErrorInvalidValue;
  ok = ok && tc::rope(nullptr, nullptr, nullptr, 1, 1, 1, 3, 1e4f, 0) == cudaErrorInvalidValue;
  ok = ok && tc::argmax_rows(nullptr, -1, 10, nullptr, 0) == cudaErrorInvalidValue;
  ok = ok && tc::permute_cols(nullptr, 1, 8, nullptr, nullptr, 0) == cudaErrorInvalidValue;
  ok = ok && tc::permute_xprep(nullptr, 17, 64, nullptr, nullptr, 0) == cudaErrorInvalidValue;
  ok = ok && tc::kv_write(nullptr, nullptr, nullptr, 1, nullptr, nullptr, 1, 64, 0) == cudaErrorInvalidValue;
  tc::AdvanceStep adv;
  adv.S = tc::AdvanceStep::kMaxSeqs + 1, adv.mb = 16;
  ok = ok && tc::advance_decode(nullptr, nullptr, adv, 0) == cudaErrorInvalidValue;
  int32_t* anyDev = nullptr;  // a well-formed call but for one missing pointer
  if (cudaMalloc(&anyDev, 64 * sizeof(int32_t)) == cudaSuccess) {
    tc::AdvanceStep one;
    one.S = 1, one.mb = 16, one.tok = one.pos = one.kvSlot = one.ctx = anyDev;  // bt missing
    ok = ok && tc::advance_decode(anyDev, anyDev, one, 0) == cudaErrorInvalidValue;
    cudaFree(anyDev);
  }
  cudaGetLastError();
  record_bool("invalid", "bad arguments -> cudaErrorInvalidValue", ok);
}

}  // namespace

// qkv_rope_kv against a double reference of rope (the CPU engine's angles) and of the cache writes.
void check_qkv_rope_kv(Rng& rng, int tokens, int heads, int kvHeads, int hd, int numPages, int bs, float theta) {
  const size_t qd = (size_t)heads * hd, kvd = (size_t)kvHeads * hd, w = qd + 2 * kvd, half = hd / 2;
  const size_t cache = (size_t)numPages * bs * kvd, maxPos = 4097;
  std::vector<float> qkv(tokens * w), kc(cache), vc(cache), cosT(maxPos * half), sinT(maxPos * half);
  rng.fill_normal(qkv), rng.fill_normal(kc), rng.fill_normal(vc);
  for (size_t i = 0; i < half; i++) {
    const float invFreq = 1.0f / std::pow(theta, (float)(2 * i) / (float)hd);
    for (size_t p = 0; p < maxPos; p++) {
      const float ang = (float)p * invFreq;
      cosT[p * half + i] = (float)std::cos((double)ang), sinT[p * half + i] = (float)std::sin((double)ang);
    }
  }
  std::vector<int32_t> pos(tokens), slots(numPages * bs - bs);
  for (auto& p : pos) p = (int)rng.below((uint32_t)maxPos);
  std::iota(slots.begin(), slots.end(), bs);
  for (size_t i = slots.size() - 1; i > 0; i--) std::swap(slots[i], slots[rng.below((uint32_t)i + 1)]);
  slots.resize(tokens);
  for (int t = 3; t < tokens; t += 7) slots[t] = -1;
  Dev<float> dqkv(qkv.size()), dq(tokens * qd), dcos(cosT.size()), dsin(sinT.size());
  Dev<__half> dkc(cache), dvc(cache);
  Dev<int32_t> dp(tokens), ds(tokens);
  kc = from_half(to_half(kc)), vc = from_half(to_half(vc));
  dqkv.up(qkv), dp.up(pos), ds.up(slots), dkc.up(to_half(kc)), dvc.up(to_half(vc)), dcos.up(cosT), dsin.up(sinT), dq.poison();
  if (!launch_ok(tc::qkv_rope_kv(dqkv.p, dq.p, dp.p, ds.p, tokens, dkc.p, dvc.p, heads, kvHeads, hd, dcos.p, dsin.p, 0),
                 "qkv_rope_kv"))
    return;
  auto q = dq.down();
  auto ko = from_half(dkc.down()), vo = from_half(dvc.down());
  std::vector<double> ek(kc.begin(), kc.end()), ev(vc.begin(), vc.end());
  ErrStats st, sc;
  for (int t = 0; t < tokens; t++) {
    const float* row = &qkv[t * w];
    for (int h = 0; h < heads + kvHeads; h++)
      for (size_t i = 0; i < half; i++) {
        const double c = cosT[pos[t] * half + i], s = sinT[pos[t] * half + i];
        const double a = row[h * hd + i], b = row[h * hd + i + half];
        const double ra = a * c - b * s, rb = b * c + a * s;
        if (h < heads) {
          st.add(q[t * qd + h * hd + i], ra), st.add(q[t * qd + h * hd + i + half], rb);
        } else if (slots[t] >= 0) {
          ek[slots[t] * kvd + (h - heads) * hd + i] = ra, ek[slots[t] * kvd + (h - heads) * hd + i + half] = rb;
        }
      }
    if (slots[t] >= 0)
      for (size_t c = 0; c < kvd; c++) ev[slots[t] * kvd + c] = row[qd + kvd + c];
  }
  for (size_t i = 0; i < cache; i++) sc.add(ko[i], ek[i]), sc.add(vo[i], ev[i]);
  record("qkv_rope", fmt("tok %d h %d/%d d %d theta %g (vs double reference)", tokens, heads, kvHeads, hd, theta), st,
         1e-6);
  record("qkv_rope", fmt("tok %d h %d/%d d %d theta %g: fp16 k/v cache", tokens, heads, kvHeads, hd, theta), sc, 1e-3);
}

int main(int argc, char** argv) {
  const char* json = arg_value(argc, argv, "--json");
  const uint64_t seed = std::strtoull(arg_value(argc, argv, "--seed", "1"), nullptr, 10);
  const bool bench = !has_flag(argc, argv, "--no-bench");
  Rng rng(seed);
  std::printf("device: %s, seed %llu\n", device_name().c_str(), (unsigned long long)seed);

  for (int dim : {256, 4096, 5120})
    for (bool res : {false, true}) check_rmsnorm(rng, dim == 256 ? 7 : 33, dim, res);
  check_rmsnorm(rng, 3, 1001, true);  // generic path (dim % 4 != 0)
  for (float theta : {1e4f, 5e5f}) {
    check_rope(rng, 37, 32, 8, 128, theta);
    check_rope(rng, 19, 8, 8, 64, theta);
  }
  check_rope(rng, 5, 3, 1, 6, 1e4f);  // scalar path
  check_silu(rng, 9, 11008), check_silu(rng, 3, 14336), check_silu(rng, 2, 37);
  check_embedding(rng, 37, 1000, 4096), check_embedding(rng, 5, 100, 33);
  check_embedding(rng, 64, 1000, 4096, 500, 250), check_embedding(rng, 40, 100, 33, 0, 50);
  check_permute_cols(rng, 1, 4096), check_permute_cols(rng, 37, 11008), check_permute_cols(rng, 3, 33);
  check_permute_cols(rng, 1, 2048, 4096), check_permute_cols(rng, 19, 2752, 11008);
  check_permute_xprep(rng, 1, 4096), check_permute_xprep(rng, 8, 11008), check_permute_xprep(rng, 13, 256);
  for (bool embed : {false, true})
    for (int dim : {256, 4096, 8192}) check_norm_xp_map(rng, dim == 256 ? 13 : 1, dim, embed);
  check_norm_xp_map(rng, 8, 4096, false);
  check_kv_write(rng, 50, 8, 128, 9, 16), check_kv_write(rng, 23, 4, 64, 5, 16);
  check_qkv_rope_kv(rng, 41, 32, 8, 128, 9, 16, 5e5f), check_qkv_rope_kv(rng, 17, 4, 2, 64, 5, 16, 1e4f);
  check_argmax(rng, 7, 128256), check_argmax(rng, 3, 32000), check_argmax(rng, 2, 1001);
  check_advance(rng, 1, 9, 16), check_advance(rng, 32, 20, 16), check_advance(rng, 128, 33, 16);
  check_advance(rng, 7, 4, 8);
  check_invalid_args();

  const std::vector<int> dctx = {1, 17, 1000, 4097, 33, 512};
  for (auto hk : {std::pair<int, int>{32, 32}, {32, 8}, {4, 2}, {6, 2}})
    for (int hd : {128, 64}) {
      check_attention(rng, {hk.first, hk.second, hd, 16, dctx, std::vector<int>(dctx.size(), 1)}, "decode");
    }
  // Decode, short contexts of a small batch (the serving benchmarks' case): up to 256 tokens one block of 16 warps a
  // head (at headDim 64 two heads of a kv head a block, and 32/8 takes 64-token partitions and the reduce); up to 192
  // tokens, one head a block, 12 warps instead, and up to 128 tokens 8 (attention_short_bucket()).
  for (auto hk : {std::pair<int, int>{32, 32}, {32, 8}, {6, 2}, {4, 2}})
    for (int hd : {128, 64})
      for (int longest : {256, 192, 128})
        check_attention(rng, {hk.first, hk.second, hd, 16, {145, 1, longest, 17}, {1, 1, 1, 1}}, "decode short");
  check_attention(rng, {32, 32, 128, 16, {200}, {1}}, "decode short 1 seq");
  check_attention(rng, {32, 32, 128, 16, {150}, {1}}, "decode short 1 seq");
  check_attention(rng, {32, 32, 128, 16, {100}, {1}}, "decode short 1 seq");
  // Decode, one long sequence: many partitions + reduce.
  check_attention(rng, {32, 8, 128, 16, {4097}, {1}}, "decode 1 seq");
  check_attention(rng, {4, 4, 64, 16, {3000, 64, 65}, {1, 1, 1}}, "decode");
  // Prefill / mixed: full prefills, chunked prefills (qLen < ctx), decodes in one batch.
  const std::vector<int> pctx = {7, 100, 300, 50, 529, 1}, pq = {7, 100, 64, 1, 17, 1};
  for (auto hk : {std::pair<int, int>{32, 8}, {4, 2}, {8, 8}, {6, 2}})
    for (int hd : {128, 64}) check_attention(rng, {hk.first, hk.second, hd, 16, pctx, pq}, "prefill+mixed");
  check_attention(rng, {32, 32, 128, 16, {600}, {600}}, "prefill long");
  check_attention(rng, {4, 1, 64, 8, {200, 70}, {13, 70}}, "prefill bs8");

  if (bench) {
    if (bench_rmsnorm(1, 4096) || bench_rmsnorm(128, 4096)) g_fail = true;
    for (int ctx : {160, 1024, 4096})
      for (int batch : {1, 32, 128}) {
        if (bench_decode("llama2-7b", 32, 32, batch, ctx)) g_fail = true;
        if (bench_decode("llama3-8b", 32, 8, batch, ctx)) g_fail = true;
      }
  }

  if (json) {
    Json j;
    j.begin_obj().kv("device", device_name()).kv("seed", (long long)seed).kv("pass", !g_fail);
    j.key("checks").begin_arr();
    for (auto& r : g_results)
      j.begin_obj().kv("name", r.name).kv("shape", r.shape).kv("rel_l2", r.rel_l2).kv("max_abs", r.max_abs)
          .kv("tol", r.tol).kv("pass", r.pass).end_obj();
    j.end_arr().key("bench").begin_arr();
    for (auto& b : g_bench)
      j.begin_obj().kv("name", b.name).kv("shape", b.shape).kv("median_us", b.us).kv("gb_s", b.gbs).end_obj();
    j.end_arr().end_obj();
    if (!j.write(json)) g_fail = true;
  }
  int nfail = 0;
  for (auto& r : g_results) nfail += !r.pass;
  std::printf("\n%-22s %-34s %12s %10s\n", "kernel", "shape", "median_us", "GB/s");
  for (auto& b : g_bench) std::printf("%-22s %-34s %12.2f %10.1f\n", b.name.c_str(), b.shape.c_str(), b.us, b.gbs);
  std::printf("checks: %zu, failed: %d -> %s\n", g_results.size(), nfail, g_fail ? "FAIL" : "PASS");
  return g_fail ? 1 : 0;
}
