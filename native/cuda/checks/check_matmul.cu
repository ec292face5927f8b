// Checks and benchmarks the matmul kernels (native/cuda/kernels/matmul.cu):
//  (a) copy bandwidth (cudaMemcpy D2D, read + write counted);
//  (b) every kernel vs a CPU float64 reference, fresh random data, output poisoned with NaN, every element checked
//      (or a random subset of rows for the big shapes); argument validation;
//  (c) int4 / bf16 benchmarks at Llama-2-7B shapes: CUDA graph of 20 launches rotating over weight copies that exceed
//      L2 (so DRAM is measured), median of 50 replays;
//  (d) table last, JSON to --json FILE. Exit code 1 if any check fails.
// Usage: check_matmul [--json FILE] [--quick] (--quick: checks only, no benchmarks)
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/kernels.cuh"
#include "kernels/matmul_variants.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {

enum Kind { kInt4, kBf16, kF32 };
const char* kind_name(Kind k) { return k == kInt4 ? "int4" : k == kBf16 ? "bf16" : "f32"; }

struct HostW {
  Kind kind;
  int rows, cols, group;
  bool asym;
  std::vector<uint8_t> q, zeros;
  std::vector<float> scales, f32;
  std::vector<__nv_bfloat16> bf;
  size_t bytes() const {
    if (kind == kInt4) return q.size() + scales.size() * 4 + zeros.size();
    return kind == kBf16 ? bf.size() * 2 : f32.size() * 4;
  }
  double at(int r, int c) const {
    if (kind == kInt4) {
      uint8_t b = q[(size_t)r * (cols / 2) + c / 2];
      int nib = (c & 1) ? b >> 4 : b & 15;
      size_t gi = (size_t)r * (cols / group) + c / group;
      int z = asym ? zeros[gi] : 8;
      return (double)(nib - z) * (double)scales[gi];
    }
    if (kind == kBf16) return (double)__bfloat162float(bf[(size_t)r * cols + c]);
    return (double)f32[(size_t)r * cols + c];
  }
};

HostW make_weight(Rng& rng, Kind kind, int rows, int cols, int group, bool asym) {
  HostW w{kind, rows, cols, group, asym, {}, {}, {}, {}, {}};
  if (kind == kInt4) {
    w.q.resize((size_t)rows * cols / 2);
    for (auto& b : w.q) b = (uint8_t)rng.below(256);
    size_t ng = (size_t)rows * (cols / group);
    w.scales.resize(ng);
    for (auto& s : w.scales) s = rng.uniform(0.002f, 0.02f);
    if (asym) {
      w.zeros.resize(ng);
      for (auto& z : w.zeros) z = (uint8_t)rng.below(16);
    }
  } else if (kind == kBf16) {
    w.bf.resize((size_t)rows * cols);
    for (auto& v : w.bf) v = __float2bfloat16(rng.normal() * 0.05f);
  } else {
    w.f32.resize((size_t)rows * cols);
    for (auto& v : w.f32) v = rng.normal() * 0.05f;
  }
  return w;
}

// Device copy of one weight, with n copies back to back (for benchmarks).
struct DevW {
  uint8_t* q = nullptr;
  float* scales = nullptr;
  uint8_t* zeros = nullptr;
  void* dense = nullptr;
  size_t qB = 0, sB = 0, zB = 0, dB = 0;
  int copies = 1;
  void free_all() {
    cudaFree(q), cudaFree(scales), cudaFree(zeros), cudaFree(dense);
    q = nullptr, scales = nullptr, zeros = nullptr, dense = nullptr;
  }
};

static size_t round_up(size_t v, size_t a) { return (v + a - 1) / a * a; }

int upload(const HostW& w, DevW& d, int copies) {
  d.copies = copies;
  if (w.kind == kInt4) {
    d.qB = round_up(w.q.size(), 256), d.sB = round_up(w.scales.size() * 4, 256), d.zB = round_up(w.zeros.size(), 256);
    CUDA_CHECK(cudaMalloc(&d.q, d.qB * copies));
    CUDA_CHECK(cudaMalloc(&d.scales, d.sB * copies));
    if (w.asym) CUDA_CHECK(cudaMalloc(&d.zeros, d.zB * copies));
    for (int i = 0; i < copies; ++i) {
      CUDA_CHECK(cudaMemcpy(d.q + d.qB * i, w.q.data(), w.q.size(), cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy((char*)d.scales + d.sB * i, w.scales.data(), w.scales.size() * 4, cudaMemcpyHostToDevice));
      if (w.asym) CUDA_CHECK(cudaMemcpy(d.zeros + d.zB * i, w.zeros.data(), w.zeros.size(), cudaMemcpyHostToDevice));
    }
  } else {
    size_t n = w.kind == kBf16 ? w.bf.size() * 2 : w.f32.size() * 4;
    const void* src = w.kind == kBf16 ? (const void*)w.bf.data() : (const void*)w.f32.data();
    d.dB = round_up(n, 256);
    CUDA_CHECK(cudaMalloc(&d.dense, d.dB * copies));
    for (int i = 0; i < copies; ++i) CUDA_CHECK(cudaMemcpy((char*)d.dense + d.dB * i, src, n, cudaMemcpyHostToDevice));
  }
  return 0;
}

// int4 variant for run_kernel (matmul_variants.cuh): -1 = int4_matmul, 0.. = int4_matmul_variant.
int g_variant = -1;

cudaError_t run_kernel(const HostW& w, const DevW& d, int copy, const float* x, float* y, int m, cudaStream_t s) {
  if (w.kind == kInt4) {
    tc::Int4Weight iw{d.q + d.qB * copy, (const float*)((const char*)d.scales + d.sB * copy),
                      w.asym ? d.zeros + d.zB * copy : nullptr, w.rows, w.cols, w.group};
    if (g_variant >= 0) return tc::int4_matmul_variant(x, iw, y, m, g_variant, s);
    return tc::int4_matmul(x, iw, y, m, s);
  }
  if (w.kind == kBf16)
    return tc::bf16_matmul(x, (const __nv_bfloat16*)((const char*)d.dense + d.dB * copy), w.rows, w.cols, y, m, s);
  return tc::f32_matmul(x, (const float*)((const char*)d.dense + d.dB * copy), w.rows, w.cols, y, m, s);
}

// Mirrors the dispatch in matmul.cu: bf16 tensor-core operands for int4/bf16 at m > 16 when aligned, cols % 64 == 0.
bool uses_tensor_cores(const HostW& w, int m, bool xAligned) {
  if (w.kind == kF32 || m <= 16 || !xAligned || w.cols % 64 != 0) return false;
  return w.kind == kBf16 || w.group % 32 == 0;
}

struct CheckResult {
  std::string name;
  double rel, maxabs, tol;
  size_t nonfinite, checked;
  bool pass;
};

std::vector<CheckResult> g_checks;
bool g_fail = false;

int check_case(Rng& rng, Kind kind, int rows, int cols, int group, bool asym, int m, int subsetRows, bool xMisalign,
               const HostW* shared = nullptr, const DevW* sharedDev = nullptr) {
  HostW local;
  DevW dlocal;
  const HostW* w = shared;
  const DevW* d = sharedDev;
  if (!w) {
    local = make_weight(rng, kind, rows, cols, group, asym);
    if (upload(local, dlocal, 1)) return 1;
    w = &local, d = &dlocal;
  }
  std::vector<float> x((size_t)m * cols);
  rng.fill_normal(x);
  float *dx = nullptr, *dy = nullptr;
  int off = xMisalign ? 1 : 0;
  CUDA_CHECK(cudaMalloc(&dx, (x.size() + 4) * 4));
  CUDA_CHECK(cudaMalloc(&dy, (size_t)m * rows * 4));
  CUDA_CHECK(cudaMemcpy(dx + off, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  CUDA_CHECK(poison_nan(dy, (size_t)m * rows * 4));
  cudaError_t ke = run_kernel(*w, *d, 0, dx + off, dy, m, 0);
  if (ke == cudaErrorNotSupported && g_variant > 0) {  // variant not applicable to this case: skipped
    cudaGetLastError();
    cudaFree(dx), cudaFree(dy);
    if (!shared) dlocal.free_all();
    return 0;
  }
  CUDA_CHECK(ke);
  CUDA_CHECK(cudaDeviceSynchronize());
  std::vector<float> y((size_t)m * rows);
  CUDA_CHECK(cudaMemcpy(y.data(), dy, y.size() * 4, cudaMemcpyDeviceToHost));
  cudaFree(dx), cudaFree(dy);
  if (!shared) dlocal.free_all();

  std::vector<int> rowsToCheck;
  if (subsetRows <= 0 || subsetRows >= rows) {
    for (int r = 0; r < rows; ++r) rowsToCheck.push_back(r);
  } else {
    for (int i = 0; i < subsetRows; ++i) rowsToCheck.push_back((int)rng.below(rows));
    rowsToCheck.push_back(rows - 1);
  }
  ErrStats st;
  std::vector<double> wr(cols);
  for (int r : rowsToCheck) {
    for (int c = 0; c < cols; ++c) wr[c] = w->at(r, c);
    for (int mi = 0; mi < m; ++mi) {
      double ref = 0;
      const float* xr = x.data() + (size_t)mi * cols;
      for (int c = 0; c < cols; ++c) ref += wr[c] * (double)xr[c];
      st.add(y[(size_t)mi * rows + r], ref);
    }
  }
  // Unchecked rows must still be written (no NaN left from the poison).
  if (subsetRows > 0 && subsetRows < rows)
    for (float v : y)
      if (!std::isfinite(v)) ++st.nonfinite;
  st.finish();
  bool tcPath = uses_tensor_cores(*w, m, !xMisalign);
  if (kind == kInt4 && g_variant > 0) tcPath = tc::int4_variant_bf16(g_variant);
  // default dispatch (int4_matmul) at 2 <= m <= 16: the tensor-core decode GEMV when the variant it picks is bf16
  // and above 16 rows, where int4_matmul runs 16-row chunks of it (tc::int4_chunked tells when)
  if (kind == kInt4 && g_variant <= 0 && m >= 2 && !xMisalign && cols % 32 == 0 && group % 32 == 0 &&
      (m <= 16 || tc::int4_chunked(m, rows, cols)))
    tcPath = true;
  double tol = tcPath ? 1e-2 : 1e-5;
  char name[160];
  std::string vname = kind == kInt4 && g_variant > 0 ? std::string(" v") + std::to_string(g_variant) : "";
  std::snprintf(name, sizeof name, "%s%s %dx%d%s m=%d%s%s%s", kind_name(kind), vname.c_str(), rows, cols,
                kind == kInt4 ? (std::string(" g") + std::to_string(group) + (asym ? " asym" : " sym")).c_str() : "",
                m, xMisalign ? " x-unaligned" : "", tcPath ? " [tc bf16]" : "",
                subsetRows > 0 && subsetRows < rows ? " [row subset]" : "");
  bool pass = st.pass(tol);
  g_checks.push_back({name, st.rel_l2, st.max_abs, tol, st.nonfinite, st.count, pass});
  if (!pass) g_fail = true;
  std::printf("%-4s %-58s rel %.3e  maxabs %.3e  tol %.0e  nonfinite %zu\n", pass ? "PASS" : "FAIL", name, st.rel_l2,
              st.max_abs, tol, st.nonfinite);
  return 0;
}

int check_invalid() {
  float *dx, *dy;
  uint8_t* q;
  float* s;
  CUDA_CHECK(cudaMalloc(&dx, 4096));
  CUDA_CHECK(cudaMalloc(&dy, 4096));
  CUDA_CHECK(cudaMalloc(&q, 4096));
  CUDA_CHECK(cudaMalloc(&s, 4096));
  struct T { const char* what; cudaError_t got; };
  std::vector<T> ts;
  ts.push_back({"int4 group 3", tc::int4_matmul(dx, tc::Int4Weight{q, s, nullptr, 4, 12, 3}, dy, 1, 0)});
  ts.push_back({"int4 cols%group", tc::int4_matmul(dx, tc::Int4Weight{q, s, nullptr, 4, 96, 64}, dy, 1, 0)});
  ts.push_back({"int4 m=0", tc::int4_matmul(dx, tc::Int4Weight{q, s, nullptr, 4, 64, 32}, dy, 0, 0)});
  ts.push_back({"int4 null scales", tc::int4_matmul(dx, tc::Int4Weight{q, nullptr, nullptr, 4, 64, 32}, dy, 1, 0)});
  ts.push_back({"bf16 rows=0", tc::bf16_matmul(dx, (const __nv_bfloat16*)q, 0, 64, dy, 1, 0)});
  ts.push_back({"f32 null x", tc::f32_matmul(nullptr, s, 4, 64, dy, 1, 0)});
  for (auto& t : ts) {
    bool ok = t.got == cudaErrorInvalidValue;
    if (!ok) g_fail = true;
    g_checks.push_back({std::string("invalid args: ") + t.what, 0, 0, 0, 0, 0, ok});
    std::printf("%-4s invalid args: %s -> %s\n", ok ? "PASS" : "FAIL", t.what, cudaGetErrorName(t.got));
  }
  cudaGetLastError();
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaFree(dx), cudaFree(dy), cudaFree(q), cudaFree(s);
  return 0;
}

struct BenchResult {
  std::string kind;
  int variant;
  int rows, cols, group, m, copies;
  double us, bytes, gbps, frac;
};

int bench(Rng& rng, Kind kind, int rows, int cols, int m, size_t l2, double copyBw, std::vector<BenchResult>& out) {
  HostW w = make_weight(rng, kind, rows, cols, 128, false);
  size_t wb = w.bytes();
  if (kind == kInt4 && g_variant > 0) {  // skip variants that do not apply (nothing to time)
    float *px, *py;
    CUDA_CHECK(cudaMalloc(&px, (size_t)m * cols * 4));
    CUDA_CHECK(cudaMalloc(&py, (size_t)m * rows * 4));
    DevW d1;
    if (upload(w, d1, 1)) return 1;
    cudaError_t e = run_kernel(w, d1, 0, px, py, m, 0);
    cudaGetLastError();
    CUDA_CHECK(cudaDeviceSynchronize());
    cudaFree(px), cudaFree(py);
    d1.free_all();
    if (e == cudaErrorNotSupported) return 0;
    CUDA_CHECK(e);
  }
  int copies = (int)std::max<size_t>(2, (3 * l2 + wb - 1) / wb);
  copies = std::min(copies, 64);
  DevW d;
  if (upload(w, d, copies)) return 1;
  std::vector<float> x((size_t)m * cols);
  rng.fill_normal(x);
  float *dx, *dy;
  CUDA_CHECK(cudaMalloc(&dx, x.size() * 4));
  CUDA_CHECK(cudaMalloc(&dy, (size_t)m * rows * 4));
  CUDA_CHECK(cudaMemcpy(dx, x.data(), x.size() * 4, cudaMemcpyHostToDevice));
  cudaStream_t s;
  CUDA_CHECK(cudaStreamCreateWithFlags(&s, cudaStreamNonBlocking));
  const int perGraph = 20;
  cudaGraph_t g;
  cudaGraphExec_t ge;
  CUDA_CHECK(cudaStreamBeginCapture(s, cudaStreamCaptureModeThreadLocal));
  for (int i = 0; i < perGraph; ++i) {
    cudaError_t e = run_kernel(w, d, i % copies, dx, dy, m, s);
    if (e != cudaSuccess) {
      cudaStreamEndCapture(s, &g);
      CUDA_CHECK(e);
    }
  }
  CUDA_CHECK(cudaStreamEndCapture(s, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ge, g, 0));
  std::vector<float> ms;
  CUDA_CHECK(time_events([&](int) { return cudaGraphLaunch(ge, s); }, 5, 50, ms, s));
  double us = median(ms) * 1000.0 / perGraph;
  double bytes = (double)wb + (double)m * cols * 4 + (double)m * rows * 4;
  double gbps = bytes / (us * 1e-6) / 1e9;
  out.push_back({kind_name(kind), kind == kInt4 ? g_variant : -1, rows, cols, kind == kInt4 ? 128 : 0, m, copies, us, bytes, gbps, gbps / copyBw});
  std::printf("bench %-4s v%-2d %5dx%-5d m=%-3d %9.2f us %8.1f GB/s %5.1f%% of copy (copies %d)\n", kind_name(kind),
              kind == kInt4 ? g_variant : -1, rows, cols, m, us, gbps, 100 * gbps / copyBw, copies);
  cudaGraphExecDestroy(ge), cudaGraphDestroy(g), cudaStreamDestroy(s);
  cudaFree(dx), cudaFree(dy);
  d.free_all();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* jsonPath = arg_value(argc, argv, "--json");
  bool quick = has_flag(argc, argv, "--quick");
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB, cc %d.%d\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20,
              prop.major, prop.minor);

  // (a) copy bandwidth: 2 GiB copied, 4 GiB moved (read + write).
  double copyBw = 0;
  {
    size_t n = (size_t)2 << 30;
    void *a, *b;
    CUDA_CHECK(cudaMalloc(&a, n));
    CUDA_CHECK(cudaMalloc(&b, n));
    CUDA_CHECK(cudaMemset(a, 0x5A, n));
    CUDA_CHECK(cudaMemset(b, 0x33, n));
    std::vector<float> ms;
    CUDA_CHECK(time_events([&](int) { return cudaMemcpyAsync(b, a, n, cudaMemcpyDeviceToDevice, 0); }, 2, 10, ms));
    copyBw = 2.0 * n / (median(ms) * 1e-3) / 1e9;
    std::printf("copy bandwidth (D2D 2 GiB, read+write): %.1f GB/s\n", copyBw);
    cudaFree(a), cudaFree(b);
  }

  // (b) correctness.
  Rng rng(20240601);
  const int ms_[] = {1, 2, 3, 7, 16, 17, 64, 128};
  for (int group : {32, 64, 128})
    for (bool asym : {false, true})
      for (auto rc : {std::pair<int, int>{37, 512}, {301, 1024}})
        for (int m : ms_)
          if (check_case(rng, kInt4, rc.first, rc.second, group, asym, m, 0, false)) return 1;
  for (int m : ms_) {  // odd shapes: cols % 64 != 0 (vector GEMV, SIMT tiles), group 50 (generic), x unaligned
    if (check_case(rng, kInt4, 19, 96, 32, true, m, 0, false)) return 1;
    if (check_case(rng, kInt4, 23, 250, 50, true, m, 0, false)) return 1;
    if (check_case(rng, kInt4, 41, 512, 64, false, m, 0, true)) return 1;
  }
  for (Kind k : {kBf16, kF32})
    for (int m : ms_) {
      if (check_case(rng, k, 37, 512, 0, false, m, 0, false)) return 1;
      if (check_case(rng, k, 301, 1000, 0, false, m, 0, false)) return 1;
      if (check_case(rng, k, 19, 250, 0, false, m, 0, false)) return 1;
      if (check_case(rng, k, 33, 256, 0, false, m, 0, true)) return 1;
    }
  // Llama-2-7B shapes, a random subset of rows checked.
  const std::pair<int, int> llama[] = {{4096, 4096}, {22016, 4096}, {4096, 11008}};
  for (auto rc : llama)
    for (bool asym : {false, true}) {
      HostW w = make_weight(rng, kInt4, rc.first, rc.second, 128, asym);
      DevW d;
      if (upload(w, d, 1)) return 1;
      for (int m : {1, 16, 64})
        if (check_case(rng, kInt4, rc.first, rc.second, 128, asym, m, 256, false, &w, &d)) return 1;
      d.free_all();
    }
  for (auto rc : {std::pair<int, int>{32000, 4096}, {4096, 11008}}) {
    HostW w = make_weight(rng, kBf16, rc.first, rc.second, 0, false);
    DevW d;
    if (upload(w, d, 1)) return 1;
    for (int m : {1, 16, 64})
      if (check_case(rng, kBf16, rc.first, rc.second, 0, false, m, 256, false, &w, &d)) return 1;
    d.free_all();
  }
  if (check_case(rng, kF32, 4096, 4096, 0, false, 1, 256, false)) return 1;
  // Every int4 decode variant (matmul_variants.cuh), where it applies: groups 32/64 (scale in A) and 128 (scale
  // after the mma), 256 and 384 (v10's fast path), asym and sym, row tails (rows % 32 != 0), cols % 128 != 0 (96,
  // 1056), Llama shapes (row subset).
  for (int v = 1; v < tc::kInt4VariantCount; ++v) {
    g_variant = v;
    for (int m : {1, 2, 3, 4, 7, 8, 9, 12, 16}) {
      if (check_case(rng, kInt4, 37, 512, 32, true, m, 0, false)) return 1;
      if (check_case(rng, kInt4, 301, 1024, 128, false, m, 0, false)) return 1;
      if (check_case(rng, kInt4, 45, 1056, 32, true, m, 0, false)) return 1;  // 1056 = 33 groups of 32
      if (check_case(rng, kInt4, 19, 96, 32, true, m, 0, false)) return 1;
      if (check_case(rng, kInt4, 53, 1152, 128, true, m, 0, false)) return 1;
      if (check_case(rng, kInt4, 41, 2048, 256, true, m, 0, false)) return 1;   // group 256: gshift path
      if (check_case(rng, kInt4, 29, 1152, 384, false, m, 0, false)) return 1;  // group 384: not a power of two
    }
    for (auto rc : llama) {
      HostW w = make_weight(rng, kInt4, rc.first, rc.second, 128, true);
      DevW d;
      if (upload(w, d, 1)) return 1;
      for (int m : {1, 4, 16})
        if (check_case(rng, kInt4, rc.first, rc.second, 128, true, m, 64, false, &w, &d)) return 1;
      d.free_all();
    }
  }
  g_variant = -1;
  if (check_invalid()) return 1;

  // (c) benchmarks.
  std::vector<BenchResult> br;
  if (!quick) {
    for (auto rc : llama)
      for (int m : {1, 4, 16, 64, 128})
        if (bench(rng, kInt4, rc.first, rc.second, m, prop.l2CacheSize, copyBw, br)) return 1;
    // every int4 variant at decode sizes (v0 = int4_matmul's default dispatch)
    for (int v = 0; v < tc::kInt4VariantCount; ++v) {
      g_variant = v;
      for (auto rc : llama)
        for (int m : {1, 2, 4, 8, 16})
          if (bench(rng, kInt4, rc.first, rc.second, m, prop.l2CacheSize, copyBw, br)) return 1;
    }
    g_variant = -1;
    for (auto rc : {std::pair<int, int>{32000, 4096}, {4096, 4096}, {22016, 4096}, {4096, 11008}})
      for (int m : {1, 16})
        if (bench(rng, kBf16, rc.first, rc.second, m, prop.l2CacheSize, copyBw, br)) return 1;
  }

  // (d) table and JSON.
  size_t nfail = 0;
  for (auto& c : g_checks) nfail += !c.pass;
  std::printf("\n== %s | copy %.0f GB/s | checks: %zu run, %zu failed ==\n", prop.name, copyBw, g_checks.size(), nfail);
  for (auto& c : g_checks)
    if (!c.pass) std::printf("FAILED: %s rel %.3e maxabs %.3e nonfinite %zu\n", c.name.c_str(), c.rel, c.maxabs, c.nonfinite);
  if (!br.empty()) {
    std::printf("%-5s %-3s %-20s %-12s %4s %10s %9s %7s\n", "kind", "v", "variant", "rows x cols", "m", "us", "GB/s",
                "%copy");
    for (auto& b : br)
      std::printf("%-5s %-3s %-20s %5dx%-6d %4d %10.2f %9.1f %6.1f%%\n", b.kind.c_str(),
                  b.variant >= 0 ? std::to_string(b.variant).c_str() : "-",
                  b.variant >= 0 ? tc::int4_variant_name(b.variant) : "", b.rows, b.cols, b.m, b.us, b.gbps,
                  100 * b.frac);
  }
  if (jsonPath) {
    Json j;
    j.begin_obj().kv("device", std::string(prop.name)).kv("copy_gbps", copyBw).kv("checks_failed", (int)nfail);
    j.key("checks").begin_arr();
    for (auto& c : g_checks)
      j.begin_obj().kv("name", c.name).kv("rel_l2", c.rel).kv("max_abs", c.maxabs).kv("tol", c.tol)
          .kv("nonfinite", (long long)c.nonfinite).kv("pass", c.pass).end_obj();
    j.end_arr();
    j.key("bench").begin_arr();
    for (auto& b : br)
      j.begin_obj().kv("kind", b.kind).kv("variant", b.variant).kv("rows", b.rows).kv("cols", b.cols).kv("group", b.group).kv("m", b.m)
          .kv("copies", b.copies).kv("us", b.us).kv("bytes", b.bytes).kv("gbps", b.gbps).kv("frac_copy", b.frac)
          .end_obj();
    j.end_arr().end_obj();
    if (!j.write(jsonPath)) return 1;
    std::printf("wrote %s\n", jsonPath);
  }
  std::printf("%s\n", g_fail ? "RESULT: FAIL" : "RESULT: PASS");
  return g_fail ? 1 : 0;
}
