// int8 KV cache for the CPU engine: K and V pages hold int8 values with one float32 scale per (token, KV head)
// (scale = absmax / 127 of that head's headDim values, round to nearest even), and attention reads them
// dequantizing on the fly. The pool layout matches the float32 one: (numPages, blockSize, kvHeads, headDim)
// values and (numPages, blockSize, kvHeads) scales per layer and K/V.
#include <cmath>

#include "engine.h"

namespace tpserve {

void quantizeKvHeads(const float* x, int heads, int d, int8_t* q, float* scales) {
  for (int h = 0; h < heads; h++) {
    const float* xh = x + (size_t)h * d;
    float amax = 0.f;
    for (int i = 0; i < d; i++) amax = std::fmax(amax, std::fabs(xh[i]));
    const float s = amax / 127.f;
    const float inv = s > 0.f ? 1.f / s : 0.f;
    for (int i = 0; i < d; i++) {
      float v = std::nearbyint(xh[i] * inv);
      v = v > 127.f ? 127.f : (v < -127.f ? -127.f : v);
      q[(size_t)h * d + i] = (int8_t)v;
    }
    scales[h] = s;
  }
}

void attentionInt8(const AttnArgs& a, const KvInt8View& kv, int t, int h, float* sc) {
  const int d = a.headDim, bs = a.blockSize, nkv = a.numKvHeads;
  const int kvh = h / (a.numHeads / nkv);
  const int n = a.contextLen - a.qLen + t + 1;  // causal: positions 0 .. n-1
  const float* q = a.q + (size_t)t * a.qStride + (size_t)h * d;
  float* o = a.out + (size_t)t * a.qStride + (size_t)h * d;
  const float scale = 1.0f / std::sqrt((float)d);
  const size_t tokStride = (size_t)nkv * d;
  float mx = -INFINITY;
  for (int j = 0; j < n; j++) {
    const size_t tok = (size_t)a.blockTable[j / bs] * bs + j % bs;
    const int8_t* kp = kv.k + tok * tokStride + (size_t)kvh * d;
    float s = 0.f;
    for (int i = 0; i < d; i++) s += q[i] * (float)kp[i];
    s *= kv.ks[tok * nkv + kvh] * scale;
    sc[j] = s;
    mx = s > mx ? s : mx;
  }
  const float inv = softmaxExp(sc, n, mx);
  for (int i = 0; i < d; i++) o[i] = 0.f;
  for (int j = 0; j < n; j++) {
    const size_t tok = (size_t)a.blockTable[j / bs] * bs + j % bs;
    const int8_t* vp = kv.v + tok * tokStride + (size_t)kvh * d;
    const float p = sc[j] * inv * kv.vs[tok * nkv + kvh];
    for (int i = 0; i < d; i++) o[i] += p * (float)vp[i];
  }
}

}  // namespace tpserve

namespace tpserve {

// Per layer: K values then V values, each numPages*blockSize*kvHeads*headDim; scales likewise per head.
void Engine::writeKvInt8(int l, size_t off, const float* k, const float* v) {
  const ModelShape& s = ls_;  // this rank's shard (tensor parallelism: its kv heads)
  const size_t half = (size_t)o_.numPages * o_.blockSize * s.kvHeads * s.headDim, halfS = half / s.headDim;
  int8_t* base = kv8_.data() + (size_t)l * 2 * half;
  float* sbase = kvScale_.data() + (size_t)l * 2 * halfS;
  quantizeKvHeads(k, s.kvHeads, s.headDim, base + off, sbase + off / s.headDim);
  quantizeKvHeads(v, s.kvHeads, s.headDim, base + half + off, sbase + halfS + off / s.headDim);
}

KvInt8View Engine::kvInt8View(int l) const {
  const ModelShape& s = ls_;  // this rank's shard (tensor parallelism: its kv heads)
  const size_t half = (size_t)o_.numPages * o_.blockSize * s.kvHeads * s.headDim, halfS = half / s.headDim;
  const int8_t* base = kv8_.data() + (size_t)l * 2 * half;
  const float* sbase = kvScale_.data() + (size_t)l * 2 * halfS;
  return {base, base + half, sbase, sbase + halfS};
}

}  // namespace tpserve
