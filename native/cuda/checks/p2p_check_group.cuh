// check_allreduce's harness: every GPU of this machine as one rank of a p2p group in this process (peer pointers
// instead of CUDA IPC), and the records the checks and timings leave for the report and the JSON.
#pragma once
#include <cuda_runtime.h>

#include <algorithm>
#include <chrono>

#include <string>
#include <utility>
#include <vector>

#include "../kernels/allreduce.cuh"
#include "check_util.cuh"

namespace {

constexpr size_t kCap = (size_t)512 << 10;
bool g_failed = false;
/** check_allreduce --virtual-ranks N: every rank on GPU 0 (the kernels' logic at N ranks on a machine with fewer
 * GPUs; all of a check's kernels must then be resident at once, so the shapes are smaller, and nothing is timed). */
int g_virtualRanks = 0;
inline int rank_dev(int r) { return g_virtualRanks ? 0 : r; }
struct Bench {
  std::string name;
  int world;
  size_t bytes;
  double us;
};
std::vector<Bench> g_bench;
std::vector<std::pair<std::string, bool>> g_checks;

void report(const std::string& name, bool ok) {
  std::printf("%-60s %s\n", name.c_str(), ok ? "ok" : "FAIL");
  g_checks.push_back({name, ok});
  if (!ok) g_failed = true;
}

struct Group {
  int world = 0;
  std::vector<tpserve::cuda::P2pGroup> g;
  std::vector<uint8_t*> bufs;
  std::vector<int*> flags;  // host-mapped [err, abort] per rank
  std::vector<cudaStream_t> streams;

  int init(int n, long long timeoutNs) {
    world = n;
    g.resize(n), bufs.resize(n), flags.resize(n), streams.resize(n);
    for (int r = 0; r < n; r++) {
      CUDA_CHECK(cudaSetDevice(rank_dev(r)));
      for (int j = 0; j < n; j++) {
        if (rank_dev(j) == rank_dev(r)) continue;
        const cudaError_t e = cudaDeviceEnablePeerAccess(rank_dev(j), 0);
        if (e != cudaSuccess && e != cudaErrorPeerAccessAlreadyEnabled) CUDA_CHECK(e);
        cudaGetLastError();
      }
      CUDA_CHECK(cudaMalloc(&bufs[r], tpserve::cuda::p2p_buffer_bytes(kCap, n)));
      CUDA_CHECK(cudaMemset(bufs[r], 0xFF, tpserve::cuda::p2p_buffer_bytes(kCap, n)));
      CUDA_CHECK(cudaMalloc(&g[r].state, sizeof(tpserve::cuda::P2pState)));
      CUDA_CHECK(cudaMemset(g[r].state, 0, sizeof(tpserve::cuda::P2pState)));
      CUDA_CHECK(cudaHostAlloc(&flags[r], 2 * sizeof(int), cudaHostAllocMapped | cudaHostAllocPortable));
      flags[r][0] = flags[r][1] = 0;
      CUDA_CHECK(cudaHostGetDevicePointer((void**)&g[r].err, flags[r], 0));
      int* ab = nullptr;
      CUDA_CHECK(cudaHostGetDevicePointer((void**)&ab, flags[r] + 1, 0));
      g[r].abortFlag = ab;
      // A blocking stream: the checks fill their inputs with cudaMemcpy from pageable memory, which may return before
      // the copy lands; the legacy stream finishes it, and only a blocking stream's kernels wait for that (with
      // non-blocking streams the all-reduce of 512K floats once read half-copied inputs on 2x H200, session 23).
      CUDA_CHECK(cudaStreamCreate(&streams[r]));
      g[r].rank = r, g[r].world = n, g[r].cap = kCap, g[r].timeoutNs = timeoutNs;
    }
    for (int r = 0; r < n; r++)
      for (int j = 0; j < n; j++) g[r].base[j] = bufs[j];
    return 0;
  }
  void destroy() {
    for (int r = 0; r < world; r++) {
      cudaSetDevice(rank_dev(r));
      cudaStreamSynchronize(streams[r]);
      cudaFree(bufs[r]), cudaFree(g[r].state), cudaFreeHost(flags[r]), cudaStreamDestroy(streams[r]);
    }
  }
  bool syncAll() {
    for (int r = 0; r < world; r++) {
      cudaSetDevice(rank_dev(r));
      CUDA_CHECK_BOOL(cudaStreamSynchronize(streams[r]));
    }
    return true;
  }

  /**
   * One CUDA graph per rank of what enqueue(r) puts on rank r's stream (false from enqueue, or a capture error: the
   * graphs made so far are destroyed and ex is emptied).
   */
  template <class Enqueue>
  bool capture(Enqueue&& enqueue, std::vector<cudaGraphExec_t>& ex) {
    ex.assign(world, nullptr);
    for (int r = 0; r < world; r++) {
      cudaSetDevice(rank_dev(r));
      cudaGraph_t g = nullptr;
      bool ok = cudaStreamBeginCapture(streams[r], cudaStreamCaptureModeThreadLocal) == cudaSuccess;
      if (ok) ok = enqueue(r);
      ok = cudaStreamEndCapture(streams[r], &g) == cudaSuccess && ok;
      ok = ok && cudaGraphInstantiate(&ex[r], g, 0) == cudaSuccess;
      if (g) cudaGraphDestroy(g);
      if (!ok) {
        destroyGraphs(ex);
        return false;
      }
    }
    return true;
  }

  void destroyGraphs(std::vector<cudaGraphExec_t>& ex) {
    for (int r = 0; r < (int)ex.size(); r++)
      if (ex[r]) cudaSetDevice(rank_dev(r)), cudaGraphExecDestroy(ex[r]);
    ex.clear();
  }

  /**
   * Launches every rank's graph together warmup + reps times (the host waits for all after each); the median of the
   * last reps in microseconds, divided by `per` (the calls or layers in a graph). -1 when a synchronisation failed.
   */
  double replayMedianUs(const std::vector<cudaGraphExec_t>& ex, int warmup, int reps, double per) {
    std::vector<double> t;
    for (int rep = 0; rep < warmup + reps; rep++) {
      if (!syncAll()) return -1;
      const auto t0 = std::chrono::steady_clock::now();
      for (int r = 0; r < world; r++) cudaSetDevice(rank_dev(r)), cudaGraphLaunch(ex[r], streams[r]);
      if (!syncAll()) return -1;
      const double us = std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t0).count();
      if (rep >= warmup) t.push_back(us / per);
    }
    std::sort(t.begin(), t.end());
    return t[t.size() / 2];
  }
};

}  // namespace
