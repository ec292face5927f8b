// Checks sample_rows (native/cuda/kernels/sampling.cu) against a CPU port of services/worker/sampler.ts
// (sampleToken, double precision, same order of operations), then a distribution check and timings.
// Usage: check_sampling [--json FILE] [--seed N] [--no-bench]. Exit 1 on any failure.
//
// Agreement: the GPU token must equal the reference's in >= 99.9% of draws of each group, and every mismatch must be
// explained by a boundary within 1e-6 (relative) in the reference: the draw (cumulative weight vs u * total), the
// nucleus (cumulative mass vs topP * z) or min-p (weight vs minP). Parameters are the SamplingRow floats widened to
// double, as the TS would see them if handed the same values.
// Distribution: 20000 draws (positions 0..19999) of one row at temperature 1, frequencies vs softmax within 0.02.
#include <cuda_runtime.h>

#include <algorithm>
#include <cmath>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/kernels.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {


// ---------------------------------------------------------------- CPU port of sampler.ts
uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
double uniform_at(uint64_t seed, int position) {
  const uint64_t start = mix64(seed ^ 0x5851f42d4c957f2dull);
  const uint64_t h = mix64(start + ((uint64_t)(int64_t)position + 1ull) * 0x9e3779b97f4a7c15ull);
  return (double)(h >> 11) / 9007199254740992.0;
}

const double NEG_INF = -INFINITY;

int ref_argmax(const float* l, int vocab) {
  int best = 0;
  double bestV = NEG_INF;
  for (int i = 0; i < vocab; i++)
    if ((double)l[i] > bestV) bestV = l[i], best = i;
  return best;
}

int draw_sorted(const std::vector<int>& ids, const std::vector<double>& w, int n, double u) {
  double total = 0;
  for (int j = 0; j < n; j++) total += w[j];
  const double target = u * total;
  double cum = 0;
  int lastPositive = ids[0];
  for (int j = 0; j < n; j++)
    if (w[j] > 0) {
      cum += w[j];
      lastPositive = ids[j];
      if (cum > target) return ids[j];
    }
  return lastPositive;
}

int draw_kept(std::vector<int> kept, const float* l, double T, double m, double u) {
  std::sort(kept.begin(), kept.end());
  std::vector<double> w(kept.size());
  for (size_t j = 0; j < kept.size(); j++) {
    const double v = l[kept[j]];
    w[j] = v > NEG_INF ? std::exp((v - m) / T) : 0;
  }
  return draw_sorted(kept, w, (int)kept.size(), u);
}

double val(const float* l, int i) { return std::isnan(l[i]) ? NEG_INF : (double)l[i]; }

int sample_topk(const float* l, int vocab, int k, double T, double m, double topP, double minP, double u) {
  // The TS keeps a heap of the k best (logit desc, id asc); a partial sort gives the same set and order.
  std::vector<int> cand(vocab);
  std::iota(cand.begin(), cand.end(), 0);
  auto better = [&](int a, int b) { const double va = val(l, a), vb = val(l, b); return va > vb || (va == vb && a < b); };
  std::partial_sort(cand.begin(), cand.begin() + k, cand.end(), better);
  cand.resize(k);
  std::vector<double> w(k);
  double z = 0;
  for (int j = 0; j < k; j++) w[j] = std::exp((val(l, cand[j]) - m) / T), z += w[j];
  int keep = k;
  if (topP < 1) {
    const double target = topP * z;
    double cum = 0;
    for (int j = 0; j < k; j++) {
      cum += w[j];
      if (cum >= target) { keep = j + 1; break; }
    }
  }
  if (minP > 0) {
    int j = 1;
    while (j < keep && w[j] >= minP) j++;
    keep = j;
  }
  cand.resize(keep);
  return draw_kept(cand, l, T, m, u);
}

constexpr int BUCKETS_PER_NAT = 16, NUM_BUCKETS = BUCKETS_PER_NAT * 40 + 1;
int bucket_of(double d) { return (int)std::min<double>(std::floor(d * BUCKETS_PER_NAT), NUM_BUCKETS - 1); }

int sample_full(const float* l, int vocab, double T, double m, double topP, double minP, double u) {
  std::vector<int> ids;
  std::vector<double> w;
  if (topP >= 1) {
    for (int i = 0; i < vocab; i++) {
      const double v = l[i];
      if (!(v > NEG_INF)) continue;
      const double wi = std::exp((v - m) / T);
      if (wi > 0 && wi >= minP) ids.push_back(i), w.push_back(wi);
    }
    return draw_sorted(ids, w, (int)ids.size(), u);
  }
  std::vector<double> hist(NUM_BUCKETS, 0.0);
  double z = 0;
  for (int i = 0; i < vocab; i++) {
    const double v = l[i];
    if (!(v > NEG_INF)) continue;
    const double d = (m - v) / T, wi = std::exp(-d);
    z += wi;
    hist[bucket_of(d)] += wi;
  }
  const double target = topP * z;
  int boundary = NUM_BUCKETS - 1;
  double massBefore = 0, cum = 0;
  for (int b = 0; b < NUM_BUCKETS; b++) {
    if (cum + hist[b] >= target) { boundary = b, massBefore = cum; break; }
    cum += hist[b];
  }
  std::vector<int> sure, edge;
  for (int i = 0; i < vocab; i++) {
    const double v = l[i];
    if (!(v > NEG_INF)) continue;
    const int b = bucket_of((m - v) / T);
    if (b < boundary) sure.push_back(i);
    else if (b == boundary) edge.push_back(i);
  }
  std::sort(edge.begin(), edge.end(), [&](int a, int b) {
    const double d = (double)l[b] - (double)l[a];
    return d != 0 ? d < 0 : a < b;
  });
  cum = massBefore;
  size_t takeEdge = edge.size();
  for (size_t j = 0; j < edge.size(); j++) {
    cum += std::exp(((double)l[edge[j]] - m) / T);
    if (cum >= target) { takeEdge = j + 1; break; }
  }
  for (size_t j = 0; j < takeEdge; j++) sure.push_back(edge[j]);
  if (minP > 0) {
    std::vector<int> k2;
    for (int id : sure)
      if (std::exp(((double)l[id] - m) / T) >= minP) k2.push_back(id);
    sure.swap(k2);
  }
  return draw_kept(sure, l, T, m, u);
}

int ref_sample(const float* l, int vocab, const tc::SamplingRow& p) {
  const double T = p.temperature;
  const int topK = p.topK > 0 && p.topK < vocab ? p.topK : 0;
  if (!(T > 0) || topK == 1) return ref_argmax(l, vocab);
  const int maxIdx = ref_argmax(l, vocab);
  const double m = l[maxIdx];
  if (!std::isfinite(m)) return maxIdx;
  const double u = uniform_at(p.seed, p.position);
  const double topP = p.topP > 0 && p.topP < 1 ? (double)p.topP : 1;
  const double minP = p.minP > 0 && p.minP < 1 ? (double)p.minP : 0;
  if (topK > 0) return sample_topk(l, vocab, topK, T, m, topP, minP, u);
  return sample_full(l, vocab, T, m, topP, minP, u);
}

/** Why a mismatch may happen: the smallest relative distance of a reference decision to its boundary. */
struct Diag {
  double drawMargin = INFINITY, topPMargin = INFINITY, minPMargin = INFINITY;
  double best() const { return std::min({drawMargin, topPMargin, minPMargin}); }
  const char* kind() const {
    const double b = best();
    return b == drawMargin ? "draw boundary" : b == topPMargin ? "top-p boundary" : "min-p boundary";
  }
};
Diag diagnose(const float* l, int vocab, const tc::SamplingRow& p) {
  Diag d;
  const double T = p.temperature;
  const int topK = p.topK > 0 && p.topK < vocab ? p.topK : 0;
  const int maxIdx = ref_argmax(l, vocab);
  const double m = l[maxIdx];
  std::vector<int> order(vocab);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return val(l, a) > val(l, b); });
  if (topK > 0) order.resize(topK);
  auto w = [&](int i) { return val(l, i) > NEG_INF ? std::exp((val(l, i) - m) / T) : 0.0; };
  const double topP = p.topP > 0 && p.topP < 1 ? (double)p.topP : 1;
  const double minP = p.minP > 0 && p.minP < 1 ? (double)p.minP : 0;
  size_t keep = order.size();
  if (topP < 1) {
    double z = 0;
    for (int i : order) z += w(i);
    double cum = 0;
    bool done = false;
    for (size_t j = 0; j < order.size(); j++) {
      cum += w(order[j]);
      d.topPMargin = std::min(d.topPMargin, std::fabs(cum - topP * z) / z);
      if (!done && cum >= topP * z) keep = j + 1, done = true;
    }
  }
  std::vector<int> kept;
  for (size_t j = 0; j < keep; j++) {
    const double wi = w(order[j]);
    if (minP > 0) d.minPMargin = std::min(d.minPMargin, std::fabs(wi - minP));
    if (wi > 0 && wi >= minP) kept.push_back(order[j]);
  }
  std::sort(kept.begin(), kept.end());
  double total = 0;
  for (int i : kept) total += w(i);
  const double target = uniform_at(p.seed, p.position) * total;
  double cum = 0;
  for (int i : kept) {
    cum += w(i);
    d.drawMargin = std::min(d.drawMargin, std::fabs(cum - target) / total);
  }
  return d;
}

// ---------------------------------------------------------------- inputs
enum class Kind { Spread, Peaky, Ties, Masked };
const char* kind_name(Kind k) {
  return k == Kind::Spread ? "spread" : k == Kind::Peaky ? "peaky" : k == Kind::Ties ? "ties" : "masked";
}
std::vector<float> make_row(Rng& rng, int vocab, Kind kind) {
  std::vector<float> l(vocab);
  switch (kind) {
    case Kind::Spread: rng.fill_uniform(l, -8.f, 8.f); break;
    case Kind::Peaky:
      rng.fill_normal(l, 2.0f);
      for (int j = 0; j < 8; j++) l[rng.below(vocab)] += 8.f + 2.f * j;
      break;
    case Kind::Ties:  // quarter steps: many exact ties at every boundary; -0 and +0 both present
      for (auto& x : l) x = std::round(rng.uniform(-8.f, 8.f) * 4.f) / 4.f;
      l[rng.below(vocab)] = -0.0f, l[rng.below(vocab)] = 0.0f;
      break;
    case Kind::Masked:
      rng.fill_uniform(l, -8.f, 8.f);
      for (auto& x : l)
        if (rng.below(10) < 3) x = -INFINITY;
      for (int j = 0; j < 5; j++) l[rng.below(vocab)] = NAN;
      break;
  }
  return l;
}

tc::SamplingRow random_params(Rng& rng) {
  static const float temps[] = {0.7f, 1.0f, 1.5f};
  static const int topks[] = {0, 1, 40, 1000};
  static const float topps[] = {1.0f, 0.9f, 0.5f};
  static const float minps[] = {0.0f, 0.05f, 0.2f};
  tc::SamplingRow p{};
  p.temperature = rng.below(20) == 0 ? 0.0f : temps[rng.below(3)];
  p.topK = topks[rng.below(4)];
  p.topP = topps[rng.below(3)];
  p.minP = minps[rng.below(3)];
  p.seed = rng.below(4) == 0 ? rng.next() : rng.below(100000);
  p.position = (int)rng.below(5000);
  return p;
}

struct Group {
  std::string name;
  long draws = 0, mismatches = 0, unexplained = 0;
  double worstMargin = 0;
  bool pass = false;
};
std::vector<Group> g_groups;
struct Bench {
  std::string name;
  int rows, vocab;
  double us;
};
std::vector<Bench> g_bench;
bool g_fail = false;
std::string g_dist = "not run";

template <class T>
struct Dev {
  T* p = nullptr;
  explicit Dev(size_t n) {
    if (cudaMalloc(&p, std::max<size_t>(n, 1) * sizeof(T)) != cudaSuccess) p = nullptr;
  }
  ~Dev() { if (p) cudaFree(p); }
};

/** Runs draws over base rows of one vocab size and kind in batches of up to 256 rows. */
int check_group(Rng& rng, int vocab, Kind kind, int draws, int baseRows) {
  std::vector<std::vector<float>> base;
  for (int b = 0; b < baseRows; b++) base.push_back(make_row(rng, vocab, kind));
  Group g;
  g.name = fmt("vocab %d %s", vocab, kind_name(kind));
  const int batch = 256;
  Dev<float> dl((size_t)batch * vocab);
  Dev<tc::SamplingRow> dp(batch);
  Dev<int32_t> dout(batch);
  if (!dl.p || !dp.p || !dout.p) { std::fprintf(stderr, "cudaMalloc failed\n"); return 1; }
  std::vector<float> l((size_t)batch * vocab);
  std::vector<tc::SamplingRow> ps(batch);
  std::vector<int> which(batch);
  std::vector<int32_t> out(batch);
  for (int done = 0; done < draws; done += batch) {
    const int n = std::min(batch, draws - done);
    for (int r = 0; r < n; r++) {
      which[r] = (int)rng.below(baseRows);
      std::copy(base[which[r]].begin(), base[which[r]].end(), l.begin() + (size_t)r * vocab);
      ps[r] = random_params(rng);
    }
    CUDA_CHECK(cudaMemcpy(dl.p, l.data(), (size_t)n * vocab * sizeof(float), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemcpy(dp.p, ps.data(), n * sizeof(tc::SamplingRow), cudaMemcpyHostToDevice));
    CUDA_CHECK(cudaMemset(dout.p, 0xff, n * sizeof(int32_t)));
    CUDA_CHECK(tc::sample_rows(dl.p, n, vocab, dp.p, dout.p, nullptr, 0));
    CUDA_CHECK(cudaMemcpy(out.data(), dout.p, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
    for (int r = 0; r < n; r++) {
      const float* row = &l[(size_t)r * vocab];
      const int want = ref_sample(row, vocab, ps[r]);
      g.draws++;
      if (out[r] == want) continue;
      g.mismatches++;
      const Diag d = diagnose(row, vocab, ps[r]);
      g.worstMargin = std::max(g.worstMargin, d.best());
      const bool explained = d.best() <= 1e-6;
      if (!explained) g.unexplained++;
      if (g.mismatches <= 5)
        std::printf("  mismatch %s: gpu %d ref %d (T %g k %d p %g minp %g seed %llu pos %d) %s margin %.3g%s\n",
                    g.name.c_str(), out[r], want, ps[r].temperature, ps[r].topK, ps[r].topP, ps[r].minP,
                    (unsigned long long)ps[r].seed, ps[r].position, d.kind(), d.best(),
                    explained ? "" : " UNEXPLAINED");
    }
  }
  g.pass = g.unexplained == 0 && g.mismatches * 1000 <= g.draws;
  if (!g.pass) g_fail = true;
  std::printf("%-5s %-28s draws %6ld mismatches %3ld unexplained %ld\n", g.pass ? "ok" : "FAIL", g.name.c_str(),
              g.draws, g.mismatches, g.unexplained);
  g_groups.push_back(g);
  return 0;
}

/** Special rows: all -inf, all NaN, +inf max, a single finite token, tiny vocab, every parameter edge. */
int check_special(Rng& rng) {
  std::vector<std::vector<float>> rows;
  const int V = 300;
  rows.push_back(std::vector<float>(V, -INFINITY));
  rows.push_back(std::vector<float>(V, NAN));
  { auto r = make_row(rng, V, Kind::Spread); r[17] = INFINITY, r[200] = INFINITY; rows.push_back(r); }
  { std::vector<float> r(V, -INFINITY); r[123] = 1.5f; rows.push_back(r); }
  { std::vector<float> r(V, 2.0f); rows.push_back(r); }  // all tied
  { auto r = make_row(rng, V, Kind::Ties); rows.push_back(r); }
  { auto r = make_row(rng, V, Kind::Spread); for (auto& x : r) x *= 40.f; rows.push_back(r); }  // underflowing weights
  std::vector<tc::SamplingRow> ps;
  for (float t : {0.0f, 0.3f, 1.0f, 2.0f})
    for (int k : {0, 1, 2, 7, 299, 300, 5000})
      for (float tp : {1.0f, 0.99f, 0.3f, 0.0001f})
        for (float mp : {0.0f, 0.5f, 0.999f})
          for (int s = 0; s < 2; s++) {
            tc::SamplingRow p{};
            p.temperature = t, p.topK = k, p.topP = tp, p.minP = mp, p.seed = rng.next(), p.position = (int)rng.below(1000) - 5;
            ps.push_back(p);
          }
  const int n = (int)(rows.size() * ps.size());
  std::vector<float> l((size_t)n * V);
  std::vector<tc::SamplingRow> pr(n);
  for (size_t a = 0; a < rows.size(); a++)
    for (size_t b = 0; b < ps.size(); b++) {
      const size_t r = a * ps.size() + b;
      std::copy(rows[a].begin(), rows[a].end(), l.begin() + r * V);
      pr[r] = ps[b];
    }
  Dev<float> dl(l.size());
  Dev<tc::SamplingRow> dp(n);
  Dev<int32_t> dout(n);
  CUDA_CHECK(cudaMemcpy(dl.p, l.data(), l.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dp.p, pr.data(), n * sizeof(tc::SamplingRow), cudaMemcpyHostToDevice));
  CUDA_CHECK(tc::sample_rows(dl.p, n, V, dp.p, dout.p, nullptr, 0));
  std::vector<int32_t> out(n);
  CUDA_CHECK(cudaMemcpy(out.data(), dout.p, n * sizeof(int32_t), cudaMemcpyDeviceToHost));
  Group g;
  g.name = "special rows/params";
  for (int r = 0; r < n; r++) {
    const int want = ref_sample(&l[(size_t)r * V], V, pr[r]);
    g.draws++;
    if (out[r] == want) continue;
    g.mismatches++;
    const Diag d = diagnose(&l[(size_t)r * V], V, pr[r]);
    const bool explained = d.best() <= 1e-6 && std::isfinite(l[(size_t)r * V + want]);
    if (!explained) g.unexplained++;
    if (g.mismatches <= 5)
      std::printf("  mismatch special row %zu: gpu %d ref %d (T %g k %d p %g minp %g) %s margin %.3g\n",
                  r / ps.size(), out[r], want, pr[r].temperature, pr[r].topK, pr[r].topP, pr[r].minP, d.kind(), d.best());
  }
  g.pass = g.unexplained == 0 && g.mismatches * 1000 <= g.draws;
  if (!g.pass) g_fail = true;
  std::printf("%-5s %-28s draws %6ld mismatches %3ld unexplained %ld\n", g.pass ? "ok" : "FAIL", g.name.c_str(),
              g.draws, g.mismatches, g.unexplained);
  g_groups.push_back(g);
  return 0;
}

int check_distribution(Rng& rng) {
  const int V = 20, N = 20000;
  std::vector<float> base(V);
  rng.fill_normal(base, 1.5f);
  std::vector<float> l((size_t)N * V);
  std::vector<tc::SamplingRow> ps(N);
  for (int r = 0; r < N; r++) {
    std::copy(base.begin(), base.end(), l.begin() + (size_t)r * V);
    ps[r] = tc::SamplingRow{1.0f, 0, 1.0f, 0.0f, 424242ull, r};
  }
  Dev<float> dl(l.size());
  Dev<tc::SamplingRow> dp(N);
  Dev<int32_t> dout(N);
  CUDA_CHECK(cudaMemcpy(dl.p, l.data(), l.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dp.p, ps.data(), N * sizeof(tc::SamplingRow), cudaMemcpyHostToDevice));
  CUDA_CHECK(tc::sample_rows(dl.p, N, V, dp.p, dout.p, nullptr, 0));
  std::vector<int32_t> out(N);
  CUDA_CHECK(cudaMemcpy(out.data(), dout.p, N * sizeof(int32_t), cudaMemcpyDeviceToHost));
  std::vector<double> freq(V, 0.0), sm(V);
  int bad = 0, diffRef = 0;
  for (int r = 0; r < N; r++) {
    if (out[r] < 0 || out[r] >= V) { bad++; continue; }
    freq[out[r]] += 1.0 / N;
    diffRef += out[r] != ref_sample(base.data(), V, ps[r]);
  }
  const double m = *std::max_element(base.begin(), base.end());
  double z = 0;
  for (int i = 0; i < V; i++) z += sm[i] = std::exp((double)base[i] - m);
  double worst = 0;
  for (int i = 0; i < V; i++) worst = std::max(worst, std::fabs(freq[i] - sm[i] / z));
  const bool ok = bad == 0 && worst <= 0.02;
  if (!ok) g_fail = true;
  g_dist = fmt("20000 draws vocab %d: max |freq - softmax| %.4f (tol 0.02), out of range %d, differ from ref %d", V,
               worst, bad, diffRef);
  std::printf("%-5s distribution: %s\n", ok ? "ok" : "FAIL", g_dist.c_str());
  return 0;
}

int bench(const char* name, tc::SamplingRow p, int rows, int vocab, Rng& rng) {
  std::vector<float> l((size_t)rows * vocab);
  rng.fill_normal(l, 3.0f);
  std::vector<tc::SamplingRow> ps(rows, p);
  for (int r = 0; r < rows; r++) ps[r].position = r;
  Dev<float> dl(l.size());
  Dev<tc::SamplingRow> dp(rows);
  Dev<int32_t> dout(rows);
  CUDA_CHECK(cudaMemcpy(dl.p, l.data(), l.size() * sizeof(float), cudaMemcpyHostToDevice));
  CUDA_CHECK(cudaMemcpy(dp.p, ps.data(), rows * sizeof(tc::SamplingRow), cudaMemcpyHostToDevice));
  std::vector<float> ms;
  CUDA_CHECK(time_events([&](int) { return tc::sample_rows(dl.p, rows, vocab, dp.p, dout.p, nullptr, 0); }, 5, 50, ms));
  g_bench.push_back({name, rows, vocab, median(ms) * 1e3});
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = arg_value(argc, argv, "--json");
  const uint64_t seed = std::strtoull(arg_value(argc, argv, "--seed", "1"), nullptr, 10);
  const bool doBench = !has_flag(argc, argv, "--no-bench");
  Rng rng(seed);
  std::printf("device: %s, seed %llu, workspace bytes (128 x 128256): %zu\n", device_name().c_str(),
              (unsigned long long)seed, tc::sample_workspace_bytes(128, 128256));

  for (Kind k : {Kind::Spread, Kind::Peaky, Kind::Ties, Kind::Masked}) {
    if (check_group(rng, 1000, k, 3000, 8)) g_fail = true;
    if (check_group(rng, 32000, k, 1500, 4)) g_fail = true;
    if (check_group(rng, 128256, k, 500, 2)) g_fail = true;
  }
  if (check_special(rng)) g_fail = true;
  if (check_distribution(rng)) g_fail = true;

  if (doBench) {
    const tc::SamplingRow greedy{0.0f, 0, 1.0f, 0.0f, 7ull, 0}, plain{1.0f, 0, 1.0f, 0.0f, 7ull, 0},
        topp{0.7f, 0, 0.9f, 0.0f, 7ull, 0}, topkp{0.7f, 40, 0.9f, 0.05f, 7ull, 0};
    for (int vocab : {32000, 128256})
      for (int rows : {1, 32, 128}) {
        if (bench("greedy", greedy, rows, vocab, rng) || bench("T1", plain, rows, vocab, rng) ||
            bench("T.7 p.9", topp, rows, vocab, rng) || bench("T.7 k40 p.9 minp.05", topkp, rows, vocab, rng))
          g_fail = true;
      }
  }

  if (json) {
    Json j;
    j.begin_obj().kv("device", device_name()).kv("seed", (long long)seed).kv("pass", !g_fail);
    j.key("groups").begin_arr();
    for (auto& g : g_groups)
      j.begin_obj().kv("name", g.name).kv("draws", (long long)g.draws).kv("mismatches", (long long)g.mismatches)
          .kv("unexplained", (long long)g.unexplained).kv("worst_margin", g.worstMargin).kv("pass", g.pass).end_obj();
    j.end_arr().kv("distribution", g_dist).key("bench").begin_arr();
    for (auto& b : g_bench)
      j.begin_obj().kv("name", b.name).kv("rows", b.rows).kv("vocab", b.vocab).kv("median_us", b.us).end_obj();
    j.end_arr().end_obj();
    if (!j.write(json)) g_fail = true;
  }
  long draws = 0, mism = 0, unexp = 0;
  for (auto& g : g_groups) draws += g.draws, mism += g.mismatches, unexp += g.unexplained;
  std::printf("\n%-22s %6s %8s %12s\n", "params", "rows", "vocab", "median_us");
  for (auto& b : g_bench) std::printf("%-22s %6d %8d %12.2f\n", b.name.c_str(), b.rows, b.vocab, b.us);
  std::printf("draws %ld, mismatches %ld (%.4f%%), unexplained %ld -> %s\n", draws, mism,
              draws ? 100.0 * mism / draws : 0.0, unexp, g_fail ? "FAIL" : "PASS");
  return g_fail ? 1 : 0;
}
