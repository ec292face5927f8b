// Small shared helpers for the standalone CUDA checks (native/cuda/checks/*.cu): error checking that never aborts
// silently, a seeded RNG, cudaEvent timing with medians, error norms and a tiny JSON writer. Header-only.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "kernels/ptx.cuh"

namespace tpserve::check {

/** printf into a std::string (check names and shapes; 255 characters at most). */
inline std::string fmt(const char* f, ...) __attribute__((format(printf, 1, 2)));
inline std::string fmt(const char* f, ...) {
  char b[256];
  va_list ap;
  va_start(ap, f);
  std::vsnprintf(b, sizeof b, f, ap);
  va_end(ap);
  return b;
}

/** Prints file:line and the CUDA error, then returns 1 from the enclosing function (int-returning). */
#define CUDA_CHECK(expr)                                                                              \
  do {                                                                                                \
    cudaError_t err_ = (expr);                                                                        \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: CUDA error %s (%s) in %s\n", __FILE__, __LINE__,                   \
                   cudaGetErrorName(err_), cudaGetErrorString(err_), #expr);                          \
      return 1;                                                                                       \
    }                                                                                                 \
  } while (0)

/** Same as CUDA_CHECK but returns false (bool-returning helpers). */
#define CUDA_CHECK_BOOL(expr)                                                                         \
  do {                                                                                                \
    cudaError_t err_ = (expr);                                                                        \
    if (err_ != cudaSuccess) {                                                                        \
      std::fprintf(stderr, "%s:%d: CUDA error %s (%s) in %s\n", __FILE__, __LINE__,                   \
                   cudaGetErrorName(err_), cudaGetErrorString(err_), #expr);                          \
      return false;                                                                                   \
    }                                                                                                 \
  } while (0)

/** Launch check: the launcher's return code, then a synchronize to surface asynchronous faults. */
#define CUDA_CHECK_LAUNCH(expr)            \
  do {                                     \
    CUDA_CHECK(expr);                      \
    CUDA_CHECK(cudaDeviceSynchronize());   \
  } while (0)

/** splitmix64: seeded, reproducible, fast. */
struct Rng {
  uint64_t s;
  explicit Rng(uint64_t seed) : s(seed * 0x9E3779B97F4A7C15ull + 1) {}
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  /** Uniform in [0, 1). */
  double uniform() { return (next() >> 11) * (1.0 / 9007199254740992.0); }
  /** Uniform in [lo, hi). */
  float uniform(float lo, float hi) { return lo + (hi - lo) * static_cast<float>(uniform()); }
  /** Uniform integer in [0, n). */
  uint32_t below(uint32_t n) { return static_cast<uint32_t>(next() % n); }
  /** Standard normal (Box-Muller). */
  float normal() {
    double u1 = uniform(), u2 = uniform();
    if (u1 < 1e-300) u1 = 1e-300;
    return static_cast<float>(std::sqrt(-2.0 * std::log(u1)) * std::cos(6.283185307179586 * u2));
  }
  void fill_uniform(std::vector<float>& v, float lo, float hi) {
    for (auto& x : v) x = uniform(lo, hi);
  }
  void fill_normal(std::vector<float>& v, float stddev = 1.0f) {
    for (auto& x : v) x = normal() * stddev;
  }
};

/** Fills a device float buffer with NaN (bit pattern 0xFF..., a quiet NaN) so unwritten outputs show. */
inline cudaError_t poison_nan(void* p, size_t bytes, cudaStream_t stream = 0) {
  return cudaMemsetAsync(p, 0xFF, bytes, stream);
}

/** Error of out against a double reference: relative L2 (||out-ref||/||ref||), max abs, count of non-finite. */
struct ErrStats {
  double rel_l2 = 0, max_abs = 0, ref_norm = 0;
  size_t nonfinite = 0, count = 0;
  void add(double out, double ref) {
    ++count;
    if (!std::isfinite(out)) {
      ++nonfinite;
      return;
    }
    double d = out - ref;
    diff2_ += d * d;
    ref2_ += ref * ref;
    max_abs = std::max(max_abs, std::fabs(d));
  }
  void finish() {
    ref_norm = std::sqrt(ref2_);
    rel_l2 = ref2_ > 0 ? std::sqrt(diff2_ / ref2_) : std::sqrt(diff2_);
  }
  /** NaN or Inf never passes. */
  bool pass(double tol_rel) const { return nonfinite == 0 && count > 0 && rel_l2 <= tol_rel; }

 private:
  double diff2_ = 0, ref2_ = 0;
};

/** Times `fn` (which enqueues work on `stream`) with cudaEvents: `warmup` untimed calls, then `iters` timed calls
 * each between its own pair of events. Writes per-call milliseconds to `ms`; returns the first error. */
template <class F>
cudaError_t time_events(F&& fn, int warmup, int iters, std::vector<float>& ms, cudaStream_t stream = 0) {
  cudaError_t e;
  for (int i = 0; i < warmup; ++i)
    if ((e = fn(i)) != cudaSuccess) return e;
  std::vector<cudaEvent_t> ev(2 * iters);
  for (auto& x : ev)
    if ((e = cudaEventCreate(&x)) != cudaSuccess) return e;
  for (int i = 0; i < iters; ++i) {
    cudaEventRecord(ev[2 * i], stream);
    if ((e = fn(warmup + i)) != cudaSuccess) return e;
    cudaEventRecord(ev[2 * i + 1], stream);
  }
  if ((e = cudaEventSynchronize(ev.back())) != cudaSuccess) return e;
  ms.resize(iters);
  for (int i = 0; i < iters; ++i) cudaEventElapsedTime(&ms[i], ev[2 * i], ev[2 * i + 1]);
  for (auto& x : ev) cudaEventDestroy(x);
  return cudaGetLastError();
}

inline double median(std::vector<float> v) {
  if (v.empty()) return 0;
  std::sort(v.begin(), v.end());
  size_t n = v.size();
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

/** The device-to-device copy bandwidth (bytes read + written per second, GB/s) of `bytes` (2 GiB by default),
 * median of 10; returns 1 after printing the error. */
inline int copy_bandwidth_gbps(double& gbps, size_t bytes = (size_t)2 << 30) {
  void *a = nullptr, *b = nullptr;
  CUDA_CHECK(cudaMalloc(&a, bytes));
  CUDA_CHECK(cudaMalloc(&b, bytes));
  std::vector<float> ms;
  const cudaError_t e =
      time_events([&](int) { return cudaMemcpyAsync(b, a, bytes, cudaMemcpyDeviceToDevice, 0); }, 2, 10, ms);
  cudaFree(a), cudaFree(b);
  CUDA_CHECK(e);
  gbps = 2.0 * bytes / (median(ms) * 1e-3) / 1e9;
  return 0;
}

using tpserve::cuda::global_ns;  // the GPU's global timer, in ns (device code)

/** A load with acquire semantics at GPU scope (device code). */
__device__ __forceinline__ unsigned ld_acquire(const unsigned* p) {
  unsigned v;
  asm volatile("ld.acquire.gpu.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}

/** Spins until *p >= target (acquire); after 1 s sets *timedOut and gives up rather than hang the check. */
__device__ __forceinline__ void wait_at_least(const unsigned* p, unsigned target, int* timedOut) {
  if (ld_acquire(p) >= target) return;
  const long long t0 = global_ns();
  for (int k = 0; ld_acquire(p) < target; k++)
    if ((k & 1023) == 1023 && global_ns() - t0 > 1000000000LL) {
      atomicExch(timedOut, 1);
      return;
    }
}

/** The card's name, for the report. */
inline std::string device_name(int dev = 0) {
  cudaDeviceProp p;
  if (cudaGetDeviceProperties(&p, dev) != cudaSuccess) return "unknown";
  return p.name;
}

/** Returns the value of `--name VALUE` from argv, or `def`. */
inline const char* arg_value(int argc, char** argv, const char* name, const char* def = nullptr) {
  for (int i = 1; i + 1 < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return argv[i + 1];
  return def;
}
inline bool has_flag(int argc, char** argv, const char* name) {
  for (int i = 1; i < argc; ++i)
    if (std::strcmp(argv[i], name) == 0) return true;
  return false;
}

/** Minimal JSON writer: build with obj()/arr()/key()/value(), commas handled. No pretty printing beyond newlines. */
class Json {
 public:
  Json& begin_obj() { sep(); out_ += '{'; first_.push_back(true); return *this; }
  Json& end_obj() { out_ += '}'; first_.pop_back(); return *this; }
  Json& begin_arr() { sep(); out_ += '['; first_.push_back(true); return *this; }
  Json& end_arr() { out_ += ']'; first_.pop_back(); return *this; }
  Json& key(const std::string& k) { sep(); str(k); out_ += ':'; after_key_ = true; return *this; }
  Json& value(const std::string& s) { sep(); str(s); return *this; }
  Json& value(const char* s) { return value(std::string(s)); }
  Json& value(double d) {
    sep();
    if (!std::isfinite(d)) { out_ += "null"; return *this; }
    char b[64];
    std::snprintf(b, sizeof b, "%.9g", d);
    out_ += b;
    return *this;
  }
  Json& value(int v) { return value(static_cast<double>(v)); }
  Json& value(long long v) { sep(); out_ += std::to_string(v); return *this; }
  Json& value(bool b) { sep(); out_ += b ? "true" : "false"; return *this; }
  template <class T>
  Json& kv(const std::string& k, T v) { key(k); return value(v); }
  const std::string& str() const { return out_; }
  /** Writes to `path`; returns false (and prints why) on failure. */
  bool write(const char* path) const {
    FILE* f = std::fopen(path, "w");
    if (!f) { std::fprintf(stderr, "cannot open %s for writing\n", path); return false; }
    bool ok = std::fwrite(out_.data(), 1, out_.size(), f) == out_.size();
    ok = (std::fputc('\n', f) != EOF) && ok;
    ok = (std::fclose(f) == 0) && ok;
    if (!ok) std::fprintf(stderr, "error writing %s\n", path);
    return ok;
  }

 private:
  void sep() {
    if (after_key_) { after_key_ = false; return; }
    if (!first_.empty()) {
      if (!first_.back()) out_ += ',';
      first_.back() = false;
    }
  }
  void str(const std::string& s) {
    out_ += '"';
    for (char c : s) {
      if (c == '"' || c == '\\') { out_ += '\\'; out_ += c; }
      else if (static_cast<unsigned char>(c) < 0x20) { char b[8]; std::snprintf(b, sizeof b, "\\u%04x", c); out_ += b; }
      else out_ += c;
    }
    out_ += '"';
  }
  std::string out_;
  std::vector<bool> first_;
  bool after_key_ = false;
};

}  // namespace tpserve::check
