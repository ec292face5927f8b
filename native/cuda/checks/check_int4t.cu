// Checks and benchmarks the tile-packed int4 matmul (native/cuda/kernels/int4_tiled.cu):
//  (a) copy bandwidth (cudaMemcpy D2D, read + write counted);
//  (b) int4_tile_pack + int4_tiled_matmul vs a CPU float64 reference on fresh random weights in the on-disk layout
//      (groups 64 and 128, symmetric and with zero points, rows not a multiple of 16, with and without the fused
//      residual), every m from 1 to 17 and 64 / 100; outputs poisoned with NaN first. Tolerances (relative L2):
//      1e-5 for m <= 8 and m > 16 (fp16 hi/lo activations, near fp32), 2e-3 for 9 <= m <= 16 (fp16 activations);
//  (c) benchmarks at Llama-2-7B shapes for m = 1, 4, 16, 64, 128: the tiled kernel (x prepared once, outside the
//      timing) beside int4_matmul (the on-disk layout kernels) in the same run: CUDA graphs of 20 launches
//      rotating over weight copies that exceed L2, median of 50 replays;
//  (d) table last, JSON to --json FILE. Exit code 1 if any check fails.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/kernels.cuh"
#include "kernels/xprep.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {

struct HostW {
  int rows, cols, group;
  bool asym;
  std::vector<uint8_t> q, zeros;
  std::vector<float> scales;
  double at(int r, int c) const {
    const uint8_t b = q[(size_t)r * (cols / 2) + c / 2];
    const int nib = (c & 1) ? b >> 4 : b & 15;
    const size_t gi = (size_t)r * (cols / group) + c / group;
    return (double)(nib - (asym ? zeros[gi] : 8)) * (double)scales[gi];
  }
  size_t bytes() const { return q.size() + scales.size() * 4 + zeros.size(); }
};

HostW make_weight(Rng& rng, int rows, int cols, int group, bool asym) {
  HostW w{rows, cols, group, asym, {}, {}, {}};
  w.q.resize((size_t)rows * cols / 2);
  for (auto& b : w.q) b = (uint8_t)rng.below(256);
  const size_t ng = (size_t)rows * (cols / group);
  w.scales.resize(ng);
  for (auto& s : w.scales) s = rng.uniform(0.002f, 0.02f);
  if (asym) {
    w.zeros.resize(ng);
    for (auto& z : w.zeros) z = (uint8_t)rng.below(16);
  }
  return w;
}

/** A packed device copy (n copies back to back for the benchmarks) and the on-disk-layout copies beside it. */
struct DevT {
  std::vector<tc::Int4Tiled> t;
  std::vector<tc::Int4Weight> raw;
  std::vector<void*> bufs;
  ~DevT() {
    for (void* p : bufs) cudaFree(p);
  }
  template <class T>
  T* alloc(size_t bytes) {
    void* p = nullptr;
    if (cudaMalloc(&p, std::max<size_t>(bytes, 16)) != cudaSuccess) return nullptr;
    bufs.push_back(p);
    return static_cast<T*>(p);
  }
};

int upload(const HostW& w, DevT& d, int copies, const int32_t* rowMap = nullptr) {
  size_t words = 0, entries = 0;
  tc::int4_tiled_sizes(w.rows, w.cols, w.group, &words, &entries);
  for (int i = 0; i < copies; ++i) {
    uint8_t* q = d.alloc<uint8_t>(w.q.size());
    float* s = d.alloc<float>(w.scales.size() * 4);
    uint8_t* z = w.asym ? d.alloc<uint8_t>(w.zeros.size()) : nullptr;
    uint32_t* tq = d.alloc<uint32_t>(words * 4);
    float* ts = d.alloc<float>(entries * 4);
    uint8_t* tz = w.asym ? d.alloc<uint8_t>(entries) : nullptr;
    if (!q || !s || !tq || !ts || (w.asym && (!z || !tz))) {
      std::fprintf(stderr, "out of device memory\n");
      return 1;
    }
    CUDA_CHECK(cudaMemcpy(q, w.q.data(), w.q.size(), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(s, w.scales.data(), w.scales.size() * 4, cudaMemcpyHostToDevice));
    if (z) CUDA_CHECK(cudaMemcpy(z, w.zeros.data(), w.zeros.size(), cudaMemcpyHostToDevice));
    tc::Int4Weight raw{q, s, z, w.rows, w.cols, w.group};
    CUDA_CHECK_LAUNCH(tc::int4_tile_pack(raw, tq, ts, tz, rowMap, 0));
    d.raw.push_back(raw);
    d.t.push_back(tc::Int4Tiled{reinterpret_cast<const uint4*>(tq), ts, tz, w.rows, w.cols, w.group});
  }
  return 0;
}

struct CheckResult {
  std::string name;
  ErrStats e;
  double tol;
  bool pass;
};

/** Finishes r's statistics against `tol`, prints its line and keeps it. */
void record(CheckResult r, double tol, std::vector<CheckResult>& out) {
  r.e.finish();
  r.tol = tol;
  r.pass = r.e.pass(tol);
  std::printf("%s %-44s rel %.3e  maxabs %.3e  tol %.0e  nonfinite %zu\n", r.pass ? "PASS" : "FAIL", r.name.c_str(),
              r.e.rel_l2, r.e.max_abs, r.tol, r.e.nonfinite);
  out.push_back(std::move(r));
}

int check_case(Rng& rng, int rows, int cols, int group, bool asym, int m, bool withResidual,
               std::vector<CheckResult>& out, bool exact = true) {
  HostW w = make_weight(rng, rows, cols, group, asym);
  DevT d;
  if (upload(w, d, 1)) return 1;
  std::vector<float> x((size_t)m * cols), res((size_t)m * rows);
  rng.fill_normal(x);
  rng.fill_normal(res);
  float *dx, *dy, *dr;
  __half* dxp;
  CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
  CUDA_CHECK(cudaMalloc(&dy, (size_t)m * rows * 4));
  CUDA_CHECK(cudaMalloc(&dr, res.size() * 4));
  CUDA_CHECK(cudaMalloc(&dxp, tc::xprep_halves(m, cols) * 2));
  const size_t wsFloats = (size_t)8 * m * ((rows + 15) / 16 * 16);
  float* dws;
  CUDA_CHECK(cudaMalloc(&dws, wsFloats * 4));
  CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dr, res.data(), res.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(poison_nan(dy, (size_t)m * rows * 4));
  if (m <= 16) CUDA_CHECK_LAUNCH(tc::xprep(dx, m, cols, dxp, 0));
  CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(dx, dxp, m <= 16, d.t[0], dy, m, withResidual ? dr : nullptr, 0, exact,
                                          tc::Int4Epilogue(), dws, wsFloats));
  std::vector<float> y((size_t)m * rows);
  CUDA_CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
  CheckResult r;
  char name[160];
  std::snprintf(name, sizeof name, "int4t %dx%d g%d %s m=%d%s%s", rows, cols, group, asym ? "asym" : "sym", m,
                withResidual ? " +res" : "",
                m > 16 && !exact ? (m >= 64 ? " [gemm]" : " [slices]") : "");
  r.name = name;
  std::vector<double> wrow(cols);
  for (int row = 0; row < rows; ++row) {
    for (int c = 0; c < cols; ++c) wrow[c] = w.at(row, c);
    for (int t = 0; t < m; ++t) {
      double ref = withResidual ? res[(size_t)t * rows + row] : 0.0;
      const float* xr = x.data() + (size_t)t * cols;
      for (int c = 0; c < cols; ++c) ref += wrow[c] * (double)xr[c];
      r.e.add(y[(size_t)t * rows + row], ref);
    }
  }
  record(std::move(r), (m <= 8 || (m > 16 && exact)) ? 1e-5 : 2e-3, out);
  cudaFree(dx), cudaFree(dy), cudaFree(dr), cudaFree(dxp), cudaFree(dws);
  return 0;
}

struct BenchResult {
  std::string path;
  int rows, cols, m, copies;
  double us, bytes, gbps, frac;
};

// path 0: tiled (x prepared once before the graph), 1: int4_matmul on the on-disk layout.
int bench(Rng& rng, int path, int rows, int cols, int m, size_t l2, double copyBw, std::vector<BenchResult>& out) {
  HostW w = make_weight(rng, rows, cols, 128, false);
  const size_t wb = w.bytes();
  int copies = (int)std::min<size_t>(24, std::max<size_t>(2, (3 * l2 + wb - 1) / wb));
  DevT d;
  if (upload(w, d, copies)) return 1;
  std::vector<float> x((size_t)m * cols);
  rng.fill_normal(x);
  float *dx, *dy;
  __half* dxp;
  CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
  CUDA_CHECK(cudaMalloc(&dy, (size_t)m * rows * 4));
  CUDA_CHECK(cudaMalloc(&dxp, tc::xprep_halves(m, cols) * 2));
  const size_t wsFloats = (size_t)8 * m * ((rows + 15) / 16 * 16);
  float* dws;
  CUDA_CHECK(cudaMalloc(&dws, wsFloats * 4));
  CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  if (m <= 16) CUDA_CHECK_LAUNCH(tc::xprep(dx, m, cols, dxp, 0));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int perGraph = 20;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < perGraph; ++i) {
    const int c = i % copies;
    cudaError_t e = path == 0 ? tc::int4_tiled_matmul(dx, dxp, m <= 16, d.t[c], dy, m, nullptr, s, false,
                                                      tc::Int4Epilogue(), dws, wsFloats)
                              : tc::int4_matmul(dx, d.raw[c], dy, m, s);
    if (e != cudaSuccess) {
      cudaStreamEndCapture(s, &g);
      CUDA_CHECK(e);
    }
  }
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  std::vector<float> ms;
  CUDA_CHECK(time_events([&](int) { return cudaGraphLaunch(ge, s); }, 5, 50, ms, s));
  const double us = median(ms) * 1000.0 / perGraph;
  const double bytes = (double)wb + (double)m * cols * 4 + (double)m * rows * 4;
  const double gbps = bytes / (us * 1e-6) / 1e9;
  const char* name = path == 0 ? "tiled" : "int4_matmul";
  out.push_back({name, rows, cols, m, copies, us, bytes, gbps, gbps / copyBw});
  std::printf("bench %-11s %5dx%-5d m=%-3d %9.2f us %8.1f GB/s %5.1f%% of copy (copies %d)\n", name, rows, cols, m, us,
              gbps, 100 * gbps / copyBw, copies);
  cudaGraphExecDestroy(ge), cudaGraphDestroy(g), cudaStreamDestroy(s);
  cudaFree(dx), cudaFree(dy), cudaFree(dxp), cudaFree(dws);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* jsonPath = arg_value(argc, argv, "--json");
  if (const char* prof = arg_value(argc, argv, "--profile")) {  // "rows,cols,m": a few plain launches for ncu
    int rows = 0, cols = 0, m = 0;
    if (std::sscanf(prof, "%d,%d,%d", &rows, &cols, &m) != 3) return 2;
    Rng rng(7);
    std::vector<BenchResult> br;
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    for (int path : {0, 1})
      if (bench(rng, path, rows, cols, m, prop.l2CacheSize, 4270.0, br)) return 1;
    return 0;
  }
  if (const char* sweep = arg_value(argc, argv, "--bench")) {  // "rows,cols,m": both paths, this shape only
    int rows = 0, cols = 0, m = 0;
    if (std::sscanf(sweep, "%d,%d,%d", &rows, &cols, &m) != 3) return 2;
    Rng rng(7);
    std::vector<BenchResult> br;
    cudaDeviceProp prop;
    CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
    if (bench(rng, 0, rows, cols, m, prop.l2CacheSize, 4270.0, br)) return 1;
    return 0;
  }
  const bool quick = has_flag(argc, argv, "--quick");
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              prop.major, prop.minor);
  double copyBw = 0;
  {
    const size_t n = (size_t)2 << 30;
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, n));
    CUDA_CHECK(cudaMalloc(&b, n));
    std::vector<float> ms;
    CUDA_CHECK(time_events([&](int) { return cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0); }, 2, 10, ms));
    copyBw = 2.0 * n / (median(ms) * 1e-3) / 1e9;
    cudaFree(a), cudaFree(b);
    std::printf("copy bandwidth (D2D 2 GiB, read+write): %.1f GB/s\n", copyBw);
  }
  Rng rng(20261126);
  std::vector<CheckResult> checks;
  const int shapes[][2] = {{37, 512}, {301, 1024}, {64, 256}, {19, 11008}};
  for (auto& sh : shapes)
    for (int group : {64, 128})
      for (bool asym : {false, true})
        for (int m : {1, 2, 3, 4, 5, 8, 9, 16, 17, 64, 100})
          if (check_case(rng, sh[0], sh[1], group, asym, m, false, checks)) return 1;
  for (int m : {1, 3, 7, 16, 40})
    if (check_case(rng, 45, 640, 64, true, m, true, checks)) return 1;
  // m > 16 with fp16 activations: 16-token slices, and the GEMM (m >= 64, rows >= 8192): odd row counts, partial
  // token blocks, both groups, residual.
  for (auto& sh : shapes)
    for (int group : {64, 128})
      for (int m : {17, 64, 100, 130})
        if (check_case(rng, sh[0], sh[1], group, m % 2 == 0, m, m == 100, checks, false)) return 1;
  for (int m : {64, 100, 130})
    for (int group : {64, 128})
      if (check_case(rng, 8192 + 37, 512, group, m != 100, m, m == 100, checks, false)) return 1;
  for (int m = 1; m <= 16; ++m)
    if (check_case(rng, 4096 / 16 + 3, 4096, 128, m % 2 == 1, m, m % 3 == 0, checks)) return 1;
  if (check_case(rng, 4096, 11008, 128, false, 1, true, checks)) return 1;
  // Many tiles (12293 rows): more blocks than fit on the GPU at once.
  for (int group : {64, 128})
    for (int m : {1, 3, 8})
      if (check_case(rng, 3 * 4096 + 5, 1024, group, m != 3, m, m == 8, checks)) return 1;
  // Producers: rmsnorm and silu_mul writing the prepared layout give the same GEMV output, bit for bit, as
  // preparing their fp32 output with xprep().
  {
    int bad = 0;
    for (int m : {1, 3, 4, 5, 12, 16}) {
      const int H = 512, I = 1408;
      HostW wq = make_weight(rng, 96, H, 128, false), wd = make_weight(rng, 80, I, 64, true);
      DevT dq, dd;
      if (upload(wq, dq, 1) || upload(wd, dd, 1)) return 1;
      std::vector<float> x((size_t)m * H), nw(H), gu((size_t)m * 2 * I);
      rng.fill_normal(x), rng.fill_uniform(nw, 0.5f, 1.5f), rng.fill_normal(gu, 2.f);
      float *dx, *dnw, *dh, *dgu, *dact, *y1, *y2;
      __half *xp1, *xp2;
      CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
      CUDA_CHECK(cudaMalloc(&dnw, H * 4));
      CUDA_CHECK(cudaMalloc(&dh, x.size() * 4));
      CUDA_CHECK(cudaMalloc(&dgu, gu.size() * 4));
      CUDA_CHECK(cudaMalloc(&dact, (size_t)m * I * 4));
      CUDA_CHECK(cudaMalloc(&y1, (size_t)m * 96 * 4));
      CUDA_CHECK(cudaMalloc(&y2, (size_t)m * 96 * 4));
      CUDA_CHECK(cudaMalloc(&xp1, tc::xprep_halves(m, I) * 2));
      CUDA_CHECK(cudaMalloc(&xp2, tc::xprep_halves(m, I) * 2));
      CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dnw, nw.data(), H * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dgu, gu.data(), gu.size() * 4, cudaMemcpyHostToDevice));
      std::vector<float> a((size_t)m * 96), b((size_t)m * 96);
      // rmsnorm -> QKV-like weight
      CUDA_CHECK_LAUNCH(tc::rmsnorm(dx, nullptr, dnw, dh, m, H, 1e-5f, 0, xp1));
      CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(dh, xp1, true, dq.t[0], y1, m, nullptr, 0));
      CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(dh, xp2, false, dq.t[0], y2, m, nullptr, 0));
      CUDA_CHECK(cudaMemcpy(a.data(), y1, (size_t)m * 96 * 4, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(b.data(), y2, (size_t)m * 96 * 4, cudaMemcpyDeviceToHost));
      for (int i = 0; i < m * 96; ++i) bad += !(a[i] == b[i]);
      // silu_mul -> down-like weight (80 rows)
      CUDA_CHECK_LAUNCH(tc::silu_mul(dgu, dact, m, I, 0, xp1));
      CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(dact, xp1, true, dd.t[0], y1, m, nullptr, 0));
      CUDA_CHECK_LAUNCH(tc::int4_tiled_matmul(dact, xp2, false, dd.t[0], y2, m, nullptr, 0));
      CUDA_CHECK(cudaMemcpy(a.data(), y1, (size_t)m * 80 * 4, cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(b.data(), y2, (size_t)m * 80 * 4, cudaMemcpyDeviceToHost));
      for (int i = 0; i < m * 80; ++i) bad += !(a[i] == b[i]);
      cudaFree(dx), cudaFree(dnw), cudaFree(dh), cudaFree(dgu), cudaFree(dact), cudaFree(y1), cudaFree(y2);
      cudaFree(xp1), cudaFree(xp2);
    }
    CheckResult r;
    r.name = "rmsnorm/silu_mul prepared output = xprep of their fp32 output";
    r.e.add(bad, 0);
    r.e.finish();
    r.tol = 0;
    r.pass = bad == 0;
    std::printf("%s %s (%d mismatches)\n", r.pass ? "PASS" : "FAIL", r.name.c_str(), bad);
    checks.push_back(r);
  }
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
  for (int m : {1, 3, 8, 13, 20, 100})
  for (int split : {0, 1, 2}) {
    if (split && m > tc::kSplitMaxTokens) continue;
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
  // argument validation
  bool argsOk = tc::int4_tiled_matmul(nullptr, nullptr, true, tc::Int4Tiled{}, nullptr, 1, nullptr, 0) ==
                    cudaErrorInvalidValue &&
                !tc::int4_tiled_supported(16, 96, 32) && !tc::int4_tiled_supported(16, 96, 64) &&
                tc::int4_tiled_supported(17, 128, 64);
  cudaGetLastError();
  std::printf("%s argument validation\n", argsOk ? "PASS" : "FAIL");
  int failed = argsOk ? 0 : 1;
  for (auto& c : checks) failed += c.pass ? 0 : 1;

  std::vector<BenchResult> br;
  if (!quick) {
    const int bshapes[][2] = {{4096, 4096}, {12288, 4096}, {22016, 4096}, {4096, 11008}};
    for (auto& sh : bshapes)
      for (int m : {1, 4, 16, 64, 128})
        for (int path : {0, 1})
          if (bench(rng, path, sh[0], sh[1], m, prop.l2CacheSize, copyBw, br)) return 1;
    std::printf("\n%-11s %-12s %4s %10s %9s %7s\n", "path", "rows x cols", "m", "us", "GB/s", "%copy");
    for (auto& b : br)
      std::printf("%-11s %5dx%-6d %4d %10.2f %9.1f %6.1f%%\n", b.path.c_str(), b.rows, b.cols, b.m, b.us, b.gbps,
                  100 * b.frac);
  }
  std::printf("\n%d checks, %d failed\n", (int)checks.size() + 1, failed);
  if (jsonPath) {
    Json j;
    j.begin_obj().kv("device", prop.name).kv("copy_gbps", copyBw).kv("checks_failed", failed);
    j.key("checks").begin_arr();
    for (auto& c : checks)
      j.begin_obj().kv("name", c.name).kv("rel_l2", c.e.rel_l2).kv("max_abs", c.e.max_abs).kv("tol", c.tol)
          .kv("pass", c.pass).end_obj();
    j.end_arr().key("bench").begin_arr();
    for (auto& b : br)
      j.begin_obj().kv("path", b.path).kv("rows", b.rows).kv("cols", b.cols).kv("group", 128).kv("m", b.m)
          .kv("us", b.us).kv("bytes", b.bytes).kv("gbps", b.gbps).kv("frac_copy", b.frac).end_obj();
    j.end_arr().end_obj();
    if (!j.write(jsonPath)) return 1;
  }
  return failed ? 1 : 0;
}
