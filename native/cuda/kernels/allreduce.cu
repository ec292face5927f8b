// One-shot all-reduce and column gather over peer buffers (design in allreduce.cuh).
#include "allreduce.cuh"

namespace tpserve::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ uint32_t ld_acquire_sys(const uint32_t* p) {
  uint32_t v;
  asm volatile("ld.acquire.sys.global.u32 %0, [%1];" : "=r"(v) : "l"(p) : "memory");
  return v;
}
__device__ __forceinline__ void st_release_sys(uint32_t* p, uint32_t v) {
  asm volatile("st.release.sys.global.u32 [%0], %1;" ::"l"(p), "r"(v) : "memory");
}
__device__ __forceinline__ float ld_volatile(const float* p) {
  float v;
  asm volatile("ld.volatile.global.f32 %0, [%1];" : "=f"(v) : "l"(p));
  return v;
}
__device__ __forceinline__ long long global_ns() {
  long long t;
  asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
  return t;
}

__host__ __device__ inline size_t flags_bytes(size_t cap) {
  const size_t blocks = (cap + kP2pChunk - 1) / kP2pChunk;
  return (blocks * kP2pMaxRanks * sizeof(uint32_t) + 255) / 256 * 256;
}

__device__ __forceinline__ uint32_t* flags_of(uint8_t* base) { return reinterpret_cast<uint32_t*>(base); }
__device__ __forceinline__ float* half_of(uint8_t* base, size_t cap, uint32_t epoch) {
  return reinterpret_cast<float*>(base + flags_bytes(cap)) + (epoch & 1u) * cap;
}

/**
 * Publishes this block's chunk and waits for every peer's. Returns the epoch, or 0 when the wait failed (timeout or
 * abort; *err is set and the caller must not read).
 */
__device__ uint32_t exchange(const float* src, size_t base, int cnt, const P2pGroup& g) {
  __shared__ uint32_t sEpoch;
  __shared__ int sFail;
  const int b = blockIdx.x;
  if (threadIdx.x == 0) {
    const uint32_t e = g.counters[b] + 1u;
    g.counters[b] = e;
    // 0 means "failed" to the caller: after 2^32 calls skip to 2, which keeps the parity alternating.
    sEpoch = e == 0 ? 2u : e;
    if (e == 0) g.counters[b] = 2u;
    sFail = 0;
  }
  __syncthreads();
  const uint32_t e = sEpoch;
  float* mine = half_of(g.base[g.rank], g.cap, e) + base;
  for (int i = threadIdx.x; i < cnt; i += kThreads) mine[i] = src[base + i];
  __syncthreads();
  if (threadIdx.x < g.world) {
    st_release_sys(flags_of(g.base[threadIdx.x]) + (size_t)b * kP2pMaxRanks + g.rank, e);
    const uint32_t* f = flags_of(g.base[g.rank]) + (size_t)b * kP2pMaxRanks + threadIdx.x;
    const long long t0 = global_ns();
    for (int k = 1; (int32_t)(ld_acquire_sys(f) - e) < 0; k++) {
      if ((k & 1023) == 0 &&
          (*reinterpret_cast<const volatile int*>(g.abortFlag) != 0 || global_ns() - t0 > g.timeoutNs)) {
        sFail = 1;
        *reinterpret_cast<volatile int*>(g.err) = 1;
        break;
      }
    }
  }
  __syncthreads();
  return sFail ? 0u : e;
}

__global__ void __launch_bounds__(kThreads) all_reduce_kernel(float* x, size_t n, P2pGroup g) {
  const size_t base = (size_t)blockIdx.x * kP2pChunk;
  const int cnt = (int)min((size_t)kP2pChunk, n - base);
  const uint32_t e = exchange(x, base, cnt, g);
  if (e == 0) return;
  for (int i = threadIdx.x; i < cnt; i += kThreads) {
    float s = 0.f;
    for (int j = 0; j < g.world; j++) s += ld_volatile(half_of(g.base[j], g.cap, e) + base + i);
    x[base + i] = s;
  }
}

__global__ void __launch_bounds__(kThreads) gather_cols_kernel(const float* local, int cols, float* out, size_t n,
                                                               P2pGroup g) {
  const size_t base = (size_t)blockIdx.x * kP2pChunk;
  const int cnt = (int)min((size_t)kP2pChunk, n - base);
  const uint32_t e = exchange(local, base, cnt, g);
  if (e == 0) return;
  const size_t width = (size_t)g.world * cols;
  for (int i = threadIdx.x; i < cnt; i += kThreads) {
    const size_t idx = base + i, r = idx / cols, c = idx % cols;
    for (int j = 0; j < g.world; j++) out[r * width + (size_t)j * cols + c] = ld_volatile(half_of(g.base[j], g.cap, e) + idx);
  }
}

bool valid(const P2pGroup& g, size_t n) {
  if (g.world < 1 || g.world > kP2pMaxRanks || g.rank < 0 || g.rank >= g.world || n > g.cap) return false;
  if (!g.counters || !g.err || !g.abortFlag) return false;
  for (int j = 0; j < g.world; j++)
    if (!g.base[j]) return false;
  return true;
}

}  // namespace

size_t p2p_buffer_bytes(size_t cap) { return flags_bytes(cap) + 2 * cap * sizeof(float); }

cudaError_t p2p_all_reduce(float* x, size_t n, const P2pGroup& g, cudaStream_t stream) {
  if (!valid(g, n) || (n > 0 && !x)) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((n + kP2pChunk - 1) / kP2pChunk);
  all_reduce_kernel<<<blocks, kThreads, 0, stream>>>(x, n, g);
  return cudaGetLastError();
}

cudaError_t p2p_gather_cols(const float* local, int rows, int cols, float* out, const P2pGroup& g,
                            cudaStream_t stream) {
  const size_t n = (size_t)rows * cols;
  if (rows < 0 || cols <= 0 || !valid(g, n) || (n > 0 && (!local || !out))) return cudaErrorInvalidValue;
  if (n == 0) return cudaSuccess;
  const unsigned blocks = (unsigned)((n + kP2pChunk - 1) / kP2pChunk);
  gather_cols_kernel<<<blocks, kThreads, 0, stream>>>(local, cols, out, n, g);
  return cudaGetLastError();
}

}  // namespace tpserve::cuda
