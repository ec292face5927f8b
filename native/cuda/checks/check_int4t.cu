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
// The fused epilogues (folded RMSNorm, SiLU and RoPE pairs, the split GEMV's finish): check_int4t_epilogue.cu.
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "int4t_check.cuh"
#include "kernels/xprep.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {

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
  if (copy_bandwidth_gbps(copyBw)) return 1;
  std::printf("copy bandwidth (D2D 2 GiB, read+write): %.1f GB/s\n", copyBw);
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
  // m > 16 with fp16 activations: 16-token slices (below 33 tokens on these small shapes) and the GEMM (64-token
  // blocks): odd row counts, partial token blocks, both groups, residual.
  for (auto& sh : shapes)
    for (int group : {64, 128})
      for (int m : {17, 32, 40, 64, 100, 130})
        if (check_case(rng, sh[0], sh[1], group, m % 2 == 0, m, m == 100, checks, false)) return 1;
  for (int m : {64, 100, 130})
    for (int group : {64, 128})
      if (check_case(rng, 8192 + 37, 512, group, m != 100, m, m == 100, checks, false)) return 1;
  // 8192+ rows with k split (run 61): 2048 columns leave room for 4 splits; 32 tokens take 32-token blocks.
  for (int m : {32, 64, 130})
    if (check_case(rng, 8192 + 37, 2048, 128, m == 130, m, m == 130, checks, false)) return 1;
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
    json_checks(j, checks);
    j.key("bench").begin_arr();
    for (auto& b : br)
      j.begin_obj().kv("path", b.path).kv("rows", b.rows).kv("cols", b.cols).kv("group", 128).kv("m", b.m)
          .kv("us", b.us).kv("bytes", b.bytes).kv("gbps", b.gbps).kv("frac_copy", b.frac).end_obj();
    j.end_arr().end_obj();
    if (!j.write(jsonPath)) return 1;
  }
  return failed ? 1 : 0;
}
