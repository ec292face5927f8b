#include "kv_sizing.h"

#include <algorithm>
#include <cstdio>

#include "../src/errors.h"
#include "kernels/kernels.cuh"

namespace tpserve {
namespace {

std::string gib(double bytes) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.2f", bytes / (1 << 30));
  return buf;
}

}  // namespace

size_t kvPageBytes(const ModelShape& s, int blockSize) {
  const size_t kv = (size_t)2 * s.layers * blockSize * s.kvHeads * s.headDim * sizeof(cuda::kv_t);
  return kv + (size_t)blockSize * s.headDim * sizeof(float);  // cos and sin: headDim/2 floats each per position
}

size_t kvReserveBytes(const KvBudget& b, size_t poolTokens) {
  const ModelShape& s = b.s;
  const size_t T = b.maxBatchTokens;
  const size_t longest = b.maxContext > 0 ? std::min(poolTokens, (size_t)b.maxContext) : poolTokens;
  const size_t ctx = longest + (size_t)16 * b.blockSize;
  const int ctxArg = (int)std::min<size_t>(ctx, 0x7fffffff);
  size_t r = 2 * cuda::attention_workspace_bytes((int)T, s.heads, s.headDim, ctxArg);
  if (b.tpGather) r += 2 * T * (size_t)b.vocab * sizeof(float);
  const size_t maxBlocks = (ctx + b.blockSize - 1) / b.blockSize;
  r += 2 * (6 * T + 2 + T * maxBlocks) * sizeof(int32_t);
  r += 2 * (T * sizeof(cuda::SamplingRow) + cuda::sample_workspace_bytes((int)T, b.vocab));
  return r + ((size_t)512 << 20);
}

int kvPagesFromUtilization(const KvBudget& b, double frac, size_t freeB, size_t totalB, const std::string& device,
                           KvSizing* sizing) {
  const size_t used = totalB - freeB, perPage = kvPageBytes(b.s, b.blockSize);
  const double cap = frac * (double)totalB;
  auto pagesFor = [&](size_t reserve) -> long long {
    const double room = cap - (double)used - (double)reserve;
    return room <= 0 ? 0 : (long long)(room / (double)perPage);
  };
  // The reserve grows with the pool (attention workspace): size with the reserve of a first guess, which is
  // larger than the final pool's, so the result is conservative.
  // At most 1M pages (16M tokens at block size 16), and slots (page x blockSize + offset) within int32.
  const long long maxPages = std::min(1LL << 20, 0x7fffffffLL / b.blockSize);
  long long pages = std::min(pagesFor((size_t)512 << 20), maxPages);
  const size_t reserve = kvReserveBytes(b, pages > 1 ? (size_t)(pages - 1) * b.blockSize : 0);
  pages = std::min(pagesFor(reserve), maxPages);
  sizing->fraction = frac, sizing->totalBytes = totalB, sizing->usedBytes = used;
  sizing->reserveBytes = reserve, sizing->pageBytes = perPage;
  if (pages < 2) {
    char f[32];
    std::snprintf(f, sizeof f, "%g", frac);
    fail("NATIVE_OOM", std::string("gpuMemoryUtilization ") + f + " leaves no room for a KV pool of 2 pages on " +
                           device + ": " + std::to_string(perPage) + " bytes per page; " + gib((double)freeB) +
                           " GiB free of " + gib((double)totalB) + " GiB, " + gib((double)used) +
                           " GiB in use (weights, workspaces and other processes), the cap " + gib(cap) + " GiB, " +
                           gib((double)reserve) +
                           " GiB held back for the forward pass's workspaces. Raise gpuMemoryUtilization, free "
                           "the device, lower maxBatchTokens, or give numPages");
  }
  return (int)pages;
}

}  // namespace tpserve
