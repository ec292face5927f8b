// check_allreduce's latency floor of the push protocol (benchmark only, no check): how long one store to a peer
// GPU takes to be seen there, and what an exchange of the decode GEMV's form costs when both GPUs arrive together.
//  - ping-pong: rank 0 stores k into rank 1's word and waits for k in its own; rank 1 answers. Half the time of a
//    round is the one-way latency: the least an exchange can cost (docs/tensor-parallel.md).
//  - exchange: `blocks` blocks of 16 threads on each GPU (the engine's O and down at TP = 2: 256 tiles of 16 rows)
//    each store their 16 values into the peer's words and wait for the peer's 16, `iters` times in one kernel.
// Values only grow, so no word is reset: a reader waiting for k takes k or more (the peer can be a round ahead).
// Store/load forms: 0 st.volatile / ld.volatile (the engine's), 1 relaxed.sys, 2 release.sys / acquire.sys.
#pragma once
#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <string>
#include <thread>
#include <vector>

#include "../kernels/ptx.cuh"
#include "p2p_check_group.cuh"

namespace pingpong {

template <int MODE>
__device__ __forceinline__ void pp_store(float* p, float v) {
  if constexpr (MODE == 0) asm volatile("st.volatile.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
  else if constexpr (MODE == 1) asm volatile("st.relaxed.sys.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
  else asm volatile("st.release.sys.global.f32 [%0], %1;" ::"l"(p), "f"(v) : "memory");
}
template <int MODE>
__device__ __forceinline__ float pp_load(const float* p) {
  float v;
  if constexpr (MODE == 0) asm volatile("ld.volatile.global.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  else if constexpr (MODE == 1) asm volatile("ld.relaxed.sys.global.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  else asm volatile("ld.acquire.sys.global.f32 %0, [%1];" : "=f"(v) : "l"(p) : "memory");
  return v;
}

/** Waits until *p >= v (the peer may already be a round ahead; bounded: about 2 s, then gives up and marks *bad). */
template <int MODE>
__device__ __forceinline__ void pp_wait(const float* p, float v, int* bad) {
  const long long t0 = tpserve::cuda::global_ns();
  for (int k = 0; pp_load<MODE>(p) < v; k++)
    if ((k & 1023) == 1023 && tpserve::cuda::global_ns() - t0 > 2'000'000'000LL) {
      *bad = 1;
      return;
    }
}

/** One block; threads < lanes take part. Round 0 is not timed (the peer's kernel may start later). */
template <int MODE>
__global__ void pp_kernel(float* mine, float* peer, int iters, int role, int lanes, long long* ns, int* bad) {
  const int t = threadIdx.x;
  if (t >= lanes) return;
  long long t0 = 0;
  for (int k = 0; k <= iters; k++) {
    const float v = (float)(k + 1);
    if (role == 0) {
      pp_store<MODE>(peer + t, v);
      pp_wait<MODE>(mine + t, v, bad);
    } else {
      pp_wait<MODE>(mine + t, v, bad);
      pp_store<MODE>(peer + t, v);
    }
    __syncwarp((unsigned)((1ull << lanes) - 1));
    if (k == 0) t0 = tpserve::cuda::global_ns();
  }
  if (t == 0) ns[0] = tpserve::cuda::global_ns() - t0;
}

// POLL 0: each thread polls its own word; 1: the same with a 64 ns sleep after each miss; 2: lane 0 polls all 16
// words (four 16-byte loads), the others wait for it.
template <int MODE, int POLL>
__global__ void exchange_kernel(float* mine, float* peer, int iters, long long* ns, int* bad) {
  const int i = blockIdx.x * 16 + threadIdx.x;
  long long t0 = 0;
  for (int k = 0; k <= iters; k++) {
    if (*reinterpret_cast<volatile int*>(bad)) break;  // one failed wait is enough to report
    const float v = (float)(k + 1);
    pp_store<MODE>(peer + i, v);
    if constexpr (POLL == 0) {
      pp_wait<MODE>(mine + i, v, bad);
    } else if constexpr (POLL == 1) {
      const long long w0 = tpserve::cuda::global_ns();
      for (int n = 0; pp_load<MODE>(mine + i) < v; n++) {
        __nanosleep(64);
        if ((n & 255) == 255 && tpserve::cuda::global_ns() - w0 > 2'000'000'000LL) {
          *bad = 1;
          break;
        }
      }
    } else if (threadIdx.x == 0) {
      const float* base = mine + blockIdx.x * 16;
      const long long w0 = tpserve::cuda::global_ns();
      for (int n = 0;; n++) {
        bool all = true;
#pragma unroll
        for (int q = 0; q < 4; q++) {
          float4 f;
          asm volatile("ld.volatile.global.v4.f32 {%0, %1, %2, %3}, [%4];"
                       : "=f"(f.x), "=f"(f.y), "=f"(f.z), "=f"(f.w)
                       : "l"(base + 4 * q)
                       : "memory");
          all = all && f.x >= v && f.y >= v && f.z >= v && f.w >= v;
        }
        if (all) break;
        if ((n & 255) == 255 && tpserve::cuda::global_ns() - w0 > 2'000'000'000LL) {
          *bad = 1;
          break;
        }
      }
    }
    __syncwarp(0xffffu);
    if (k == 0) t0 = tpserve::cuda::global_ns();
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) ns[0] = tpserve::cuda::global_ns() - t0;
}

// The engine's exchanges come 2-15 us apart, not back to back: each round here first waits gapNs (both GPUs idle on
// the link), and with wakeNs > 0 block 0 stores one word into the peer's spare word wakeNs before the round's stores.
// Microseconds a round are reported net of the gap.
__global__ void exchange_gap_kernel(float* mine, float* peer, int iters, long long gapNs, long long wakeNs,
                                    long long* ns, int* bad) {
  const int i = blockIdx.x * 16 + threadIdx.x;
  const int spare = gridDim.x * 16;  // the word after the blocks' words
  long long total = 0;
  for (int k = 0; k <= iters; k++) {
    if (*reinterpret_cast<volatile int*>(bad)) break;
    const long long g0 = tpserve::cuda::global_ns();
    if (wakeNs > 0) {
      while (tpserve::cuda::global_ns() - g0 < gapNs - wakeNs) {
      }
      if (i == 0) pp_store<0>(peer + spare, (float)k);
    }
    while (tpserve::cuda::global_ns() - g0 < gapNs) {
    }
    const long long t0 = tpserve::cuda::global_ns();
    const float v = (float)(k + 1);
    pp_store<0>(peer + i, v);
    pp_wait<0>(mine + i, v, bad);
    __syncwarp(0xffffu);
    if (k > 0) total += tpserve::cuda::global_ns() - t0;
  }
  if (blockIdx.x == 0 && threadIdx.x == 0) ns[0] = total;
}

}  // namespace pingpong

namespace {
using pingpong::exchange_gap_kernel;
using pingpong::exchange_kernel;
using pingpong::pp_kernel;

/** Runs both ranks' kernels (GPUs 0 and 1) and returns microseconds per round on rank 0; -1 on a failed wait. */
template <class Launch>
double pp_run(Group& G, int words, Launch&& launch) {
  float* buf[2];
  long long* ns[2];
  int* bad[2];
  for (int r = 0; r < 2; r++) {
    cudaSetDevice(r);
    cudaMalloc(&buf[r], words * sizeof(float)), cudaMemset(buf[r], 0, words * sizeof(float));
    cudaMalloc(&ns[r], sizeof(long long)), cudaMalloc(&bad[r], sizeof(int)), cudaMemset(bad[r], 0, sizeof(int));
  }
  G.syncAll();
  for (int r = 0; r < 2; r++) cudaDeviceSynchronize();
  for (int r = 0; r < 2; r++) cudaSetDevice(r), launch(r, buf[r], buf[1 - r], ns[r], bad[r], G.streams[r]);
  G.syncAll();
  long long t = 0;
  int b0 = 0, b1 = 0;
  cudaSetDevice(0), cudaMemcpy(&t, ns[0], sizeof t, cudaMemcpyDeviceToHost);
  cudaMemcpy(&b0, bad[0], sizeof b0, cudaMemcpyDeviceToHost);
  cudaSetDevice(1), cudaMemcpy(&b1, bad[1], sizeof b1, cudaMemcpyDeviceToHost);
  for (int r = 0; r < 2; r++) cudaSetDevice(r), cudaFree(buf[r]), cudaFree(ns[r]), cudaFree(bad[r]);
  return b0 || b1 ? -1.0 : (double)t / 1000.0;
}

template <int MODE, int POLL>
void exchange_rounds(Group& G, const char* form) {
  constexpr int xiters = 500;
  static const char* polls[] = {"", "_sleep64", "_lane0"};
  for (int blocks : {1, 16, 64, 256}) {
    const double us = pp_run(G, blocks * 16, [&](int, float* mine, float* peer, long long* ns, int* bad, cudaStream_t s) {
      exchange_kernel<MODE, POLL><<<blocks, 16, 0, s>>>(mine, peer, xiters, ns, bad);
    });
    const double per = us < 0 ? -1 : us / xiters;
    std::printf("p2p exchange, both sides at once (%s%s, %3d blocks x 16 words): %6.3f us a round\n", form, polls[POLL],
                blocks, per);
    g_bench.push_back({std::string("p2p_exchange_round_") + form + polls[POLL] + "_" + std::to_string(blocks), 2,
                       (size_t)blocks * 64, per});
  }
}

template <int MODE>
void pingpong_mode(Group& G, const char* form) {
  constexpr int iters = 2000, xiters = 500;
  for (int lanes : {1, 16}) {
    const double us = pp_run(G, 32, [&](int r, float* mine, float* peer, long long* ns, int* bad, cudaStream_t s) {
      pp_kernel<MODE><<<1, 32, 0, s>>>(mine, peer, iters, r, lanes, ns, bad);
    });
    const double oneway = us < 0 ? -1 : us / iters / 2;
    std::printf("p2p one-way latency (%s, %2d words): %6.3f us\n", form, lanes, oneway);
    g_bench.push_back({std::string("p2p_oneway_") + form + "_" + std::to_string(lanes), 2, (size_t)lanes * 4, oneway});
  }
  exchange_rounds<MODE, 0>(G, form);
}

/** Rounds of 256 blocks with the link idle gapUs before each, with and without a wake-up store wakeUs before. */
void exchange_gaps(Group& G) {
  constexpr int xiters = 300;
  for (int gapUs : {0, 2, 5, 10, 20}) {
    for (int wakeUs : {0, 1, 2}) {
      if (wakeUs >= gapUs && wakeUs > 0) continue;
      const double us = pp_run(G, 256 * 16 + 4, [&](int, float* mine, float* peer, long long* ns, int* bad, cudaStream_t s) {
        exchange_gap_kernel<<<256, 16, 0, s>>>(mine, peer, xiters, gapUs * 1000LL, wakeUs * 1000LL, ns, bad);
      });
      const double per = us < 0 ? -1 : us / xiters;
      std::printf("p2p exchange after %2d us idle, wake-up store %d us before: %6.3f us a round\n", gapUs, wakeUs, per);
      g_bench.push_back({"p2p_exchange_round_idle" + std::to_string(gapUs) + "_wake" + std::to_string(wakeUs), 2,
                         256 * 64, per});
    }
  }
}

/** The latency floor of an exchange between GPUs 0 and 1, in each store/load form. */
void pingpong_bench(Group& G) {
  exchange_gaps(G);
  exchange_rounds<0, 1>(G, "volatile");
  exchange_rounds<0, 2>(G, "volatile");
  pingpong_mode<0>(G, "volatile");
  pingpong_mode<1>(G, "relaxed_sys");
  pingpong_mode<2>(G, "release_acquire");
}

/** Waits up to 60 s for `path` to exist. */
bool wait_file(const std::string& path) {
  for (int i = 0; i < 6000; i++) {
    if (FILE* f = std::fopen(path.c_str(), "rb")) {
      std::fclose(f);
      return true;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  return false;
}

void touch(const std::string& path, const void* data = nullptr, size_t n = 0) {
  const std::string tmp = path + ".tmp";
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (!f) return;
  if (n) std::fwrite(data, 1, n, f);
  std::fclose(f);
  std::rename(tmp.c_str(), path.c_str());
}

/**
 * The exchange of pingpong_bench between two processes, the peer buffer mapped with CUDA IPC as the worker maps it
 * (check_allreduce --ipc-role 0|1 --ipc-dir DIR, both started together; each uses GPU `role`). Prints us a round.
 */
int ipc_exchange(int role, const std::string& dir) {
  constexpr int xiters = 500;
  const int peerDev = 1 - role;
  CUDA_CHECK(cudaSetDevice(role));
  const cudaError_t pe = cudaDeviceEnablePeerAccess(peerDev, 0);
  if (pe != cudaSuccess && pe != cudaErrorPeerAccessAlreadyEnabled) CUDA_CHECK(pe);
  cudaGetLastError();
  const int blocksList[2] = {1, 256};
  const size_t words = 2 * (256 * 16 + 16);
  float* buf = nullptr;
  long long* ns = nullptr;
  int* bad = nullptr;
  CUDA_CHECK(cudaMalloc(&buf, words * sizeof(float)));
  CUDA_CHECK(cudaMemset(buf, 0, words * sizeof(float)));
  CUDA_CHECK(cudaMalloc(&ns, sizeof(long long)));
  CUDA_CHECK(cudaMalloc(&bad, sizeof(int)));
  CUDA_CHECK(cudaDeviceSynchronize());
  cudaIpcMemHandle_t h{};
  CUDA_CHECK(cudaIpcGetMemHandle(&h, buf));
  touch(dir + "/h" + std::to_string(role), &h, sizeof h);
  const std::string other = dir + "/h" + std::to_string(peerDev);
  if (!wait_file(other)) return std::printf("ipc: no handle from the other process\n"), 1;
  cudaIpcMemHandle_t oh{};
  FILE* f = std::fopen(other.c_str(), "rb");
  if (!f || std::fread(&oh, sizeof oh, 1, f) != 1) return std::printf("ipc: bad handle file\n"), 1;
  std::fclose(f);
  void* peer = nullptr;
  CUDA_CHECK(cudaIpcOpenMemHandle(&peer, oh, cudaIpcMemLazyEnablePeerAccess));
  for (int c = 0; c < 2; c++) {
    const int blocks = blocksList[c];
    float* mine = buf + c * (256 * 16 + 16);
    float* theirs = static_cast<float*>(peer) + c * (256 * 16 + 16);
    CUDA_CHECK(cudaMemset(bad, 0, sizeof(int)));
    CUDA_CHECK(cudaDeviceSynchronize());
    touch(dir + "/go" + std::to_string(c) + "-" + std::to_string(role));
    if (!wait_file(dir + "/go" + std::to_string(c) + "-" + std::to_string(peerDev))) return 1;
    exchange_kernel<0, 0><<<blocks, 16>>>(mine, theirs, xiters, ns, bad);
    CUDA_CHECK(cudaDeviceSynchronize());
    long long t = 0;
    int b = 0;
    cudaMemcpy(&t, ns, sizeof t, cudaMemcpyDeviceToHost);
    cudaMemcpy(&b, bad, sizeof b, cudaMemcpyDeviceToHost);
    std::printf("ipc rank %d: p2p exchange over a CUDA IPC mapping, two processes (volatile, %3d blocks x 16 words): "
                "%6.3f us a round%s\n", role, blocks, b ? -1.0 : (double)t / 1000.0 / xiters, b ? " (a wait failed)" : "");
  }
  cudaIpcCloseMemHandle(peer);
  cudaFree(buf), cudaFree(ns), cudaFree(bad);
  return 0;
}

}  // namespace
