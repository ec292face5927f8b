// TPSERVE_ABLATE (benchmarks only: the results are wrong): kernels the CUDA model leaves out of every forward pass,
// so that the step time without them tells what they cost inside the CUDA graph (bench/gpu-step.ts; docs/gpu-runs.md,
// run 16). The variable is a list (',' or '+') of norm, attn, qkv, o, gateup, down, head (the LM head).
#pragma once
#include <algorithm>
#include <cstdlib>
#include <string>
#include <utility>

namespace tpserve {

enum Ablate : unsigned {
  kAblNorm = 1,
  kAblAttn = 2,
  kAblQkv = 4,
  kAblO = 8,
  kAblGateUp = 16,
  kAblDown = 32,
  kAblHead = 64
};

/** The kernels TPSERVE_ABLATE names (0 when unset). */
inline unsigned ablateFromEnv() {
  const char* e = std::getenv("TPSERVE_ABLATE");
  if (!e) return 0;
  const std::string list = e;
  const std::pair<const char*, unsigned> names[] = {{"norm", kAblNorm}, {"attn", kAblAttn},     {"qkv", kAblQkv},
                                                    {"o", kAblO},       {"gateup", kAblGateUp}, {"down", kAblDown},
                                                    {"head", kAblHead}};
  unsigned m = 0;
  for (size_t i = 0; i <= list.size();) {
    const size_t j = std::min(list.find_first_of(",+", i), list.size());
    for (const auto& n : names)
      if (list.compare(i, j - i, n.first) == 0) m |= n.second;
    i = j + 1;
  }
  return m;
}

}  // namespace tpserve
