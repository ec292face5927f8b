// Helpers shared by the tile-packed int4 checks (check_int4t.cu, check_int4t_epilogue.cu): random weights in the
// on-disk layout with a float64 view, their packed device copies, and the check records.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <cstdio>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/kernels.cuh"

namespace tpserve::check {
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

/** The checks as the JSON array `checks` of an open object. */
void json_checks(Json& j, const std::vector<CheckResult>& checks) {
  j.key("checks").begin_arr();
  for (auto& c : checks)
    j.begin_obj().kv("name", c.name).kv("rel_l2", c.e.rel_l2).kv("max_abs", c.e.max_abs).kv("tol", c.tol)
        .kv("pass", c.pass).end_obj();
  j.end_arr();
}

}  // namespace
}  // namespace tpserve::check
