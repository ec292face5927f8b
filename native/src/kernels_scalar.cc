// Portable kernels (any CPU); also the reference path when TPSERVE_SIMD=scalar.
#include <cmath>
#include <cstddef>
#include <cstdint>

#include "kernels.h"

namespace tpserve {
namespace scalar_isa {

struct V {
  using T = float;
  static constexpr int W = 1;
  static inline T zero() { return 0.f; }
  static inline T set1(float f) { return f; }
  static inline T load(const float* p) { return *p; }
  static inline void store(float* p, T v) { *p = v; }
  static inline T fma(T a, T b, T c) { return a * b + c; }
  static inline T add(T a, T b) { return a + b; }
  static inline float hsum(T v) { return v; }
  static inline T loadbf(const uint16_t* p) {
    const uint32_t bits = (uint32_t)p[0] << 16;
    float f;
    __builtin_memcpy(&f, &bits, 4);
    return f;
  }
  static inline void loadq(const uint8_t* p, T& lo, T& hi) {
    lo = (float)(p[0] & 15);
    hi = (float)(p[0] >> 4);
  }
};

#define DENSE_RB1 4
#define DENSE_TB 4
#define DENSE_RB 2
#define I4_RB1 2
#define I4_TB 4
#define I4_RB 1
#define TABLE_NAME "scalar"
#include "kernels_impl.h"
#undef DENSE_RB1
#undef DENSE_TB
#undef DENSE_RB
#undef I4_RB1
#undef I4_TB
#undef I4_RB
#undef TABLE_NAME

}  // namespace scalar_isa

const KernelTable& scalarKernels() { return scalar_isa::kTable; }

}  // namespace tpserve
