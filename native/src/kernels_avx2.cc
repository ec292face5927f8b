// AVX2 + FMA kernels. Everything below the pragma is compiled for avx2/fma only (per-function target attribute);
// it is reached only when the CPU reports both features.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx2,fma")

namespace tpserve {
namespace avx2_isa {

struct V {
  using T = __m256;
  static constexpr int W = 8;
  static inline T zero() { return _mm256_setzero_ps(); }
  static inline T set1(float f) { return _mm256_set1_ps(f); }
  static inline T load(const float* p) { return _mm256_loadu_ps(p); }
  static inline void store(float* p, T v) { _mm256_storeu_ps(p, v); }
  static inline T fma(T a, T b, T c) { return _mm256_fmadd_ps(a, b, c); }
  static inline T add(T a, T b) { return _mm256_add_ps(a, b); }
  static inline float hsum(T v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
  }
  /** W bf16 values -> floats (exact: bf16 is the top half of a float). */
  static inline T loadbf(const uint16_t* p) {
    const __m256i v = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    return _mm256_castsi256_ps(_mm256_slli_epi32(v, 16));
  }
  static inline void loadq(const uint8_t* p, T& lo, T& hi) {
    const __m256i b = _mm256_cvtepu8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p)));
    lo = _mm256_cvtepi32_ps(_mm256_and_si256(b, _mm256_set1_epi32(15)));
    hi = _mm256_cvtepi32_ps(_mm256_srli_epi32(b, 4));
  }
};

#define DENSE_RB1 8
#define DENSE_TB 4
#define DENSE_RB 2
#define I4_RB1 4
#define I4_TB 4
#define I4_RB 1
#define TABLE_NAME "avx2"
#include "kernels_impl.h"
#undef DENSE_RB1
#undef DENSE_TB
#undef DENSE_RB
#undef I4_RB1
#undef I4_TB
#undef I4_RB
#undef TABLE_NAME

}  // namespace avx2_isa
}  // namespace tpserve

#pragma GCC pop_options

namespace tpserve {
const KernelTable& avx2Kernels() { return avx2_isa::kTable; }
}  // namespace tpserve
#endif
