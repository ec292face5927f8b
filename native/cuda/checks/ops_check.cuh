// Internal to check_ops.cu: its records (every case printed, collected for --json, a failure remembered), device
// buffers and launch check.
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "check_util.cuh"

namespace ops_check {
using namespace tpserve::check;


struct Result {
  std::string name, shape;
  double rel_l2, max_abs, tol;
  bool pass;
};
std::vector<Result> g_results;
bool g_fail = false;

template <class T>
struct Dev {
  T* p = nullptr;
  size_t n = 0;
  Dev() = default;
  explicit Dev(size_t n_) : n(n_) {
    if (cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) {
      std::fprintf(stderr, "cudaMalloc of %zu bytes failed\n", n * sizeof(T));
      p = nullptr;
    }
  }
  Dev(const Dev&) = delete;
  Dev& operator=(const Dev&) = delete;
  ~Dev() { if (p) cudaFree(p); }
  bool up(const std::vector<T>& h) { return p && cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice) == cudaSuccess; }
  std::vector<T> down() const {
    std::vector<T> h(n);
    if (!p || cudaMemcpy(h.data(), p, n * sizeof(T), cudaMemcpyDeviceToHost) != cudaSuccess) {
      std::fprintf(stderr, "download failed\n");
      std::fill(h.begin(), h.end(), (T)-12345);
    }
    return h;
  }
  bool poison() { return p && poison_nan(p, n * sizeof(T)) == cudaSuccess; }
};

std::vector<__half> to_half(const std::vector<float>& v) {
  std::vector<__half> h(v.size());
  for (size_t i = 0; i < v.size(); i++) h[i] = __float2half_rn(v[i]);
  return h;
}
std::vector<float> from_half(const std::vector<__half>& h) {
  std::vector<float> v(h.size());
  for (size_t i = 0; i < h.size(); i++) v[i] = __half2float(h[i]);
  return v;
}
float round_half(float x) { return __half2float(__float2half_rn(x)); }

void record(const std::string& name, const std::string& shape, ErrStats st, double tol) {
  st.finish();
  const bool ok = st.pass(tol);
  g_results.push_back({name, shape, st.rel_l2, st.max_abs, tol, ok});
  if (!ok) g_fail = true;
  std::printf("%-5s %-10s %-48s rel_l2 %.3e max_abs %.3e nonfinite %zu\n", ok ? "ok" : "FAIL", name.c_str(),
              shape.c_str(), st.rel_l2, st.max_abs, st.nonfinite);
}
void record_bool(const std::string& name, const std::string& shape, bool ok, const char* why = "") {
  g_results.push_back({name, shape, ok ? 0.0 : 1.0, 0, 0, ok});
  if (!ok) g_fail = true;
  std::printf("%-5s %-10s %-48s %s\n", ok ? "ok" : "FAIL", name.c_str(), shape.c_str(), why);
}
bool launch_ok(cudaError_t e, const char* what) {
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  if (e != cudaSuccess) {
    std::fprintf(stderr, "%s: %s\n", what, cudaGetErrorString(e));
    g_fail = true;
    return false;
  }
  return true;
}

}  // namespace ops_check
