// AVX-512 (F/BW/VL/DQ) kernels, compiled per function for that target and reached only when the CPU has it.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>

#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma")

namespace tpserve {
namespace avx512_isa {

struct V {
  using T = __m512;
  static constexpr int W = 16;
  static inline T zero() { return _mm512_setzero_ps(); }
  static inline T set1(float f) { return _mm512_set1_ps(f); }
  static inline T load(const float* p) { return _mm512_loadu_ps(p); }
  static inline void store(float* p, T v) { _mm512_storeu_ps(p, v); }
  static inline T fma(T a, T b, T c) { return _mm512_fmadd_ps(a, b, c); }
  static inline T add(T a, T b) { return _mm512_add_ps(a, b); }
  static inline float hsum(T v) { return _mm512_reduce_add_ps(v); }
  /** W bf16 values -> floats (exact: bf16 is the top half of a float). */
  static inline T loadbf(const uint16_t* p) {
    const __m512i v = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
    return _mm512_castsi512_ps(_mm512_slli_epi32(v, 16));
  }
  static inline void loadq(const uint8_t* p, T& lo, T& hi) {
    const __m512i b = _mm512_cvtepu8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
    lo = _mm512_cvtepi32_ps(_mm512_and_si512(b, _mm512_set1_epi32(15)));
    hi = _mm512_cvtepi32_ps(_mm512_srli_epi32(b, 4));
  }
};

#define DENSE_RB1 8
#define DENSE_TB 4
#define DENSE_RB 4
#define I4_RB1 4
#define I4_TB 4
#define I4_RB 2
#define TABLE_NAME "avx512"
#include "kernels_impl.h"
#undef DENSE_RB1
#undef DENSE_TB
#undef DENSE_RB
#undef I4_RB1
#undef I4_TB
#undef I4_RB
#undef TABLE_NAME

}  // namespace avx512_isa
}  // namespace tpserve

#pragma GCC pop_options

namespace tpserve {
const KernelTable& avx512Kernels() { return avx512_isa::kTable; }
}  // namespace tpserve
#endif
