// What the checks of the producers' column map share (xprep.cuh: a producer writes column k of its prepared output
// at map[k] for an act-order consumer, instead of the engine gathering it with permute_xprep).
#pragma once
#include <cuda_fp16.h>

#include <cstdint>
#include <cstring>
#include <utility>
#include <vector>

#include "kernels/xprep.cuh"

namespace tpserve::check {

/** A random permutation of 0..n-1 (Fisher-Yates; rng.below(n) is uniform in [0, n)). */
template <class Rng>
std::vector<int32_t> random_perm(Rng& rng, int n) {
  std::vector<int32_t> perm((size_t)n);
  for (int i = 0; i < n; i++) perm[(size_t)i] = i;
  for (int i = n - 1; i > 0; i--) std::swap(perm[(size_t)i], perm[rng.below((uint32_t)i + 1)]);
  return perm;
}

/** The inverse of a permutation of 0..n-1. */
inline std::vector<int32_t> inverse_perm(const std::vector<int32_t>& perm) {
  std::vector<int32_t> inv(perm.size());
  for (size_t i = 0; i < perm.size(); i++) inv[(size_t)perm[i]] = (int32_t)i;
  return inv;
}

/**
 * Halves of `mapped` (a prepared input of m tokens x cols written through map) that are not bitwise equal to
 * column k of `plain` (the same values written in order) at column map[k]: 0 when the map was applied exactly.
 */
inline size_t xp_map_mismatches(const std::vector<__half>& plain, const std::vector<__half>& mapped,
                                const std::vector<int32_t>& map, int m, int cols) {
  const int nc = cuda::xprep_cols(m);
  size_t bad = 0;
  for (int c = 0; c < nc; c++)
    for (int k = 0; k < cols; k++) {
      uint16_t a, b;
      std::memcpy(&a, &plain[cuda::xprep_index(nc, c, k)], 2);
      std::memcpy(&b, &mapped[cuda::xprep_index(nc, c, map[(size_t)k])], 2);
      bad += a != b;
    }
  return bad;
}

/** The prepared layout (xprep.cuh) of x (m tokens x cols, row-major), computed on the host: fp16 hi and lo halves
 * for m <= 8, one fp16 column a token up to 16. */
inline std::vector<__half> host_xprep(const std::vector<float>& x, int m, int cols) {
  const int nc = cuda::xprep_cols(m);
  std::vector<__half> out(cuda::xprep_halves(m, cols));
  for (int t = 0; t < m; t++)
    for (int k = 0; k < cols; k++) {
      const float v = x[(size_t)t * cols + k];
      const __half hi = __float2half_rn(v);
      if (cuda::xprep_hilo(m)) {
        out[cuda::xprep_index(nc, 2 * t, k)] = hi;
        out[cuda::xprep_index(nc, 2 * t + 1, k)] = __float2half_rn(v - __half2float(hi));
      } else {
        out[cuda::xprep_index(nc, t, k)] = hi;
      }
    }
  return out;
}

/** Halves that differ bitwise between two prepared inputs of the same layout. */
inline size_t xp_mismatches(const std::vector<__half>& a, const std::vector<__half>& b) {
  size_t bad = a.size() != b.size();
  for (size_t i = 0; i < a.size() && i < b.size(); i++) bad += std::memcmp(&a[i], &b[i], 2) != 0;
  return bad;
}

}  // namespace tpserve::check
