// Token sampling on the GPU: sample_rows() picks, for each logits row, the token that
// services/worker/sampler.ts sampleToken() picks from the same row and parameters.
//
// One block of kSampleThreads per row, no sort, no workspace (all scratch is in shared memory):
//   1. argmax (NaN never wins, ties -> lowest id). Greedy rows (temperature 0 or top_k 1) and rows whose max is not
//      finite stop here, as in the TS.
//   2. The TS ranks tokens by (logit desc, id asc) (NaN = -inf, -0 = +0). top-k and top-p both keep a prefix of that
//      ranking; the prefix is kept as a pair (K, idCut): token i is in it when key(i) > K, or key(i) == K and
//      i <= idCut (key = order-preserving uint32 of the logit).
//      - top-k: radix select on the key (3 passes of 11/11/10 bits, block-wide count histograms) finds the key of the
//        k-th ranked token; when several tokens share it, an ordered scan finds the id of the last one kept.
//      - top-p: the same radix select, but the histograms hold probability mass (double, w = exp((l - max) / T)
//        in double as the TS) over the top-k set (or all tokens): the key where the cumulative mass, best first,
//        first reaches topP * z; among tokens sharing that key, the smallest count c with mass_above + c * w >= target
//        (then the id of the c-th by an ordered scan). This is the TS's "smallest prefix with cum >= topP * z".
//   3. min-p is a filter (w >= minP; w = probability / max probability) and zero weights are never drawn.
//   4. Draw: u = uniformAt(seed, position), bit-exact splitmix64; the kept weights are summed in double in id order
//      by a two-level block scan (per-warp contiguous segments, then per-lane sub-chunks of the crossing warp), and
//      the token is the first kept id whose cumulative weight exceeds u * total (fallback: the last positive one).
// Sums are in double but in a different order than the TS's sequential loops (and the mass histograms use atomics,
// so their rounding is not run-to-run deterministic): the result differs from the TS only when a cumulative sum lands
// within ~1e-13 (relative) of a boundary (u * total for the draw, topP * z for the nucleus, minP for min-p).
// Parameters arrive as float (SamplingRow): the TS, given the same values widened to double, agrees as above.
#include <cfloat>
#include <climits>

#include "kernels.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kSampleThreads = 512;
constexpr int kSampleWarps = kSampleThreads / 32;
constexpr int kMaxBins = 2048;
constexpr unsigned kFull = 0xffffffffu;

// ---------------------------------------------------------------- uniformAt (sampler.ts), bit-exact
__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

__device__ __forceinline__ double uniform_at(uint64_t seed, int position) {
  const uint64_t start = mix64(seed ^ 0x5851f42d4c957f2dull);
  const uint64_t h = mix64(start + ((uint64_t)(int64_t)position + 1ull) * 0x9e3779b97f4a7c15ull);
  return (double)(h >> 11) * (1.0 / 9007199254740992.0);  // exact: h >> 11 < 2^53, times 2^-53
}

// ---------------------------------------------------------------- ranking key and weight
__device__ __forceinline__ bool is_nan_bits(uint32_t b) { return (b & 0x7fffffffu) > 0x7f800000u; }

/** Order-preserving uint32 of a logit: NaN ranks as -inf, -0 as +0 (the TS compares values). */
__device__ __forceinline__ uint32_t key_of(float v) {
  uint32_t b = __float_as_uint(v);
  if (is_nan_bits(b)) b = 0xff800000u;  // -inf
  if (b == 0x80000000u) b = 0u;         // -0 -> +0
  return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float float_of_key(uint32_t k) {
  return __uint_as_float((k & 0x80000000u) ? (k & 0x7fffffffu) : ~k);
}

/** exp((v - m) / T) in double, as the TS; -inf and NaN weigh 0. */
__device__ __forceinline__ double weight_of(float v, double m, double T) {
  return v > -INFINITY ? exp(((double)v - m) / T) : 0.0;
}

__device__ __forceinline__ double warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(kFull, v, o);
  return v;
}

__device__ __forceinline__ double warp_incl_scan_d(double v, int lane) {
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    const double t = __shfl_up_sync(kFull, v, o);
    if (lane >= o) v += t;
  }
  return v;
}

__device__ __forceinline__ int warp_max_i(int v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = max(v, __shfl_xor_sync(kFull, v, o));
  return v;
}

struct SampleSmem {
  double hm[kMaxBins];  // mass histogram
  int hc[kMaxBins];     // count histogram
  double wsum[kSampleWarps];
  int wint[kSampleWarps];
  float bestV[kSampleWarps];
  int bestI[kSampleWarps];
  // radix-select results of the current pass (written by warp 0)
  int selBin, found;
  double goal, aboveCnt, aboveMass, binCnt, binMass;
  int result;
};

/**
 * Adds (1, w) to bin `bin` of the histograms for every active lane. Lanes of a warp that share a bin are combined
 * first (one shared atomic per distinct bin and warp), so concentrated keys do not serialize on one address.
 * Must be called by all 32 lanes.
 */
__device__ __forceinline__ void hist_add(bool active, uint32_t bin, double w, bool withMass, SampleSmem& s,
                                         int lane) {
  if (__ballot_sync(kFull, active) == 0) return;
  const unsigned peers = __match_any_sync(kFull, active ? bin : 0xffffffffu);
  const bool leader = active && lane == __ffs(peers) - 1;
  if (leader) atomicAdd(&s.hc[bin], __popc(peers));
  if (!withMass) return;
  const bool single = __popc(peers) == 1;
  if (active && single) atomicAdd(&s.hm[bin], w);
  unsigned multi = __ballot_sync(kFull, leader && !single);  // leaders of groups of 2+ lanes
  while (multi) {
    const int ld = __ffs(multi) - 1;
    multi &= multi - 1;
    const unsigned g = __shfl_sync(kFull, peers, ld);
    const double part = warp_sum_d(((g >> lane) & 1u) ? w : 0.0);
    if (lane == ld) atomicAdd(&s.hm[bin], part);
  }
}

/**
 * Radix select over the tokens with dom(i, key): the key K where the metric (count, or mass when useMass), summed
 * over keys from the largest down, first reaches the goal: metric(key > K) < goal <= metric(key >= K).
 * goalScale > 0: the goal is goalScale * (total mass of the domain), taken from the first pass.
 * Returns false (uniformly) when the goal is never reached (only possible for mass goals through rounding).
 */
template <class Dom>
__device__ bool radix_select(const float* __restrict__ row, int vocab, Dom dom, bool useMass, double goal,
                             double goalScale, double m, double T, SampleSmem& s, uint32_t& K) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  uint32_t prefix = 0, pmask = 0;
#pragma unroll 1
  for (int pass = 0; pass < 3; pass++) {
    const int shift = pass == 0 ? 21 : pass == 1 ? 10 : 0, nb = pass == 2 ? 1024 : 2048;  // 11 + 11 + 10 bits
    for (int b = tid; b < nb; b += kSampleThreads) s.hc[b] = 0, s.hm[b] = 0.0;
    __syncthreads();
    for (int i0 = warp * 32; i0 < vocab; i0 += kSampleThreads) {
      const int i = i0 + lane;
      bool act = false;
      uint32_t bin = 0;
      double w = 0.0;
      if (i < vocab) {
        const float v = row[i];
        const uint32_t k = key_of(v);
        if ((k & pmask) == prefix && dom(i, k)) {
          act = true;
          bin = (k >> shift) & (uint32_t)(nb - 1);
          if (useMass) w = weight_of(v, m, T);
        }
      }
      hist_add(act, bin, w, useMass, s, lane);
    }
    __syncthreads();
    if (warp == 0) {
      // Lane l covers bins hi .. hi - per + 1 (descending), hi = nb - 1 - l * per.
      const int per = nb / 32, hi = nb - 1 - lane * per;
      double c = 0, ms = 0;
      for (int b = hi; b > hi - per; b--) c += s.hc[b], ms += s.hm[b];
      double g = pass == 0 ? goal : s.goal;
      if (pass == 0 && goalScale > 0) g = goalScale * warp_sum_d(ms);
      const double aC = pass == 0 ? 0.0 : s.aboveCnt, aM = pass == 0 ? 0.0 : s.aboveMass;
      const double metric = useMass ? ms : c;
      const double inclM = warp_incl_scan_d(metric, lane);
      const double inclC = warp_incl_scan_d(c, lane), inclMs = warp_incl_scan_d(ms, lane);
      const double aMetric = useMass ? aM : aC;
      const unsigned cross = __ballot_sync(kFull, metric > 0 && aMetric + inclM >= g);
      if (lane == 0) s.goal = g, s.found = cross != 0;
      if (cross && lane == __ffs(cross) - 1) {
        double cumC = aC + (inclC - c), cumM = aM + (inclMs - ms);
        int sel = -1;
        double selC = 0, selM = 0, selAC = cumC, selAM = cumM;
        for (int b = hi; b > hi - per; b--) {
          const double hc = s.hc[b], hmb = s.hm[b];
          if (hc > 0) sel = b, selC = hc, selM = hmb, selAC = cumC, selAM = cumM;  // fallback: last non-empty
          if (hc > 0 && (useMass ? cumM : cumC) + (useMass ? hmb : hc) >= g) break;
          cumC += hc, cumM += hmb;
        }
        s.selBin = sel, s.aboveCnt = selAC, s.aboveMass = selAM, s.binCnt = selC, s.binMass = selM;
      }
    }
    __syncthreads();
    if (!s.found) return false;
    prefix |= (uint32_t)s.selBin << shift;
    pmask |= (uint32_t)(nb - 1) << shift;
  }
  K = prefix;
  return true;
}

/**
 * Walks weights wfn(0 .. vocab) in id order: returns the first id whose inclusive cumulative weight exceeds
 * tfn(total), or the last id with a positive weight when none does (the TS's lastPositive), or -1 when all are 0.
 * Two levels: per-warp contiguous segments (coalesced), then per-lane sub-chunks of the segment that crosses.
 */
template <class WFn, class TFn>
__device__ int ordered_find(int vocab, WFn wfn, TFn tfn, SampleSmem& s) {
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const int seg = (((vocab + kSampleWarps - 1) / kSampleWarps) + 31) & ~31;
  const int b0 = min(vocab, warp * seg), b1 = min(vocab, b0 + seg);
  double sum = 0;
  int lastPos = -1;
  for (int i = b0 + lane; i < b1; i += 32) {
    const double w = wfn(i);
    if (w > 0) sum += w, lastPos = i;
  }
  sum = warp_sum_d(sum);
  lastPos = warp_max_i(lastPos);
  __syncthreads();  // s.wsum / s.result of a previous call
  if (lane == 0) s.wsum[warp] = sum, s.wint[warp] = lastPos;
  if (tid == 0) s.result = -2;
  __syncthreads();
  double total = 0;
  int lastAll = -1;
  for (int j = 0; j < kSampleWarps; j++) total += s.wsum[j], lastAll = max(lastAll, s.wint[j]);
  const double target = tfn(total);
  int cw = -1;
  double excl = 0;
  {
    double c = 0;
    for (int j = 0; j < kSampleWarps; j++) {
      if (s.wsum[j] > 0 && c + s.wsum[j] > target) {
        cw = j, excl = c;
        break;
      }
      c += s.wsum[j];
    }
  }
  if (cw < 0) return lastAll;  // uniform across the block
  if (warp == cw) {
    const int sub = (seg + 31) / 32;
    const int c0 = min(b1, b0 + lane * sub), c1 = min(b1, c0 + sub);
    double ls = 0;
    int llast = -1;
    for (int i = c0; i < c1; i++) {
      const double w = wfn(i);
      if (w > 0) ls += w, llast = i;
    }
    const double incl = warp_incl_scan_d(ls, lane);
    double ex = __shfl_up_sync(kFull, incl, 1);
    if (lane == 0) ex = 0;
    const unsigned cross = __ballot_sync(kFull, ls > 0 && excl + incl > target);
    const unsigned nonzero = __ballot_sync(kFull, llast >= 0);
    const int pick = cross ? __ffs(cross) - 1 : 31 - __clz(nonzero);  // nonzero != 0: wsum[cw] > 0
    if (lane == pick) {
      double cum = excl + ex;
      int res = llast;
      for (int i = c0; i < c1; i++) {
        const double w = wfn(i);
        if (w > 0) {
          cum += w;
          if (cum > target) {
            res = i;
            break;
          }
        }
      }
      s.result = res;
    }
  }
  __syncthreads();
  return s.result;
}

__global__ void __launch_bounds__(kSampleThreads, 1) sample_kernel(const float* __restrict__ logits, int vocab,
                                                                const SamplingRow* __restrict__ params,
                                                                int32_t* __restrict__ out) {
  __shared__ SampleSmem s;
  const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
  const float* row = logits + (size_t)blockIdx.x * vocab;
  const SamplingRow p = params[blockIdx.x];

  // 1. argmax (NaN never wins; ties -> lowest id; nothing above -inf -> 0).
  float bv = -INFINITY;
  int bi = INT_MAX;
  for (int i = tid; i < vocab; i += kSampleThreads) {
    const float v = row[i];
    if (v > bv) bv = v, bi = i;  // ids increase per thread: first strict max is the lowest id
  }
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) {
    const float ov = __shfl_xor_sync(kFull, bv, o);
    const int oi = __shfl_xor_sync(kFull, bi, o);
    if (ov > bv || (ov == bv && oi < bi)) bv = ov, bi = oi;
  }
  if (lane == 0) s.bestV[warp] = bv, s.bestI[warp] = bi;
  __syncthreads();
  bv = s.bestV[0], bi = s.bestI[0];
  for (int j = 1; j < kSampleWarps; j++)
    if (s.bestV[j] > bv || (s.bestV[j] == bv && s.bestI[j] < bi)) bv = s.bestV[j], bi = s.bestI[j];
  const int maxIdx = bi == INT_MAX ? 0 : bi;

  const float T = p.temperature;
  const int topK = p.topK > 0 && p.topK < vocab ? p.topK : 0;
  const float mf = row[maxIdx];
  const uint32_t mb = __float_as_uint(mf);
  if (!(T > 0.f) || topK == 1 || (mb & 0x7f800000u) == 0x7f800000u) {  // greedy, or max not finite
    if (tid == 0) out[blockIdx.x] = maxIdx;
    return;
  }
  const double m = mf, Td = T;
  const double u = uniform_at(p.seed, p.position);
  const double topP = p.topP > 0.f && p.topP < 1.f ? (double)p.topP : 1.0;
  const double minP = p.minP > 0.f && p.minP < 1.f ? (double)p.minP : 0.0;

  // 2. The kept prefix of the ranking: key > K, or key == K and id <= idCut. Start: everything.
  uint32_t K = 0;
  int idCut = vocab - 1;
  if (topK > 0) {
    uint32_t Kk = 0;
    radix_select(row, vocab, [](int, uint32_t) { return true; }, false, (double)topK, 0.0, m, Td, s, Kk);
    const int r = topK - (int)s.aboveCnt, eq = (int)s.binCnt;  // take the r lowest ids of the eq tied tokens
    int cut = vocab - 1;
    if (r < eq) {
      cut = ordered_find(
          vocab, [&](int i) { return key_of(row[i]) == Kk ? 1.0 : 0.0; }, [&](double) { return (double)(r - 1); },
          s);
    }
    K = Kk, idCut = cut;
  }
  if (topP < 1.0) {
    const uint32_t K0 = K;
    const int cut0 = idCut;
    auto inC = [=](int i, uint32_t k) { return k > K0 || (k == K0 && i <= cut0); };
    uint32_t Kp;
    if (radix_select(row, vocab, inC, true, 0.0, topP, m, Td, s, Kp)) {
      const double target = s.goal, aM = s.aboveMass;
      const int eq = (int)s.binCnt;
      const double w = weight_of(float_of_key(Kp), m, Td);
      int c = eq;
      if (w > 0) {
        const double need = ceil((target - aM) / w);
        c = need < 1.0 ? 1 : need > (double)eq ? eq : (int)need;
        while (c > 1 && aM + (double)(c - 1) * w >= target) c--;
        while (c < eq && aM + (double)c * w < target) c++;
      }
      int cut = Kp == K0 ? cut0 : vocab - 1;
      if (c < eq) {
        cut = ordered_find(
            vocab, [&](int i) { const uint32_t k = key_of(row[i]); return k == Kp && inC(i, k) ? 1.0 : 0.0; },
            [&](double) { return (double)(c - 1); }, s);
      }
      K = Kp, idCut = cut;
    }
  }

  // 3-4. min-p filter and the inverse-CDF draw in id order.
  const uint32_t Kf = K;
  const int cutf = idCut;
  const int tok = ordered_find(
      vocab,
      [&](int i) {
        const float v = row[i];
        const uint32_t k = key_of(v);
        if (!(k > Kf || (k == Kf && i <= cutf))) return 0.0;
        const double w = weight_of(v, m, Td);
        return w >= minP ? w : 0.0;
      },
      [&](double total) { return u * total; }, s);
  if (tid == 0) out[blockIdx.x] = tok < 0 ? maxIdx : tok;
}

}  // namespace

size_t sample_workspace_bytes(int rows, int vocab) {
  (void)rows, (void)vocab;
  return 0;  // all scratch is in shared memory; sample_rows accepts a null workspace
}

cudaError_t sample_rows(const float* logits, int rows, int vocab, const SamplingRow* params, int32_t* out,
                        void* workspace, cudaStream_t stream) {
  (void)workspace;
  if (rows < 0 || vocab <= 0 || (rows > 0 && (!logits || !params || !out))) return cudaErrorInvalidValue;
  if (rows == 0) return cudaSuccess;
  sample_kernel<<<rows, kSampleThreads, 0, stream>>>(logits, vocab, params, out);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
