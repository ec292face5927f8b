// NF4 weights (bitsandbytes 4-bit NormalFloat): per block of `block` consecutive weights (row-major), an absmax and
// 4-bit codes into 16 levels; w = levels[code] * absmax. With double quantization the absmax values are stored as
// 8-bit codes into a 256-entry map, per 256 blocks a float32 scale, plus one offset:
// absmax[b] = map[absq[b]] * absScale[b / 256] + offset. Codes are packed two per byte, the first in the high
// nibble (bitsandbytes' order). The matmul dequantizes each row once and runs the dense dot kernel.
#include <vector>

#include "engine.h"
#include "errors.h"

namespace tpserve {

void loadNf4(const TensorIn& t, const std::string& name, Weight& w) {
  const std::string p = "nf4 tensor '" + name + "': ";
  if (t.rows <= 0 || t.cols <= 0) fail("NATIVE_SHAPE", p + "rows and cols must be positive");
  const size_t n = (size_t)t.rows * t.cols;
  if (t.block <= 0 || t.block % 2 != 0 || t.cols % t.block != 0)
    fail("NATIVE_SHAPE", p + "blockSize " + std::to_string(t.block) + " must be even and divide cols " +
                             std::to_string(t.cols));
  if (t.dataBytes != n / 2)
    fail("NATIVE_SHAPE", p + "qweight has " + std::to_string(t.dataBytes) + " bytes, expected rows*cols/2 = " +
                             std::to_string(n / 2));
  if (t.numLevels != 16) fail("NATIVE_SHAPE", p + "levels must hold 16 floats, got " + std::to_string(t.numLevels));
  const size_t blocks = n / t.block;
  Nf4Data d;
  d.present = true, d.block = t.block;
  for (int i = 0; i < 16; i++) d.levels[i] = t.levels[i];
  if (t.absmax) {
    if (t.numAbsmax != blocks)
      fail("NATIVE_SHAPE", p + "absmax has " + std::to_string(t.numAbsmax) + " floats, expected " + std::to_string(blocks));
    d.absmax.assign(t.absmax, t.absmax + blocks);
  } else {
    if (t.numAbsq != blocks)
      fail("NATIVE_SHAPE", p + "absmaxCodes has " + std::to_string(t.numAbsq) + " bytes, expected one per block (" +
                               std::to_string(blocks) + ")");
    const size_t b2 = (blocks + 255) / 256;
    if (t.numAbsScale != b2)
      fail("NATIVE_SHAPE", p + "absmaxScales has " + std::to_string(t.numAbsScale) + " floats, expected " +
                               std::to_string(b2) + " (one per 256 blocks)");
    if (t.numNested != 256)
      fail("NATIVE_SHAPE", p + "absmaxMap must hold 256 floats, got " + std::to_string(t.numNested));
    d.absq.assign(t.absq, t.absq + blocks);
    d.absScale.assign(t.absScale, t.absScale + b2);
    d.nested.assign(t.nested, t.nested + 256);
    d.absOffset = t.absOffset;
  }
  w.int4 = false;
  w.rows = t.rows, w.cols = t.cols, w.group = t.block;
  w.q.assign(t.data, t.data + n / 2);
  w.nf4 = std::move(d);
  w.f.clear();
  w.b.clear();
}

void gemmNf4(const KernelTable& dense, const float* x, int m, const Weight& w, float* y, int ldy, int r0, int r1) {
  thread_local std::vector<float> row;
  const int k = w.cols, B = w.nf4.block;
  const Nf4Data& d = w.nf4;
  row.resize((size_t)k);
  for (int r = r0; r < r1; r++) {
    const size_t first = (size_t)r * k;
    for (int c0 = 0; c0 < k; c0 += B) {
      const size_t b = (first + c0) / B;
      const float amax = d.absmax.empty() ? d.nested[d.absq[b]] * d.absScale[b / 256] + d.absOffset : d.absmax[b];
      const uint8_t* q = w.q.data() + (first + c0) / 2;
      for (int i = 0; i < B; i += 2) {
        const uint8_t byte = q[i / 2];
        row[c0 + i] = d.levels[byte >> 4] * amax;
        row[c0 + i + 1] = d.levels[byte & 15] * amax;
      }
    }
    dense.gemmF32(x, m, k, row.data(), y + r, ldy, 0, 1);
  }
}

}  // namespace tpserve
