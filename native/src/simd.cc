// Run-time choice of the kernel table.
#include <cstdlib>
#include <cstring>

#include "kernels.h"

namespace tpserve {

static Simd detect() {
  Simd best = Simd::Scalar;
#if defined(__x86_64__) || defined(__i386__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) best = Simd::Avx2;
  if (best == Simd::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq"))
    best = Simd::Avx512;
#endif
  const char* env = std::getenv("TPSERVE_SIMD");
  if (env) {
    Simd want = best;
    if (!std::strcmp(env, "scalar")) want = Simd::Scalar;
    else if (!std::strcmp(env, "avx2")) want = Simd::Avx2;
    else if (!std::strcmp(env, "avx512")) want = Simd::Avx512;
    if (static_cast<int>(want) < static_cast<int>(best)) best = want;
  }
  return best;
}

Simd activeSimd() {
  static const Simd s = detect();
  return s;
}

const char* simdName(Simd s) {
  switch (s) {
    case Simd::Avx512: return "avx512";
    case Simd::Avx2: return "avx2";
    default: return "scalar";
  }
}

const KernelTable& kernelsFor(Simd s) {
  switch (s) {
#if defined(__x86_64__) || defined(__i386__)
    case Simd::Avx512: return avx512Kernels();
    case Simd::Avx2: return avx2Kernels();
#endif
    default: return scalarKernels();
  }
}

const KernelTable& int4KernelsFor(Simd s, int group) {
  for (int lvl = static_cast<int>(s); lvl > 0; lvl--) {
    const KernelTable& t = kernelsFor(static_cast<Simd>(lvl));
    if (group % t.chunk == 0) return t;
  }
  return scalarKernels();
}

}  // namespace tpserve
