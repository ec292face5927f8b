// Checks the fused epilogues of the tile-packed int4 matmul (native/cuda/kernels/int4_tiled.cu,
// int4_tiled_split.cu) against float64 references on fresh random data, outputs poisoned with NaN first:
//  (a) the folded RMSNorm (Int4Epilogue normW / ssqOut / ssqIn) between an O-like and a gate/up-like GEMV, the
//      producer's prepared output also through an act-order consumer's column map (xpMap; bitwise);
//  (b) the pair epilogues (SiLU-and-multiply; RoPE with the KV-cache write) on row-reordered packs, also with k
//      split across two blocks a tile (the slot sums, then int4_pair_finish).
// Tolerances (relative L2): 1e-5 for m <= 8 (fp16 hi/lo activations), 2e-3 for 9 <= m <= 16; the fp16 KV cache
// 1e-3. JSON to --json FILE. Exit code 1 if any check fails. The plain matmul and its benchmarks: check_int4t.cu.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "int4t_check.cuh"
#include "kernels/xprep.cuh"
#include "xp_map_check.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

int main(int argc, char** argv) {
  const char* jsonPath = arg_value(argc, argv, "--json");
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.major, prop.minor);
  Rng rng(20261127);
  std::vector<CheckResult> checks;
  // Folded RMSNorm (Int4Epilogue.normW / ssqOut / ssqIn): an O-like GEMV adds its rows into the residual stream in
  // place and prepares (x * w) for the next GEMV with per-block sums of squares; a gate/up-like GEMV scales its
  // rows by r = 1 / rms(x) before SiLU. Against float64: x1 = x0 + a Wo^T, h = x1 r w, act = silu(h Wg^T) (h Wu^T).
  // H = 4096: 256 partial sums a token (as Llama-2-7B), read by 16 warps; with k split across blocks.
  for (int m : {1, 3, 8, 12, 16})
  for (int H : {256, 4096}) {
    const int K = 192, inter = 48;
    HostW wo = make_weight(rng, H, K, 64, m % 2 == 0), wgu = make_weight(rng, 2 * inter, H, 64, m % 2 == 1);
    const std::vector<int32_t> map = tc::int4_tile_row_map(tc::Int4RowOrder::kGateUpPairs, 2 * inter, 0, 0, 0);
    int32_t* dmap;
    CUDA_CHECK(cudaMalloc(&dmap, map.size() * 4));
    CUDA_CHECK(cudaMemcpy(dmap, map.data(), map.size() * 4, cudaMemcpyHostToDevice));
    DevT d1, d2;
    if (upload(wo, d1, 1) || upload(wgu, d2, 1, dmap)) return 1;
    std::vector<float> x0((size_t)m * H), a((size_t)m * K), nw(H);
    rng.fill_normal(x0, 3.f), rng.fill_normal(a), rng.fill_uniform(nw, 0.5f, 1.5f);
    const float eps = 1e-5f;
    std::vector<double> x1((size_t)m * H), act((size_t)m * inter);
    for (int t = 0; t < m; ++t) {
      double ss = 0;
      for (int r = 0; r < H; ++r) {
        double v = x0[(size_t)t * H + r];
        for (int c = 0; c < K; ++c) v += wo.at(r, c) * (double)a[(size_t)t * K + c];
        x1[(size_t)t * H + r] = v, ss += v * v;
      }
      const double rn = 1.0 / std::sqrt(ss / H + eps);
      for (int j = 0; j < inter; ++j) {
        double g = 0, u = 0;
        for (int c = 0; c < H; ++c) {
          const double h = x1[(size_t)t * H + c] * rn * nw[c];
          g += wgu.at(j, c) * h, u += wgu.at(inter + j, c) * h;
        }
        act[(size_t)t * inter + j] = g / (1.0 + std::exp(-g)) * u;
      }
    }
    float *dx, *da, *dnw, *dssq, *dact;
    __half *xpa, *xpn;
    CUDA_CHECK(cudaMalloc(&dx, x0.size() * 4));
    CUDA_CHECK(cudaMalloc(&da, a.size() * 4));
    CUDA_CHECK(cudaMalloc(&dnw, H * 4));
    CUDA_CHECK(cudaMalloc(&dssq, (size_t)m * (H / 16) * 4));
    CUDA_CHECK(cudaMalloc(&dact, (size_t)m * inter * 4));
    CUDA_CHECK(cudaMalloc(&xpa, tc::xprep_halves(m, K) * 2));
    CUDA_CHECK(cudaMalloc(&xpn, tc::xprep_halves(m, H) * 2));
    CUDA_CHECK(cudaMemcpy(dx, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(da, a.data(), a.size() * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dnw, nw.data(), H * 4, cudaMemcpyHostToDevice));
    CUDA_CHECK(poison_nan(dact, (size_t)m * inter * 4));
    CUDA_CHECK(poison_nan(dssq, (size_t)m * (H / 16) * 4));
    CUDA_CHECK_LAUNCH(tc::xprep(da, m, K, xpa, 0));
    tc::Int4Epilogue pe;
    pe.accumulate = true, pe.normW = dnw, pe.xpOut = xpn, pe.ssqOut = dssq;
    CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(da, xpa, true, d1.t[0], dx, m, nullptr, 0, false, pe));
    std::vector<float> gx(x1.size()), gact(act.size());
    CUDA_CHECK(cudaMemcpy(gx.data(), dx, gx.size() * 4, cudaMemcpyDeviceToHost));
    {  // The producer again, its prepared output through an act-order consumer's column map (x restored first).
      const std::vector<int32_t> cmap = inverse_perm(random_perm(rng, H));
      const size_t nxp = tc::xprep_halves(m, H);
      std::vector<__half> plain(nxp), mapped(nxp);
      int32_t* dcmap;
      __half* xpm;
      CUDA_CHECK(cudaMalloc(&dcmap, (size_t)H * 4));
      CUDA_CHECK(cudaMalloc(&xpm, nxp * 2));
      CUDA_CHECK(cudaMemcpy(dcmap, cmap.data(), (size_t)H * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dx, x0.data(), x0.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(poison_nan(xpm, nxp * 2));
      tc::Int4Epilogue me = pe;
      me.xpOut = xpm, me.xpMap = dcmap;
      CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(da, xpa, true, d1.t[0], dx, m, nullptr, 0, false, me));
      CUDA_CHECK(cudaMemcpy(plain.data(), xpn, nxp * 2, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(mapped.data(), xpm, nxp * 2, cudaMemcpyDeviceToHost));
      const size_t bad = xp_map_mismatches(plain, mapped, cmap, m, H);
      std::printf("%s folded norm m=%d H=%d: prepared input through a column map, %zu halves differ\n",
                  bad ? "FAIL" : "PASS", m, H, bad);
      if (bad) return 1;
      cudaFree(dcmap), cudaFree(xpm);
    }
    // The residual, the consumer, and the consumer with k split (splitParts; H = 4096 has the groups for it).
    for (int part = 0; part < 3; ++part) {
      if (part >= 2 && (m > tc::kSplitMaxTokens || H < 1024)) continue;
      CheckResult r;
      char name[112];
      if (part > 0) {
        tc::Int4Epilogue ce;
        ce.kind = tc::Int4Epilogue::kSiluPairs, ce.ssqIn = dssq, ce.ssqParts = H / 16, ce.normCols = H, ce.eps = eps;
        float* dparts = nullptr;  // two slots of m x rows, poisoned: every entry must be written
        if (part >= 2) {
          CUDA_CHECK(cudaMalloc(&dparts, (size_t)2 * m * 2 * inter * 4));
          CUDA_CHECK(poison_nan(dparts, (size_t)2 * m * 2 * inter * 4));
          ce.splitParts = dparts;
        }
        CUDA_CHECK(poison_nan(dact, (size_t)m * inter * 4));
        CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(nullptr, xpn, true, d2.t[0], dact, m, nullptr, 0, false, ce));
        CUDA_CHECK(cudaMemcpy(gact.data(), dact, gact.size() * 4, cudaMemcpyDeviceToHost));
        cudaFree(dparts);
      }
      std::snprintf(name, sizeof name, "folded norm m=%d H=%d: %s", m, H,
                    part == 0   ? "residual in place"
                    : part == 1 ? "silu(r W (x w))"
                                : "silu(r W (x w)), k split");
      r.name = name;
      if (part == 0)
        for (size_t i = 0; i < gx.size(); ++i) r.e.add(gx[i], x1[i]);
      else
        for (size_t i = 0; i < gact.size(); ++i) r.e.add(gact[i], act[i]);
      record(std::move(r), m <= 8 ? 1e-5 : 2e-3, checks);
    }
    // Refused where it cannot run: more than 16 tokens, or x not prepared.
    const bool refused = tc::int4_tiled_matmul(da, xpa, false, d1.t[0], dx, m, nullptr, 0, false, pe) != cudaSuccess;
    cudaGetLastError();
    if (!refused) {
      std::printf("FAIL folded norm m=%d: accepted without a prepared input\n", m);
      return 1;
    }
    cudaFree(dx), cudaFree(da), cudaFree(dnw), cudaFree(dssq), cudaFree(dact), cudaFree(xpa), cudaFree(xpn);
    cudaFree(dmap);
  }
  // Fused epilogues on row-reordered packs, against the CPU reference of the plain product:
  // kSiluPairs: y = silu(gate) * up (gate rows 0..inter-1, up rows inter..2 inter-1);
  // kRopeQkv: q rotated, k rotated into the cache slot, v copied (rotate-half RoPE, cos/sin from a table).
  // split 1: k across two blocks a tile, each half's sums in its slot of Int4Epilogue::splitParts (poisoned first;
  // slot 0 + slot 1 checked against the plain product), then the epilogue in int4_pair_finish (up to
  // kSplitMaxTokens tokens, at least 16 groups: 2048 columns here). split 2: the same in one call (the finish
  // launched by int4_tiled_matmul, as the engine runs it).
  // TPSERVE_T_KS forces the warps a tile, which turns the split path off by design (gemv_slice): its cases are left
  // out then, and the run says so.
  const char* forcedKs = std::getenv("TPSERVE_T_KS");
  if (forcedKs && *forcedKs) std::printf("TPSERVE_T_KS=%s: the k-split cases are left out (no split path)\n", forcedKs);
  for (int m : {1, 3, 8, 13, 20, 100})
  for (int split : {0, 1, 2}) {
    if (split && (m > tc::kSplitMaxTokens || (forcedKs && *forcedKs))) continue;
    for (int kind : {1, 2}) {
      const bool exact = m != 100;  // m = 100: the GEMM's epilogue
      const int heads = 4, kvHeads = 2, D = 32, half = D / 2, inter = 48, cols = split ? 2048 : 256;
      const int rows = kind == 1 ? 2 * inter : (heads + 2 * kvHeads) * D;
      // split: silu pairs with group 128 and no zero points (the dummy benchmarks'), rope with group 64 and zeros.
      HostW w = make_weight(rng, rows, cols, split && kind == 1 ? 128 : 64, split ? kind == 2 : m % 2 == 1);
      const std::vector<int32_t> map = tc::int4_tile_row_map(
          kind == 1 ? tc::Int4RowOrder::kGateUpPairs : tc::Int4RowOrder::kRopePairs, rows, heads, kvHeads, D);
      int32_t* dmap;
      CUDA_CHECK(cudaMalloc(&dmap, map.size() * 4));
      CUDA_CHECK(cudaMemcpy(dmap, map.data(), map.size() * 4, cudaMemcpyHostToDevice));
      DevT d;
      if (upload(w, d, 1, dmap)) return 1;
      std::vector<float> x((size_t)m * cols);
      rng.fill_normal(x);
      std::vector<double> ref((size_t)m * rows);  // plain product
      for (int r = 0; r < rows; ++r)
        for (int t = 0; t < m; ++t) {
          double acc = 0;
          for (int c = 0; c < cols; ++c) acc += w.at(r, c) * (double)x[(size_t)t * cols + c];
          ref[(size_t)t * rows + r] = acc;
        }
      const int maxPos = 64, nSlots = 128;
      std::vector<float> cosT(maxPos * half), sinT(maxPos * half);
      for (int p = 0; p < maxPos; ++p)
        for (int i = 0; i < half; ++i) {
          const double ang = p * std::pow(10000.0, -2.0 * i / D);
          cosT[p * half + i] = (float)std::cos(ang), sinT[p * half + i] = (float)std::sin(ang);
        }
      std::vector<int32_t> pos(m), slots(m);
      for (int t = 0; t < m; ++t) pos[t] = (t * 7 + 3) % maxPos, slots[t] = t % 5 == 4 ? -1 : (t * 3) % nSlots;
      float *dx, *dy, *dq, *dc, *ds;
      tc::kv_t *dk, *dv;  // the fp16 KV cache
      int32_t *dpos, *dslot;
      __half* dxp;
      const int kvd = kvHeads * D, qd = heads * D;
      CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
      CUDA_CHECK(cudaMalloc(&dy, (size_t)m * inter * 4));
      CUDA_CHECK(cudaMalloc(&dq, (size_t)m * qd * 4));
      CUDA_CHECK(cudaMalloc(&dk, (size_t)nSlots * kvd * sizeof(tc::kv_t)));
      CUDA_CHECK(cudaMalloc(&dv, (size_t)nSlots * kvd * sizeof(tc::kv_t)));
      CUDA_CHECK(cudaMalloc(&dc, cosT.size() * 4));
      CUDA_CHECK(cudaMalloc(&ds, sinT.size() * 4));
      CUDA_CHECK(cudaMalloc(&dpos, m * 4));
      CUDA_CHECK(cudaMalloc(&dslot, m * 4));
      CUDA_CHECK(cudaMalloc(&dxp, tc::xprep_halves(m, std::max(cols, inter)) * 2));
      CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dc, cosT.data(), cosT.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(ds, sinT.data(), sinT.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dpos, pos.data(), m * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dslot, slots.data(), m * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(poison_nan(dy, (size_t)m * inter * 4));
      CUDA_CHECK(poison_nan(dq, (size_t)m * qd * 4));
      CUDA_CHECK(poison_nan(dk, (size_t)nSlots * kvd * sizeof(tc::kv_t)));
      CUDA_CHECK(poison_nan(dv, (size_t)nSlots * kvd * sizeof(tc::kv_t)));
      tc::Int4Epilogue ep;
      ep.kind = kind == 1 ? tc::Int4Epilogue::kSiluPairs : tc::Int4Epilogue::kRopeQkv;
      ep.positions = dpos, ep.slots = dslot, ep.q = dq, ep.kCache = dk, ep.vCache = dv, ep.ropeCos = dc;
      ep.ropeSin = ds, ep.heads = heads, ep.kvHeads = kvHeads, ep.headDim = D;
      const size_t wsF = (size_t)8 * m * ((rows + 15) / 16 * 16);
      float *dws, *dparts = nullptr;
      CUDA_CHECK(cudaMalloc(&dws, wsF * 4));
      if (split) {
        CUDA_CHECK(cudaMalloc(&dparts, (size_t)2 * m * rows * 4));
        CUDA_CHECK(poison_nan(dparts, (size_t)2 * m * rows * 4));
        ep.splitParts = dparts, ep.splitDeferFinish = split == 1;  // the sums checked first, then int4_pair_finish
      }
      CUDA_CHECK_LAUNCH(
          tc::int4_tiled_matmul(dx, dxp, false, d.t[0], kind == 1 ? dy : nullptr, m, nullptr, 0, exact, ep, dws, wsF));
      cudaFree(dws);
      const std::string tag = std::string(split == 1 ? " split" : split == 2 ? " split+finish" : "") + " m=" + std::to_string(m);
      if (split == 1) {  // slot 0 + slot 1: the plain product in packed row order
        std::vector<float> parts((size_t)2 * m * rows);
        CUDA_CHECK(cudaMemcpy(parts.data(), dparts, parts.size() * 4, cudaMemcpyDeviceToHost));
        CheckResult ra;
        ra.name = std::string(kind == 1 ? "split sums silu pairs" : "split sums rope qkv") + tag;
        for (int t = 0; t < m; ++t)
          for (int pr = 0; pr < rows; ++pr) {
            const size_t i = (size_t)t * rows + pr;
            if (map[pr] >= 0) ra.e.add(parts[i] + parts[(size_t)m * rows + i], ref[(size_t)t * rows + map[pr]]);
          }
        record(std::move(ra), 1e-5, checks);
        CUDA_CHECK_LAUNCH(tc::int4_pair_finish(ep, rows, m, kind == 1 ? dy : nullptr, 0));
      }
      cudaFree(dparts);
      CheckResult r, rkv;  // rkv: the K/V cache writes, stored in fp16
      r.name = std::string(kind == 1 ? "epilogue silu pairs" : "epilogue rope qkv") + tag;
      rkv.name = "epilogue rope qkv: fp16 k/v" + tag;
      if (kind == 1) {
        std::vector<float> y((size_t)m * inter);
        CUDA_CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
        for (int t = 0; t < m; ++t)
          for (int j = 0; j < inter; ++j) {
            const double g = ref[(size_t)t * rows + j], u = ref[(size_t)t * rows + inter + j];
            r.e.add(y[(size_t)t * inter + j], g / (1.0 + std::exp(-g)) * u);
          }
      } else {
        std::vector<float> q((size_t)m * qd), kc((size_t)nSlots * kvd), vc((size_t)nSlots * kvd);
        std::vector<tc::kv_t> kh(kc.size()), vh(vc.size());
        CUDA_CHECK(cudaMemcpy(q.data(), dq, q.size() * 4, cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(kh.data(), dk, kh.size() * sizeof(tc::kv_t), cudaMemcpyDeviceToHost));
        CUDA_CHECK(cudaMemcpy(vh.data(), dv, vh.size() * sizeof(tc::kv_t), cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < kh.size(); ++i) kc[i] = __half2float(kh[i]), vc[i] = __half2float(vh[i]);
        for (int t = 0; t < m; ++t) {
          const double* row = ref.data() + (size_t)t * rows;
          for (int h = 0; h < heads + kvHeads; ++h) {
            if (h >= heads && slots[t] < 0) continue;
            for (int i = 0; i < half; ++i) {
              const double a = row[h * D + i], b = row[h * D + half + i];
              const double c = cosT[pos[t] * half + i], sn = sinT[pos[t] * half + i];
              const float* out = h < heads ? q.data() + (size_t)t * qd + h * D
                                           : kc.data() + (size_t)slots[t] * kvd + (h - heads) * D;
              ErrStats& e = h < heads ? r.e : rkv.e;
              e.add(out[i], a * c - b * sn);
              e.add(out[i + half], b * c + a * sn);
            }
          }
          if (slots[t] >= 0)
            for (int v = 0; v < kvd; ++v) rkv.e.add(vc[(size_t)slots[t] * kvd + v], row[qd + kvd + v]);
        }
      }
      const double tol = m <= 8 || (m > 16 && exact) ? 1e-5 : 2e-3;
      record(std::move(r), tol, checks);
      if (kind == 2) record(std::move(rkv), std::max(tol, 1e-3), checks);  // the fp16 cache: 2^-11 a value
      cudaFree(dx), cudaFree(dy), cudaFree(dq), cudaFree(dk), cudaFree(dv), cudaFree(dc), cudaFree(ds);
      cudaFree(dpos), cudaFree(dslot), cudaFree(dxp), cudaFree(dmap);
    }
  }
  int failed = 0;
  for (auto& c : checks) failed += c.pass ? 0 : 1;
  std::printf("\n%d checks, %d failed\n", (int)checks.size(), failed);
  if (jsonPath) {
    Json j;
    j.begin_obj().kv("device", prop.name).kv("checks_failed", failed);
    json_checks(j, checks);
    j.end_obj();
    if (!j.write(jsonPath)) return 1;
  }
  return failed ? 1 : 0;
}
