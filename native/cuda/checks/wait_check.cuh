// check_allreduce's cases for a wait that never ends on its own: a missing rank gives err after the group's
// timeout, and the abort flag in device memory (GpuComm's form, set by a copy on a stream of its own) stops the wait
// at once.
#pragma once
#include <chrono>
#include <cstdio>
#include <thread>

#include "../kernels/allreduce.cuh"
#include "check_util.cuh"
#include "p2p_check_group.cuh"

namespace {

/** Only rank 0 calls: its wait must give up after the timeout and set err (and not hang). */
bool check_timeout(Group& G) {
  float* d;
  cudaSetDevice(0);
  cudaMalloc(&d, 4096 * sizeof(float));
  const auto t0 = std::chrono::steady_clock::now();
  tpserve::cuda::p2p_all_reduce(d, 4096, G.g[0], G.streams[0]);
  const bool synced = cudaStreamSynchronize(G.streams[0]) == cudaSuccess;
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  const bool ok = synced && G.flags[0][0] == 1 && ms < 2000;
  cudaFree(d);
  char msg[128];
  std::snprintf(msg, sizeof msg, "timeout: a missing rank gives err after %.0f ms (bound 100 ms)", ms);
  report(msg, ok);
  return ok;
}

/**
 * Rank 0 alone with a 10 s timeout, its abort flag in device memory as GpuComm has it: the host sets the flag with a
 * copy on a non-blocking stream of its own (GpuComm::failGroup), and the waiting kernel must stop at once, not at the
 * timeout, with err set.
 */
bool check_abort_device() {
  Group A;
  if (A.init(2, 10'000'000'000LL)) return false;
  cudaSetDevice(0);
  int *flag = nullptr, *one = nullptr;
  float* d = nullptr;
  cudaStream_t side = nullptr;
  bool ok = cudaMalloc(&flag, sizeof(int)) == cudaSuccess && cudaMemset(flag, 0, sizeof(int)) == cudaSuccess &&
            cudaMallocHost(&one, sizeof(int)) == cudaSuccess && cudaMalloc(&d, 4096 * sizeof(float)) == cudaSuccess &&
            cudaStreamCreateWithFlags(&side, cudaStreamNonBlocking) == cudaSuccess &&
            cudaDeviceSynchronize() == cudaSuccess;
  double ms = -1;
  bool waiting = false;
  if (ok) {
    *one = 1;
    tpserve::cuda::P2pGroup g = A.g[0];
    g.abortFlag = flag;
    const auto t0 = std::chrono::steady_clock::now();
    ok = tpserve::cuda::p2p_all_reduce(d, 4096, g, A.streams[0]) == cudaSuccess;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    waiting = cudaStreamQuery(A.streams[0]) == cudaErrorNotReady;  // spinning on rank 1, which never comes
    ok = ok && cudaMemcpyAsync(flag, one, sizeof(int), cudaMemcpyHostToDevice, side) == cudaSuccess;
    ok = ok && cudaStreamSynchronize(A.streams[0]) == cudaSuccess;
    ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ok = ok && waiting && A.flags[0][0] == 1 && ms < 1000;
  }
  if (side) cudaStreamDestroy(side);
  if (d) cudaFree(d);
  if (one) cudaFreeHost(one);
  if (flag) cudaFree(flag);
  A.destroy();
  char msg[160];
  std::snprintf(msg, sizeof msg, "abort: a device flag set by a copy on another stream stops the wait after %.0f ms "
                "(was waiting at 50 ms: %s; timeout 10 s, bound 1 s)", ms, waiting ? "yes" : "no");
  report(msg, ok);
  return ok;
}

}  // namespace
