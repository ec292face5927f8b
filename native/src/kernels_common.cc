// Elementwise kernels shared by every ISA (the compiler vectorises them at the baseline level).
#include <cmath>

#include "kernels.h"

namespace tpserve {

void rmsNormRows(const float* x, const float* w, float* y, int rows, int cols, float eps) {
  for (int r = 0; r < rows; r++) {
    const float* xr = x + (size_t)r * cols;
    float* yr = y + (size_t)r * cols;
    float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int c = 0;
    for (; c + 8 <= cols; c += 8)
      for (int i = 0; i < 8; i++) acc[i] += xr[c + i] * xr[c + i];
    float ss = ((acc[0] + acc[1]) + (acc[2] + acc[3])) + ((acc[4] + acc[5]) + (acc[6] + acc[7]));
    for (; c < cols; c++) ss += xr[c] * xr[c];
    const float inv = 1.0f / std::sqrt(ss / (float)cols + eps);
    for (int i = 0; i < cols; i++) yr[i] = (xr[i] * inv) * w[i];
  }
}

void ropeTables(const int32_t* positions, int tokens, int headDim, float theta, float* cs, float* sn) {
  const int half = headDim / 2;
  for (int i = 0; i < half; i++) {
    // Same float32 operations as Hugging Face's default rotary embedding: inv_freq = 1 / theta^(2i/d).
    const float invFreq = 1.0f / std::pow(theta, (float)(2 * i) / (float)headDim);
    for (int t = 0; t < tokens; t++) {
      const float ang = (float)positions[t] * invFreq;
      cs[(size_t)t * half + i] = (float)std::cos((double)ang);
      sn[(size_t)t * half + i] = (float)std::sin((double)ang);
    }
  }
}

void ropeApply(float* x, int tokens, int numHeads, int headDim, int stride, const float* cs, const float* sn) {
  const int half = headDim / 2;
  for (int t = 0; t < tokens; t++) {
    const float* c = cs + (size_t)t * half;
    const float* s = sn + (size_t)t * half;
    for (int h = 0; h < numHeads; h++) {
      float* p = x + (size_t)t * stride + (size_t)h * headDim;
      for (int i = 0; i < half; i++) {
        const float a = p[i], b = p[i + half];
        p[i] = a * c[i] - b * s[i];
        p[i + half] = b * c[i] + a * s[i];
      }
    }
  }
}

void siluMul(const float* gate, const float* up, float* y, size_t n) {
  for (size_t i = 0; i < n; i++) {
    const float g = gate[i];
    y[i] = g / (1.0f + std::exp(-g)) * up[i];
  }
}

}  // namespace tpserve
