// Kernel tables: one per instruction set (scalar, AVX2, AVX-512), chosen at run time.
#pragma once
#include <cmath>
#include <cstddef>
#include <cstdint>

namespace tpserve {

enum class Simd { Scalar = 0, Avx2 = 1, Avx512 = 2 };

/** Group-wise int4 weight (layout in native/index.ts). zeros == nullptr: symmetric (zero 8). */
struct Int4View {
  const uint8_t* q;
  const float* scales;
  const uint8_t* zeros;
  int rows, cols, group;
};

/** One sequence's view of a paged KV cache for attention. */
struct AttnArgs {
  const float* q;  // (qLen, numHeads, headDim) for this sequence
  float* out;      // same shape
  const float* k;  // (numPages, blockSize, numKvHeads, headDim)
  const float* v;
  const int32_t* blockTable;
  int qLen, numHeads, numKvHeads, headDim, blockSize, contextLen;
  int qStride;  // floats between consecutive tokens in q/out (numHeads*headDim in a packed layout)
};

struct KernelTable {
  const char* name;
  int chunk;  // int4 activation chunk: xp holds x reordered per `chunk` columns (evens then odds)
  /** y[t*ldy + r] = dot(x[t*k..], w[r*k..]) for t < m and r0 <= r < r1. */
  void (*gemmF32)(const float* x, int m, int k, const float* w, float* y, int ldy, int r0, int r1);
  /** Same for int4: xp/xsum from prepInt4 (same group size). */
  void (*gemmI4)(const float* xp, const float* xsum, int m, const Int4View& w, float* y, int ldy, int r0, int r1);
  /** Reorders x (m, k) into xp and sums every group of x into xsum (m, k/group). */
  void (*prepI4)(const float* x, int m, int k, int group, float* xp, float* xsum);
  /** Causal attention for token t of the sequence and head h; scratch holds contextLen floats. */
  void (*attention)(const AttnArgs& a, int t, int h, float* scratch);
  /** gemmF32 with bf16 weights (raw 16-bit values): the same arithmetic, half the bytes to read. */
  void (*gemmBf16)(const float* x, int m, int k, const uint16_t* w, float* y, int ldy, int r0, int r1);
};

const KernelTable& scalarKernels();
const KernelTable& avx2Kernels();
const KernelTable& avx512Kernels();

/** Best level the CPU supports, lowered by TPSERVE_SIMD=scalar|avx2|avx512 when set. */
Simd activeSimd();
const char* simdName(Simd s);
const KernelTable& kernelsFor(Simd s);
/** Table to use for an int4 weight of this group size (falls back to a narrower ISA when group % chunk != 0). */
const KernelTable& int4KernelsFor(Simd s, int group);

// Plain kernels (auto-vectorised, accurate); used by the engine and exposed to JS.
void rmsNormRows(const float* x, const float* w, float* y, int rows, int cols, float eps);
/** cos/sin (tokens, headDim/2) of the rotary angles of each position. */
void ropeTables(const int32_t* positions, int tokens, int headDim, float theta, float* cs, float* sn);
/** Rotates x (tokens rows of `stride` floats, numHeads heads of headDim each) with tables from ropeTables. */
void ropeApply(float* x, int tokens, int numHeads, int headDim, int stride, const float* cs, const float* sn);
void siluMul(const float* gate, const float* up, float* y, size_t n);

/**
 * The softmax of attention scores, in place but for the division: sc[j] = exp(sc[j] - mx) for the n scores (mx is
 * their largest); returns 1 / the sum of the results. Shared by the float and the int8-KV attention.
 */
inline float softmaxExp(float* sc, int n, float mx) {
  float sum = 0.f;
  for (int j = 0; j < n; j++) {
    const float e = std::exp(sc[j] - mx);
    sc[j] = e;
    sum += e;
  }
  return 1.0f / sum;
}

}  // namespace tpserve
