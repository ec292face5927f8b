// What a phase boundary of the decode step costs, two ways (docs/gpu.md, "What would close the batch-1 gap"):
//  - a kernel boundary: a chain of kernels with programmatic dependent launch in one CUDA graph, as the decode
//    step is now (each waits for the previous one with griddepcontrol.wait);
//  - a grid barrier inside one persistent kernel (every block resident: cooperative launch), as a persistent decode
//    kernel would have, three ways: an arrival counter reset by the last block and a generation word, with
//    __threadfence (as cooperative groups); one counter that only grows, red.release / ld.acquire, no reset; one
//    flag per block (st.release its phase, every block polls all flags with ld.acquire, no atomics).
// Each phase has the all-to-all dependency of a decode layer: every block writes its value, and after the boundary
// every block reads all of them (through L2) and checks them, so a boundary that lets a phase start early shows as
// a mismatch. Grids: one block per SM and the most blocks per SM the 256-thread kernel allows.
//   check_barrier [--json out.json] [--phases N]
#include <cuda_runtime.h>

#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "check_util.cuh"
#include "kernels/pdl.cuh"

using namespace tpserve::check;
namespace tc = tpserve::cuda;

namespace {

constexpr int kThreads = 256;

struct Shared {
  int* vals;            // [2][blocks]: phase p writes vals[p % 2]
  unsigned* count;      // barrier: blocks arrived in this generation
  unsigned* gen;        // barrier: generation
  unsigned* flags;      // flag barrier: the phase each block has finished
  unsigned* mismatch;   // values that were not the previous phase's
  int* timedOut;        // a barrier wait that passed 1 s
};

/** Every block's value of phase p - 1 must be p (written in the previous phase, before the boundary). */
__device__ __forceinline__ void read_all(const Shared& s, int p, int blocks) {
  if (p == 0) return;
  const int* prev = s.vals + ((p - 1) & 1) * blocks;
  unsigned bad = 0;
  for (int b = threadIdx.x; b < blocks; b += blockDim.x) bad += __ldcg(prev + b) != p;
  if (bad) atomicAdd(s.mismatch, bad);
}

__device__ __forceinline__ void write_mine(const Shared& s, int p, int blocks) {
  if (threadIdx.x == 0) s.vals[(p & 1) * blocks + blockIdx.x] = p + 1;
}

__global__ void __launch_bounds__(kThreads) phase_kernel(Shared s, int p) {
  tc::pdl_trigger();
  tc::pdl_wait();
  read_all(s, p, gridDim.x);
  __syncthreads();  // every read of this block is done before its write of the same slot two phases on
  write_mine(s, p, gridDim.x);
}

/** Arrive, then wait for the generation to move; the last block to arrive resets the count and moves it. */
__device__ __forceinline__ void grid_barrier(const Shared& s) {
  __syncthreads();
  if (threadIdx.x == 0) {
    const unsigned g = *reinterpret_cast<volatile unsigned*>(s.gen);
    __threadfence();
    if (atomicAdd(s.count, 1u) == gridDim.x - 1) {
      *reinterpret_cast<volatile unsigned*>(s.count) = 0u;
      __threadfence();
      atomicAdd(s.gen, 1u);
    } else {
      const long long t0 = global_ns();
      for (int k = 0; *reinterpret_cast<volatile unsigned*>(s.gen) == g; k++) {
        if ((k & 1023) == 1023 && global_ns() - t0 > 1000000000LL) {
          atomicExch(s.timedOut, 1);
          break;
        }
      }
    }
    __threadfence();
  }
  __syncthreads();
}

/** One counter that only grows: phase p is over when it reaches (p + 1) x blocks. */
__device__ __forceinline__ void counter_barrier(const Shared& s, int p) {
  __syncthreads();
  if (threadIdx.x == 0) {
    asm volatile("red.release.gpu.global.add.u32 [%0], 1;" ::"l"(s.count) : "memory");
    wait_at_least(s.count, (unsigned)(p + 1) * gridDim.x, s.timedOut);
  }
  __syncthreads();
}

/** A flag per block: each publishes its phase, then threads poll one block's flag each. */
__device__ __forceinline__ void flag_barrier(const Shared& s, int p) {
  __syncthreads();
  if (threadIdx.x == 0)
    asm volatile("st.release.gpu.global.u32 [%0], %1;" ::"l"(s.flags + blockIdx.x), "r"((unsigned)p + 1) : "memory");
  for (unsigned b = threadIdx.x; b < gridDim.x; b += blockDim.x) wait_at_least(s.flags + b, (unsigned)p + 1, s.timedOut);
  __syncthreads();
}

template <int Kind>
__global__ void __launch_bounds__(kThreads) persistent_kernel(Shared s, int phases) {
  for (int p = 0; p < phases; p++) {
    read_all(s, p, gridDim.x);
    __syncthreads();
    write_mine(s, p, gridDim.x);
    if (Kind == 0) grid_barrier(s);
    else if (Kind == 1) counter_barrier(s, p);
    else flag_barrier(s, p);
  }
}

struct Result {
  std::string how;
  int blocks;
  double usPerPhase;
  unsigned mismatch;
  bool timedOut;
};

/**
 * Runs `launch` (which enqueues every phase on st) 4 times, each after resetting the shared words on st: the best
 * of the last 3 times in `r.usPerPhase`, and every run's mismatches and timeouts summed into r.
 */
template <class Launch>
int time_runs(Shared& s, int phases, cudaStream_t st, Launch&& launch, Result& r) {
  cudaEvent_t a, b;
  CUDA_CHECK(cudaEventCreate(&a));
  CUDA_CHECK(cudaEventCreate(&b));
  float best = 1e30f;
  for (int rep = 0; rep < 4; rep++) {
    CUDA_CHECK(cudaMemsetAsync(s.vals, 0, 2 * r.blocks * sizeof(int), st));
    CUDA_CHECK(cudaMemsetAsync(s.count, 0, sizeof(unsigned), st));
    CUDA_CHECK(cudaMemsetAsync(s.gen, 0, sizeof(unsigned), st));
    CUDA_CHECK(cudaMemsetAsync(s.flags, 0, r.blocks * sizeof(unsigned), st));
    CUDA_CHECK(cudaMemsetAsync(s.mismatch, 0, sizeof(unsigned), st));
    CUDA_CHECK(cudaMemsetAsync(s.timedOut, 0, sizeof(int), st));
    CUDA_CHECK(cudaEventRecord(a, st));
    CUDA_CHECK(launch());
    CUDA_CHECK(cudaEventRecord(b, st));
    CUDA_CHECK(cudaEventSynchronize(b));
    float ms = 0.f;
    unsigned bad = 0;
    int to = 0;
    CUDA_CHECK(cudaEventElapsedTime(&ms, a, b));
    CUDA_CHECK(cudaMemcpy(&bad, s.mismatch, sizeof(unsigned), cudaMemcpyDeviceToHost));
    CUDA_CHECK(cudaMemcpy(&to, s.timedOut, sizeof(int), cudaMemcpyDeviceToHost));
    r.mismatch += bad, r.timedOut = r.timedOut || to != 0;
    if (rep > 0) best = std::min(best, ms);
  }
  cudaEventDestroy(a), cudaEventDestroy(b);
  r.usPerPhase = 1000.0 * best / phases;
  std::printf("%-5s %-40s blocks %4d  %7.3f us per phase  mismatches %u%s\n",
              r.mismatch || r.timedOut ? "FAIL" : "ok", r.how.c_str(), r.blocks, r.usPerPhase, r.mismatch,
              r.timedOut ? "  (a barrier wait timed out)" : "");
  return 0;
}

/** `phases` kernels in one graph, each waiting for the one before (programmatic launch as the decode step). */
int run_chain(Shared& s, int blocks, int phases, cudaStream_t st, std::vector<Result>& out) {
  cudaGraph_t g;
  cudaGraphExec_t ex;
  CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
  for (int p = 0; p < phases; p++) CUDA_CHECK(tc::launch_pdl(phase_kernel, dim3(blocks), dim3(kThreads), 0, st, s, p));
  CUDA_CHECK(cudaStreamEndCapture(st, &g));
  CUDA_CHECK(cudaGraphInstantiate(&ex, g, 0));
  CUDA_CHECK(cudaGraphDestroy(g));
  Result r{std::string("kernel boundary (graph, PDL ") + (tc::pdl_enabled() ? "on)" : "off)"), blocks, 0, 0, false};
  const int rc = time_runs(s, phases, st, [&] { return cudaGraphLaunch(ex, st); }, r);
  CUDA_CHECK(cudaGraphExecDestroy(ex));
  if (rc) return rc;
  out.push_back(r);
  return 0;
}

/** One cooperative launch, `phases` grid barriers of one kind. */
template <int Kind>
int run_persistent(Shared& s, int blocks, int phases, cudaStream_t st, std::vector<Result>& out) {
  static const char* names[] = {"grid barrier: reset counter, fences", "grid barrier: growing counter, acq/rel",
                                "grid barrier: flag per block"};
  Result r{names[Kind], blocks, 0, 0, false};
  void* args[] = {&s, &phases};
  const auto launch = [&] {
    return cudaLaunchCooperativeKernel(reinterpret_cast<void*>(persistent_kernel<Kind>), dim3(blocks),
                                       dim3(kThreads), args, 0, st);
  };
  if (time_runs(s, phases, st, launch, r)) return 1;
  out.push_back(r);
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  const char* json = arg_value(argc, argv, "--json");
  const int phases = std::atoi(arg_value(argc, argv, "--phases", "2000"));
  int dev = 0, sms = 0, coop = 0, perSm = 0;
  CUDA_CHECK(cudaGetDevice(&dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, dev));
  CUDA_CHECK(cudaDeviceGetAttribute(&coop, cudaDevAttrCooperativeLaunch, dev));
  CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&perSm, persistent_kernel<0>, kThreads, 0));
  for (auto k : {persistent_kernel<1>, persistent_kernel<2>}) {
    int n = 0;
    CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k, kThreads, 0));
    perSm = std::min(perSm, n);
  }
  std::printf("device: %s, %d SMs, %d blocks of %d threads per SM, %d phases\n", device_name().c_str(), sms, perSm,
              kThreads, phases);
  if (phases < 2 || !coop) {
    std::printf("%s\n", coop ? "--phases must be at least 2" : "no cooperative launch on this device");
    return 1;
  }
  const int maxBlocks = sms * std::max(1, perSm);
  Shared s{};
  CUDA_CHECK(cudaMalloc(&s.vals, 2 * maxBlocks * sizeof(int)));
  CUDA_CHECK(cudaMalloc(&s.count, sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&s.gen, sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&s.flags, maxBlocks * sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&s.mismatch, sizeof(unsigned)));
  CUDA_CHECK(cudaMalloc(&s.timedOut, sizeof(int)));
  cudaStream_t st;
  CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
  std::vector<Result> out;
  for (int blocks : {sms, 2 * sms, maxBlocks}) {
    if (blocks > maxBlocks) continue;
    if (run_chain(s, blocks, phases, st, out) || run_persistent<0>(s, blocks, phases, st, out) ||
        run_persistent<1>(s, blocks, phases, st, out) || run_persistent<2>(s, blocks, phases, st, out))
      return 1;
  }
  int failed = 0;
  for (const Result& r : out) failed += r.mismatch || r.timedOut;
  std::printf("%d runs, %d failed\n", (int)out.size(), failed);
  if (json) {
    Json j;
    j.begin_obj().kv("device", device_name()).kv("phases", phases).kv("failed", failed).key("runs").begin_arr();
    for (const Result& r : out)
      j.begin_obj().kv("how", r.how).kv("blocks", r.blocks).kv("us_per_phase", r.usPerPhase)
          .kv("mismatch", (long long)r.mismatch).kv("timed_out", r.timedOut).end_obj();
    j.end_arr().end_obj();
    if (!j.write(json)) return 1;
  }
  cudaFree(s.vals), cudaFree(s.count), cudaFree(s.gen), cudaFree(s.flags), cudaFree(s.mismatch), cudaFree(s.timedOut);
  return failed ? 1 : 0;
}
