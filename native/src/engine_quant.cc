// Quantization support in the CPU engine: act-order int4 weights (an input permutation applied to x before the
// int4 matmul) and calibration capture (the inputs of one decoder layer's linear layers, for GPTQ and AWQ).
#include <cstring>
#include <vector>

#include "engine.h"
#include "errors.h"

namespace tpserve {

void loadPerm(const TensorIn& t, const std::string& prefix, Weight& w) {
  w.perm.clear();
  w.permCols = 0;
  if (!t.perm) return;
  if (t.numPerm != (size_t)t.cols)
    fail("NATIVE_SHAPE", prefix + "perm has " + std::to_string(t.numPerm) + " entries, expected cols = " +
                             std::to_string(t.cols));
  // A row-parallel act-order shard (tensor parallelism) keeps whole groups of the stored order, whose columns come
  // from anywhere in the layer's input: its perm picks cols distinct columns of a permCols-wide input.
  const int width = t.permCols ? t.permCols : t.cols;
  if (width < t.cols)
    fail("NATIVE_SHAPE", prefix + "permCols " + std::to_string(width) + " is below cols " + std::to_string(t.cols));
  std::vector<char> seen((size_t)width, 0);
  for (size_t i = 0; i < t.numPerm; i++) {
    const int32_t p = t.perm[i];
    if (p < 0 || p >= width || seen[(size_t)p])
      fail("NATIVE_INVALID_ARG", prefix + "perm[" + std::to_string(i) + "] = " + std::to_string(p) +
                                     ": perm must hold distinct input columns in 0.." + std::to_string(width - 1));
    seen[(size_t)p] = 1;
  }
  w.perm.assign(t.perm, t.perm + t.numPerm);
  w.permCols = width;
}

const float* permuteInput(const Weight& w, const float* x, int m, std::vector<float>& buf) {
  if (w.perm.empty()) return x;
  const size_t k = (size_t)w.cols, src = (size_t)w.inputCols();
  if (buf.size() < (size_t)m * k) buf.resize((size_t)m * k);
  for (int t = 0; t < m; t++) {
    const float* xr = x + (size_t)t * src;
    float* dst = buf.data() + (size_t)t * k;
    for (size_t i = 0; i < k; i++) dst[i] = xr[w.perm[i]];
  }
  return buf.data();
}

// Capture layout per token: [attn_norm output (hidden) | attention output (heads*headDim) | mlp_norm output
// (hidden) | silu(gate)*up (inter)]: the inputs of q/k/v, o, gate/up and down.
int captureWidth(const ModelShape& s) { return 2 * s.hidden + s.heads * s.headDim + s.inter; }

void captureSite(const BatchIn& b, const ModelShape& s, int site, const float* src, int T) {
  const int widths[4] = {s.hidden, s.heads * s.headDim, s.hidden, s.inter};
  int off = 0;
  for (int i = 0; i < site; i++) off += widths[i];
  const size_t W = (size_t)captureWidth(s), n = (size_t)widths[site];
  for (int t = 0; t < T; t++) std::memcpy(b.capture + (size_t)t * W + off, src + (size_t)t * n, n * sizeof(float));
}

}  // namespace tpserve
