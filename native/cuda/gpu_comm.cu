// GpuComm: the p2p and NCCL paths of a GPU tensor-parallel group (design in gpu_comm.h).
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include "cuda_check.h"
#include "gpu_comm.h"

namespace tpserve {
namespace {

/** What each rank tells the others at setup. */
struct PeerInfo {
  cudaIpcMemHandle_t handle;
  uint64_t ptr;  // the buffer's device address in its own process (used when the peer is this process)
  int32_t pid;
  int32_t ok;  // this rank's buffer and IPC handle exist
  char bus[32];
};

bool allOk(Collective& host, int32_t mine) {
  std::vector<int32_t> all(host.world());
  host.allGather(&mine, sizeof mine, all.data());
  for (int32_t v : all)
    if (!v) return false;
  return true;
}

// With every rank on one GPU (TPSERVE_TP_SHARED_GPU=1) a p2p call completes only once every rank's blocks of it
// have been resident: a rank's block waits for the peers' blocks of the same index, and on one GPU the ranks' kernels
// compete for the same SMs. At 2 MiB a call has up to 512 blocks a rank (one a row in the fused all-reduce + RMSNorm
// at width 1,024), 4,096 at eight ranks, more than an H200 holds; session 32's int4 TP=8 runs hung there. 64 KiB a
// call keeps eight ranks' blocks to a wave (16 a rank for the plain kernels).
constexpr size_t kSharedGpuCapFloats = (size_t)16 << 10;

}  // namespace

GpuComm::GpuComm(std::shared_ptr<Collective> host, int device) : host_(std::move(host)), dev_(device) {
  rank_ = host_->rank(), world_ = host_->world();
  if (world_ > cuda::kP2pMaxRanks)
    fail("NATIVE_TP_CONFIG", "tp " + std::to_string(world_) + " exceeds the " + std::to_string(cuda::kP2pMaxRanks) +
                                 " GPU ranks a group supports");
  if (const char* m = std::getenv("TPSERVE_ALLREDUCE")) mode_ = m;
  // Benchmarks only: skip every collective (wrong results) to time a step without them.
  if (const char* k = std::getenv("TPSERVE_TP_SKIP_COLLECTIVES")) skip_ = k[0] == '1';
  // A/B: an act-order shard's decode input gathered, permuted and prepared by three kernels (gatherPrepared).
  if (const char* x = std::getenv("TPSERVE_TP_GATHER_XPREP")) gatherXprep_ = x[0] != '0';
  if (const char* v = std::getenv("TPSERVE_TP_SHARED_GPU")) sharedGpu_ = v[0] == '1';
  if (sharedGpu_) cap_ = kSharedGpuCapFloats;
  // Tests: a smaller p2p buffer, so that small models exercise the paths for messages larger than it.
  if (const char* c = std::getenv("TPSERVE_P2P_MAX_FLOATS")) {
    char* end = nullptr;
    const unsigned long long v = std::strtoull(c, &end, 10);
    if (!end || *end || v < 1024 || v > ((size_t)16 << 20) || v % 1024)
      fail("NATIVE_TP_CONFIG", std::string("TPSERVE_P2P_MAX_FLOATS must be a multiple of 1024 in 1024..16777216, got '") +
                                   c + "'");
    cap_ = (size_t)v;
  }
  if (mode_ != "auto" && mode_ != "p2p" && mode_ != "nccl")
    fail("NATIVE_TP_CONFIG", "TPSERVE_ALLREDUCE must be auto, p2p or nccl, got '" + mode_ + "'");
  CK(cudaSetDevice(dev_));
  // A follower waits for the leader's next plan between steps (the leader's Node loop takes ~0.1-0.3 ms): spin
  // through it rather than sleep, since the leader's first collective waits for this rank's step to start.
  host_->setSpinMicros(3000);
  CK(cudaHostAlloc(reinterpret_cast<void**>(&hostFlags_), 2 * sizeof(int), cudaHostAllocMapped));
  hostFlags_[0] = hostFlags_[1] = 0;
  if (mode_ != "nccl") setupP2p(device);
  if (mode_ != "p2p") setupNccl();
  if (mode_ == "p2p" && !p2p_)
    fail("NATIVE_TP_UNSUPPORTED", "TPSERVE_ALLREDUCE=p2p, but peer-to-peer buffers are not available: " + p2pWhy_);
  if (mode_ == "nccl" && !nccl_)
    fail("NATIVE_TP_UNSUPPORTED", "TPSERVE_ALLREDUCE=nccl, but NCCL is not available: " + ncclWhy_);
  if (!p2p_ && !nccl_)
    fail("NATIVE_TP_UNSUPPORTED", "tensor parallelism on GPUs needs NCCL or peer-to-peer access between the GPUs: " +
                                      ncclWhy_ + "; " + p2pWhy_);
}

GpuComm::~GpuComm() {
  cudaSetDevice(dev_);
  writeTrace();
  if (comm_) nccl_->commDestroy(comm_);
  for (void* p : opened_) cudaIpcCloseMemHandle(p);
  if (buf_) cudaFree(buf_);
  if (state_) cudaFree(state_);
  if (abortStream_) cudaStreamSynchronize(abortStream_), cudaStreamDestroy(abortStream_);
  if (abortDev_) cudaFree(abortDev_);
  if (hostFlags_) cudaFreeHost(hostFlags_);
}

void GpuComm::setupP2p(int device) {
  PeerInfo mine{};
  mine.pid = (int32_t)getpid();
  const size_t bytes = cuda::p2p_buffer_bytes(cap_, world_);
  cudaError_t e = cudaMalloc(&buf_, bytes);
  if (e == cudaSuccess) e = cudaMemset(buf_, 0xFF, bytes);  // the sentinel everywhere
  if (e == cudaSuccess) e = cudaMalloc(&state_, sizeof(cuda::P2pState));
  if (e == cudaSuccess) e = cudaMemset(state_, 0, sizeof(cuda::P2pState));
  if (e == cudaSuccess) e = cudaIpcGetMemHandle(&mine.handle, buf_);
  if (e == cudaSuccess) e = cudaDeviceGetPCIBusId(mine.bus, sizeof mine.bus, device);
  if (e == cudaSuccess) e = cudaDeviceSynchronize();
  mine.ok = e == cudaSuccess;
  if (!mine.ok) {
    cudaGetLastError();
    p2pWhy_ = std::string("rank ") + std::to_string(rank_) + ": " + cudaGetErrorString(e);
  }
  mine.ptr = reinterpret_cast<uint64_t>(buf_);
  std::vector<PeerInfo> all(world_);
  host_->allGather(&mine, sizeof mine, all.data());
  bool ok = true;
  for (int j = 0; j < world_; j++)
    if (!all[j].ok) ok = false, p2pWhy_ = "rank " + std::to_string(j) + " could not set up its peer buffer";
  // Peer access to every other rank's GPU, then map its buffer.
  for (int j = 0; ok && j < world_; j++) {
    if (j == rank_) {
      g_.base[j] = buf_;
      continue;
    }
    int peerDev = -1, can = 0;
    if (cudaDeviceGetByPCIBusId(&peerDev, all[j].bus) != cudaSuccess) {
      cudaGetLastError();
      ok = false, p2pWhy_ = std::string("GPU ") + all[j].bus + " of rank " + std::to_string(j) + " is not visible here";
      break;
    }
    // Ranks sharing a GPU: refused, unless TPSERVE_TP_SHARED_GPU=1 (tests of a group larger than the machine's
    // GPUs, which then need MPS for the ranks' kernels to run at once): the buffer is mapped through CUDA IPC on
    // the same device, or used as it is by ranks in one process.
    const bool sameGpu = peerDev == device;
    if (sameGpu && !sharedGpu_) {
      ok = false, p2pWhy_ = "ranks " + std::to_string(rank_) + " and " + std::to_string(j) +
                            " share one GPU (TPSERVE_TP_SHARED_GPU=1 allows it, for tests)";
      break;
    }
    if (sameGpu) can = 1;  // one device needs no peer access
    else cudaDeviceCanAccessPeer(&can, device, peerDev);
    if (!can) {
      ok = false, p2pWhy_ = "GPU " + std::to_string(device) + " cannot access GPU " + std::to_string(peerDev) +
                            " peer to peer (no NVLink or PCIe P2P)";
      break;
    }
    if (all[j].pid == mine.pid) {  // ranks in one process (tests): plain pointers, to a peer GPU or this one
      cudaError_t pe = sameGpu ? cudaSuccess : cudaDeviceEnablePeerAccess(peerDev, 0);
      if (pe != cudaSuccess && pe != cudaErrorPeerAccessAlreadyEnabled) {
        ok = false, p2pWhy_ = std::string("cudaDeviceEnablePeerAccess: ") + cudaGetErrorString(pe);
      }
      cudaGetLastError();
      g_.base[j] = reinterpret_cast<uint8_t*>(all[j].ptr);
      continue;
    }
    void* p = nullptr;
    cudaError_t oe = cudaIpcOpenMemHandle(&p, all[j].handle, cudaIpcMemLazyEnablePeerAccess);
    if (oe != cudaSuccess) {
      cudaGetLastError();
      ok = false, p2pWhy_ = std::string("cudaIpcOpenMemHandle of rank ") + std::to_string(j) + ": " +
                            cudaGetErrorString(oe);
      break;
    }
    opened_.push_back(p);
    g_.base[j] = static_cast<uint8_t*>(p);
  }
  p2p_ = allOk(*host_, ok ? 1 : 0);
  if (!p2p_) {
    if (ok) p2pWhy_ = "another rank could not map the peer buffers";
    return;
  }
  g_.rank = rank_, g_.world = world_, g_.cap = cap_, g_.state = state_;
  CK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&g_.err), hostFlags_, 0));
  // The polls' abort flag in device memory, set through abortStream_. TPSERVE_P2P_HOST_ABORT=1 (A/B only) has them
  // read the host-mapped word instead, as before session 25: with steps decoded ahead at batch 8 and 32 whole
  // phases then ran 7-12x slower (docs/tensor-parallel.md, "Decoding ahead in a group").
  CK(cudaMalloc(&abortDev_, sizeof(int)));
  CK(cudaMemset(abortDev_, 0, sizeof(int)));
  CK(cudaStreamCreateWithFlags(&abortStream_, cudaStreamNonBlocking));
  CK(cudaDeviceSynchronize());
  if (const char* h = std::getenv("TPSERVE_P2P_HOST_ABORT"); h && h[0] == '1') {
    int* mapped = nullptr;
    CK(cudaHostGetDevicePointer(reinterpret_cast<void**>(&mapped), hostFlags_ + 1, 0));
    g_.abortFlag = mapped;
  } else {
    g_.abortFlag = abortDev_;
  }
  g_.timeoutNs = (long long)host_->timeoutMs() * 1'000'000LL;
  if (const char* dir = std::getenv("TPSERVE_TP_TRACE_DIR")) {
    traceDir_ = dir;
    const size_t bytes = traceBytes();
    if (cudaMalloc(&g_.trace, bytes) != cudaSuccess || cudaMemset(g_.trace, 0, bytes) != cudaSuccess) g_.trace = nullptr;
  }
}

size_t GpuComm::traceBytes() {
  return (size_t)cuda::kExchangeTraceBlocks * (1 + (size_t)cuda::kExchangeTraceCalls * 4) * sizeof(unsigned long long);
}

// Diagnostics: the exchange trace as raw little-endian u64s (per-block counters, then kExchangeTraceCalls x
// kExchangeTraceBlocks records of {loop start, push, peers in, grid size}, globaltimer ns).
void GpuComm::writeTrace() {
  if (!g_.trace) return;
  std::vector<unsigned long long> h(traceBytes() / sizeof(unsigned long long));
  if (cudaMemcpy(h.data(), g_.trace, traceBytes(), cudaMemcpyDeviceToHost) == cudaSuccess) {
    const std::string path = traceDir_ + "/exchange-rank" + std::to_string(rank_) + ".bin";
    if (FILE* f = std::fopen(path.c_str(), "wb")) {
      std::fwrite(h.data(), sizeof(unsigned long long), h.size(), f);
      std::fclose(f);
    }
  }
  cudaFree(g_.trace);
  g_.trace = nullptr;
}

void GpuComm::setupNccl() {
  nccl_ = nccl::load(ncclWhy_);
  if (!allOk(*host_, nccl_ ? 1 : 0)) {
    if (nccl_) ncclWhy_ = "another rank could not load libnccl.so.2";
    nccl_ = nullptr;
    return;
  }
  nccl_->getVersion(&ncclVersion_);
  nccl::UniqueId id{};
  if (rank_ == 0) ncclCheck(nccl_->getUniqueId(&id), "ncclGetUniqueId");
  host_->broadcast(&id, sizeof id, 0);
  // A single-host group: NCCL's bootstrap sockets stay on loopback unless the user chose an interface.
  setenv("NCCL_SOCKET_IFNAME", "lo", 0);
  const nccl::Result r = nccl_->commInitRank(&comm_, world_, id, rank_);
  if (!allOk(*host_, r == 0 ? 1 : 0)) {
    ncclWhy_ = r == 0 ? "another rank's ncclCommInitRank failed"
                      : std::string("ncclCommInitRank: ") + nccl_->getErrorString(r);
    if (r == 0) nccl_->commDestroy(comm_);
    comm_ = nullptr, nccl_ = nullptr;
  }
}

void GpuComm::ncclCheck(nccl::Result r, const char* what) {
  if (r != 0) failGroup("NATIVE_TP_FAILED", std::string(what) + " failed: " + nccl_->getErrorString(r));
}

bool GpuComm::useP2p(size_t floats) const {
  if (!p2p_) return false;
  if (!nccl_) return true;
  return mode_ == "p2p" || floats <= g_.cap;
}

void GpuComm::allReduceSum(float* x, size_t n, cudaStream_t s) {
  if (skip_) return;
  if (!useP2p(n)) {
    ncclCheck(nccl_->allReduce(x, x, n, nccl::kFloat32, nccl::kSum, comm_, s), "ncclAllReduce");
    return;
  }
  for (size_t off = 0; off < n; off += g_.cap) {
    const cudaError_t e = cuda::p2p_all_reduce(x + off, std::min(g_.cap, n - off), g_, s);
    if (e != cudaSuccess) fail("NATIVE_CUDA", std::string("kernel p2p_all_reduce failed: ") + cudaGetErrorString(e));
  }
}

bool GpuComm::allReduceAddNorm(float* partial, float* x, const float* w, float* y, __half* xp, int rows, int dim,
                               float eps, cudaStream_t s) {
  const size_t n = (size_t)rows * dim;
  if (skip_) return false;
  // The fused kernel runs one block per row, which pushes dim x (world - 1) floats to the peers by itself. Past 8192
  // of them, at fewer than 8 rows, the all-reduce (many blocks) and then the norm were faster: on 4 H200s, 7.35 us
  // against 10.26 us for one row of 8192 (Llama-2-70B at batch 1), 6.21 against 6.44 for one of 4096
  // (docs/tensor-parallel.md).
  const bool fusedFaster = (size_t)(world_ - 1) * dim <= 8192 || rows >= 8;
  if (fusedFaster && useP2p(n) && n <= g_.cap &&
      cuda::p2p_all_reduce_rmsnorm(partial, x, w, y, xp, rows, dim, eps, g_, s) == cudaSuccess)
    return true;
  cudaGetLastError();  // the shapes the fused kernel does not take: reduce here, normalize in the caller
  allReduceSum(partial, n, s);
  return false;
}

void GpuComm::allReduceFold(float* partial, float* x, const float* w, __half* xp, float* ssq, int rows, int dim,
                            cudaStream_t s) {
  const size_t n = (size_t)rows * dim;
  if (skip_) return;
  const bool p2p = useP2p(n) && n <= g_.cap;
  if (!p2p) allReduceSum(partial, n, s);
  const cudaError_t e = cuda::all_reduce_fold(partial, x, w, xp, ssq, rows, dim, p2p ? &g_ : nullptr, s);
  if (e != cudaSuccess) fail("NATIVE_CUDA", std::string("kernel all_reduce_fold failed: ") + cudaGetErrorString(e));
}

void GpuComm::gatherCols(const float* local, int rows, int cols, float* out, float* scratch, cudaStream_t s) {
  const size_t n = (size_t)rows * cols;
  if (skip_) return;
  if (useP2p(n) && (size_t)cols <= g_.cap) {
    const int step = (int)std::min<size_t>((size_t)rows, g_.cap / cols);
    for (int r0 = 0; r0 < rows; r0 += step) {
      const int r = std::min(step, rows - r0);
      const cudaError_t e = cuda::p2p_gather_cols(local + (size_t)r0 * cols, r, cols,
                                                  out + (size_t)r0 * world_ * cols, g_, s);
      if (e != cudaSuccess) fail("NATIVE_CUDA", std::string("kernel p2p_gather_cols failed: ") + cudaGetErrorString(e));
    }
    return;
  }
  if (!nccl_) fail("NATIVE_TP_UNSUPPORTED", "a logits row of " + std::to_string(cols) + " columns exceeds the p2p buffer");
  ncclCheck(nccl_->allGather(local, scratch, n, nccl::kFloat32, comm_, s), "ncclAllGather");
  for (int j = 0; j < world_; j++)
    CK(cudaMemcpy2DAsync(out + (size_t)j * cols, (size_t)world_ * cols * sizeof(float), scratch + (size_t)j * n,
                         (size_t)cols * sizeof(float), (size_t)cols * sizeof(float), rows, cudaMemcpyDeviceToDevice, s));
}

bool GpuComm::gatherPrepared(const float* local, int rows, int cols, const int32_t* perm, int outCols, __half* xp,
                             cudaStream_t s) {
  const size_t n = (size_t)rows * cols;
  // The three kernels of the unfused path in one: a Llama-2-7B act-order step at TP = 2 1.712 -> 1.372 ms on 2x H200
  // (docs/gpu-runs.md run 71).
  if (!gatherXprep_ || skip_ || !useP2p(n) || n > g_.cap || rows > 16 || outCols % 64) return false;
  const cudaError_t e = cuda::p2p_gather_xprep(local, rows, cols, perm, outCols, xp, g_, s);
  if (e != cudaSuccess) fail("NATIVE_CUDA", std::string("kernel p2p_gather_xprep failed: ") + cudaGetErrorString(e));
  return true;
}

void GpuComm::wait(cudaStream_t s, cudaEvent_t until) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point start = Clock::now();
  Clock::time_point lastCheck = start;
  const auto timeout = std::chrono::milliseconds(host_->timeoutMs());
  for (;;) {
    const cudaError_t e = until ? cudaEventQuery(until) : cudaStreamQuery(s);
    if (e == cudaSuccess) break;
    if (e != cudaErrorNotReady) CK(e);
    const Clock::time_point now = Clock::now();
    if (now - lastCheck < std::chrono::milliseconds(2)) {
      std::this_thread::yield();
      continue;
    }
    lastCheck = now;
    const std::string why = host_->failure();
    if (!why.empty()) failGroup("NATIVE_TP_FAILED", why, s);
    if (now - start > timeout + std::chrono::milliseconds(500))
      failGroup("NATIVE_TP_TIMEOUT", "rank " + std::to_string(rank_) + ": a step's GPU collectives did not finish within " +
                                         std::to_string(host_->timeoutMs()) + " ms", s);
  }
  if (hostFlags_[0])
    failGroup("NATIVE_TP_TIMEOUT", "rank " + std::to_string(rank_) + ": a peer GPU did not reach a p2p all-reduce within " +
                                       std::to_string(host_->timeoutMs()) + " ms");
  if (comm_) {
    nccl::Result async = 0;
    nccl_->commGetAsyncError(comm_, &async);
    if (async != 0 && async != nccl::kInProgress)
      failGroup("NATIVE_TP_FAILED", std::string("NCCL: ") + nccl_->getErrorString(async));
  }
}

void GpuComm::failGroup(const char* code, const std::string& why, cudaStream_t s) {
  host_->abort(why);
  // Stop every device wait of this rank: p2p kernels see the abort flag, NCCL kernels the abort.
  hostFlags_[1] = 1;
  if (abortDev_) cudaMemcpyAsync(abortDev_, hostFlags_ + 1, sizeof(int), cudaMemcpyHostToDevice, abortStream_);
  if (comm_) {
    nccl_->commAbort(comm_);
    comm_ = nullptr;
  }
  const auto until = std::chrono::steady_clock::now() + std::chrono::seconds(2);
  while (s && cudaStreamQuery(s) == cudaErrorNotReady && std::chrono::steady_clock::now() < until)
    std::this_thread::yield();
  cudaGetLastError();
  fail(code, why);
}

std::string GpuComm::describe() const {
  std::string d;
  const size_t capBytes = cap_ * sizeof(float);
  const std::string size = capBytes % (1 << 20) == 0 ? std::to_string(capBytes >> 20) + " MiB"
                                                     : std::to_string(capBytes >> 10) + " KiB";
  if (p2p_) d = nccl_ ? "p2p (CUDA IPC) up to " + size : "p2p (CUDA IPC), in " + size + " pieces (NCCL: " + ncclWhy_ + ")";
  if (nccl_) {
    const std::string v = std::to_string(ncclVersion_ / 10000) + "." + std::to_string(ncclVersion_ / 100 % 100) + "." +
                          std::to_string(ncclVersion_ % 100);
    d += d.empty() ? "NCCL " + v + " (p2p: " + p2pWhy_ + ")" : ", NCCL " + v + " above";
  }
  if (mode_ != "auto") d += " [TPSERVE_ALLREDUCE=" + mode_ + "]";
  if (skip_) d += " [TPSERVE_TP_SKIP_COLLECTIVES=1: collectives skipped, results wrong]";
  return d;
}

}  // namespace tpserve
