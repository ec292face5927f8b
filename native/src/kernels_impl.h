// ISA-generic kernel bodies. Included by kernels_{scalar,avx2,avx512}.cc inside a `#pragma GCC target` region and
// a per-ISA namespace, after the standard headers, with a vector traits struct V:
//   V::T, V::W (lanes), zero(), set1(f), load(p), fma(a, b, acc), add(a, b), hsum(v),
//   loadq(bytes, lo, hi): W bytes -> W low nibbles (even columns) and W high nibbles (odd columns) as floats.
// Tunables per ISA: DENSE_RB1 (rows per block when m == 1), DENSE_TB x DENSE_RB (tokens x rows otherwise),
// I4_RB1, I4_TB x I4_RB likewise for int4.

#define TP_INLINE inline __attribute__((always_inline))

static TP_INLINE float dotv(const float* a, const float* b, int n) {
  typename V::T s0 = V::zero(), s1 = V::zero();
  int i = 0;
  for (; i + 2 * V::W <= n; i += 2 * V::W) {
    s0 = V::fma(V::load(a + i), V::load(b + i), s0);
    s1 = V::fma(V::load(a + i + V::W), V::load(b + i + V::W), s1);
  }
  for (; i + V::W <= n; i += V::W) s0 = V::fma(V::load(a + i), V::load(b + i), s0);
  float s = V::hsum(V::add(s0, s1));
  for (; i < n; i++) s += a[i] * b[i];
  return s;
}

// Weights as float32 or bf16 (raw 16-bit values, widened exactly to float32 on load): same arithmetic either way.
static TP_INLINE typename V::T loadw(const float* p) { return V::load(p); }
static TP_INLINE typename V::T loadw(const uint16_t* p) { return V::loadbf(p); }
static TP_INLINE float wval(const float* p) { return *p; }
static TP_INLINE float wval(const uint16_t* p) {
  const uint32_t bits = (uint32_t)*p << 16;
  float f;
  __builtin_memcpy(&f, &bits, 4);
  return f;
}

template <int TB, int RB, typename WT>
static TP_INLINE void denseBlock(const float* x, int k, const WT* w, float* y, int ldy) {
  typename V::T acc[TB][RB];
  for (int t = 0; t < TB; t++)
    for (int r = 0; r < RB; r++) acc[t][r] = V::zero();
  const int kv = k - k % V::W;
  for (int c = 0; c < kv; c += V::W) {
    typename V::T xv[TB];
    for (int t = 0; t < TB; t++) xv[t] = V::load(x + (size_t)t * k + c);
    for (int r = 0; r < RB; r++) {
      typename V::T wv = loadw(w + (size_t)r * k + c);
      for (int t = 0; t < TB; t++) acc[t][r] = V::fma(wv, xv[t], acc[t][r]);
    }
  }
  for (int t = 0; t < TB; t++)
    for (int r = 0; r < RB; r++) {
      float s = V::hsum(acc[t][r]);
      for (int c = kv; c < k; c++) s += x[(size_t)t * k + c] * wval(w + (size_t)r * k + c);
      y[(size_t)t * ldy + r] = s;
    }
}

template <int TB, int RB, typename WT>
static TP_INLINE void denseRows(const float* x, int k, const WT* w, float* y, int ldy, int rb, int re) {
  int r = rb;
  for (; r + RB <= re; r += RB) denseBlock<TB, RB>(x, k, w + (size_t)r * k, y + r, ldy);
  for (; r < re; r++) denseBlock<TB, 1>(x, k, w + (size_t)r * k, y + r, ldy);
}

template <typename WT>
static void gemmDense(const float* x, int m, int k, const WT* w, float* y, int ldy, int r0, int r1) {
  constexpr int RT = 64;
  for (int rt = r0; rt < r1; rt += RT) {
    const int re = rt + RT < r1 ? rt + RT : r1;
    int t = 0;
    if (m > 1)
      for (; t + DENSE_TB <= m; t += DENSE_TB)
        denseRows<DENSE_TB, DENSE_RB>(x + (size_t)t * k, k, w, y + (size_t)t * ldy, ldy, rt, re);
    for (; t < m; t++) denseRows<1, DENSE_RB1>(x + (size_t)t * k, k, w, y + (size_t)t * ldy, ldy, rt, re);
  }
}

static void gemmF32Impl(const float* x, int m, int k, const float* w, float* y, int ldy, int r0, int r1) {
  gemmDense(x, m, k, w, y, ldy, r0, r1);
}

static void gemmBf16Impl(const float* x, int m, int k, const uint16_t* w, float* y, int ldy, int r0, int r1) {
  gemmDense(x, m, k, w, y, ldy, r0, r1);
}

template <int TB, int RB>
static TP_INLINE void i4Block(const float* xp, const float* xsum, int m0, const Int4View& w, int row, float* y,
                              int ldy) {
  (void)m0;
  const int k = w.cols, G = w.group, ng = k / G;
  const size_t bpr = (size_t)k / 2;
  typename V::T acc[TB][RB];
  float corr[TB][RB];
  for (int t = 0; t < TB; t++)
    for (int r = 0; r < RB; r++) acc[t][r] = V::zero(), corr[t][r] = 0.f;
  for (int g = 0; g < ng; g++) {
    typename V::T tmp[TB][RB];
    for (int t = 0; t < TB; t++)
      for (int r = 0; r < RB; r++) tmp[t][r] = V::zero();
    for (int c = g * G; c < (g + 1) * G; c += 2 * V::W) {
      for (int r = 0; r < RB; r++) {
        typename V::T lo, hi;
        V::loadq(w.q + (size_t)(row + r) * bpr + c / 2, lo, hi);
        for (int t = 0; t < TB; t++) {
          tmp[t][r] = V::fma(lo, V::load(xp + (size_t)t * k + c), tmp[t][r]);
          tmp[t][r] = V::fma(hi, V::load(xp + (size_t)t * k + c + V::W), tmp[t][r]);
        }
      }
    }
    for (int r = 0; r < RB; r++) {
      const float s = w.scales[(size_t)(row + r) * ng + g];
      const float z = w.zeros ? (float)w.zeros[(size_t)(row + r) * ng + g] : 8.f;
      const typename V::T sv = V::set1(s);
      for (int t = 0; t < TB; t++) {
        acc[t][r] = V::fma(tmp[t][r], sv, acc[t][r]);
        corr[t][r] += s * z * xsum[(size_t)t * ng + g];
      }
    }
  }
  for (int t = 0; t < TB; t++)
    for (int r = 0; r < RB; r++) y[(size_t)t * ldy + row + r] = V::hsum(acc[t][r]) - corr[t][r];
}

template <int TB, int RB>
static TP_INLINE void i4Rows(const float* xp, const float* xsum, const Int4View& w, float* y, int ldy, int rb,
                             int re) {
  int r = rb;
  for (; r + RB <= re; r += RB) i4Block<TB, RB>(xp, xsum, 0, w, r, y, ldy);
  for (; r < re; r++) i4Block<TB, 1>(xp, xsum, 0, w, r, y, ldy);
}

static void gemmI4Impl(const float* xp, const float* xsum, int m, const Int4View& w, float* y, int ldy, int r0,
                       int r1) {
  constexpr int RT = 64;
  const int k = w.cols, ng = w.cols / w.group;
  for (int rt = r0; rt < r1; rt += RT) {
    const int re = rt + RT < r1 ? rt + RT : r1;
    int t = 0;
    if (m > 1)
      for (; t + I4_TB <= m; t += I4_TB)
        i4Rows<I4_TB, I4_RB>(xp + (size_t)t * k, xsum + (size_t)t * ng, w, y + (size_t)t * ldy, ldy, rt, re);
    for (; t < m; t++) i4Rows<1, I4_RB1>(xp + (size_t)t * k, xsum + (size_t)t * ng, w, y + (size_t)t * ldy, ldy, rt, re);
  }
}

static void prepI4Impl(const float* x, int m, int k, int group, float* xp, float* xsum) {
  constexpr int C = 2 * V::W;
  const int ng = k / group;
  for (int t = 0; t < m; t++) {
    const float* xr = x + (size_t)t * k;
    float* pr = xp + (size_t)t * k;
    for (int c = 0; c < k; c += C)
      for (int i = 0; i < V::W; i++) {
        pr[c + i] = xr[c + 2 * i];
        pr[c + V::W + i] = xr[c + 2 * i + 1];
      }
    for (int g = 0; g < ng; g++) {
      float s = 0.f;
      for (int i = 0; i < group; i++) s += xr[g * group + i];
      xsum[(size_t)t * ng + g] = s;
    }
  }
}

static void attentionGeneric(const AttnArgs& a, int t, int h, float* sc) {
  const int d = a.headDim, bs = a.blockSize, nkv = a.numKvHeads;
  const int kvh = h / (a.numHeads / nkv);
  const int n = a.contextLen - a.qLen + t + 1;  // causal: positions 0 .. n-1
  const float* q = a.q + (size_t)t * a.qStride + (size_t)h * d;
  float* o = a.out + (size_t)t * a.qStride + (size_t)h * d;
  const float scale = 1.0f / std::sqrt((float)d);
  const size_t tokStride = (size_t)nkv * d;
  float mx = -INFINITY;
  for (int j0 = 0, b = 0; j0 < n; j0 += bs, b++) {
    const size_t base = ((size_t)a.blockTable[b] * bs) * tokStride + (size_t)kvh * d;
    const int je = j0 + bs < n ? j0 + bs : n;
    for (int j = j0; j < je; j++) {
      const float s = dotv(q, a.k + base + (size_t)(j - j0) * tokStride, d) * scale;
      sc[j] = s;
      mx = s > mx ? s : mx;
    }
  }
  const float inv = softmaxExp(sc, n, mx);
  for (int i = 0; i < d; i++) o[i] = 0.f;
  for (int j0 = 0, b = 0; j0 < n; j0 += bs, b++) {
    const size_t base = ((size_t)a.blockTable[b] * bs) * tokStride + (size_t)kvh * d;
    const int je = j0 + bs < n ? j0 + bs : n;
    for (int j = j0; j < je; j++) {
      const float* vp = a.v + base + (size_t)(j - j0) * tokStride;
      const typename V::T pv = V::set1(sc[j] * inv);
      int i = 0;
      for (; i + V::W <= d; i += V::W) V::store(o + i, V::fma(pv, V::load(vp + i), V::load(o + i)));
      for (; i < d; i++) o[i] += sc[j] * inv * vp[i];
    }
  }
}

// Head dims that fill 1..8 whole vectors: the query and the output accumulator live in registers.
template <int NV>
static void attentionFixed(const AttnArgs& a, int t, int h, float* sc) {
  constexpr int d = NV * V::W;
  const int bs = a.blockSize, nkv = a.numKvHeads;
  const int kvh = h / (a.numHeads / nkv);
  const int n = a.contextLen - a.qLen + t + 1;
  const float* qp = a.q + (size_t)t * a.qStride + (size_t)h * d;
  float* o = a.out + (size_t)t * a.qStride + (size_t)h * d;
  const float scale = 1.0f / std::sqrt((float)d);
  const size_t tokStride = (size_t)nkv * d;
  typename V::T q[NV], acc[NV];
  for (int i = 0; i < NV; i++) q[i] = V::load(qp + i * V::W), acc[i] = V::zero();
  float mx = -INFINITY;
  for (int j0 = 0, b = 0; j0 < n; j0 += bs, b++) {
    const float* kb = a.k + ((size_t)a.blockTable[b] * bs) * tokStride + (size_t)kvh * d;
    const int je = j0 + bs < n ? j0 + bs : n;
    for (int j = j0; j < je; j++) {
      const float* kp = kb + (size_t)(j - j0) * tokStride;
      typename V::T s0 = V::zero(), s1 = V::zero();
      for (int i = 0; i + 1 < NV; i += 2) {
        s0 = V::fma(q[i], V::load(kp + i * V::W), s0);
        s1 = V::fma(q[i + 1], V::load(kp + (i + 1) * V::W), s1);
      }
      if (NV % 2) s0 = V::fma(q[NV - 1], V::load(kp + (NV - 1) * V::W), s0);
      const float sv = V::hsum(V::add(s0, s1)) * scale;
      sc[j] = sv;
      mx = sv > mx ? sv : mx;
    }
  }
  const float inv = softmaxExp(sc, n, mx);
  for (int j0 = 0, b = 0; j0 < n; j0 += bs, b++) {
    const float* vb = a.v + ((size_t)a.blockTable[b] * bs) * tokStride + (size_t)kvh * d;
    const int je = j0 + bs < n ? j0 + bs : n;
    for (int j = j0; j < je; j++) {
      const float* vp = vb + (size_t)(j - j0) * tokStride;
      const typename V::T pv = V::set1(sc[j] * inv);
      for (int i = 0; i < NV; i++) acc[i] = V::fma(pv, V::load(vp + i * V::W), acc[i]);
    }
  }
  for (int i = 0; i < NV; i++) V::store(o + i * V::W, acc[i]);
}

static void attentionImpl(const AttnArgs& a, int t, int h, float* sc) {
  if (V::W > 1) {
    const int d = a.headDim;
    if (d == V::W) return attentionFixed<1>(a, t, h, sc);
    if (d == 2 * V::W) return attentionFixed<2>(a, t, h, sc);
    if (d == 4 * V::W) return attentionFixed<4>(a, t, h, sc);
    if (d == 8 * V::W) return attentionFixed<8>(a, t, h, sc);
  }
  attentionGeneric(a, t, h, sc);
}

static const KernelTable kTable = {TABLE_NAME,   2 * V::W,      gemmF32Impl, gemmI4Impl,
                                   prepI4Impl,   attentionImpl, gemmBf16Impl};
