// ShmCollective: the layout and protocol are described in collective_shm.h.
#include "collective_shm.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <climits>
#include <cstdio>
#include <cstring>
#include <thread>

#ifdef __linux__
#include <linux/futex.h>
#include <sys/syscall.h>
#endif

#include "errors.h"

namespace tpserve {

namespace {
constexpr uint32_t kMagic = 0x54505348;  // "TPSH"
constexpr int kMaxWorld = 64;
using Clock = std::chrono::steady_clock;

long msSince(Clock::time_point t) {
  return (long)std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t).count();
}

void futexWait(std::atomic<uint32_t>* word, uint32_t seen, long ms) {
#ifdef __linux__
  timespec ts{ms / 1000, (ms % 1000) * 1000000L};
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAIT, seen, &ts, nullptr, 0);
#else
  (void)word, (void)seen;
  std::this_thread::sleep_for(std::chrono::microseconds(ms > 0 ? 200 : 50));
#endif
}

void futexWakeAll(std::atomic<uint32_t>* word) {
#ifdef __linux__
  syscall(SYS_futex, reinterpret_cast<uint32_t*>(word), FUTEX_WAKE, INT_MAX, nullptr, nullptr, 0);
#else
  (void)word;
#endif
}

/** False when the process is gone or a zombie (exited, not yet reaped by its parent). */
bool alive(int pid) {
  if (pid <= 0) return true;  // not joined yet
  if (kill(pid, 0) != 0 && errno == ESRCH) return false;
#ifdef __linux__
  char path[64], buf[256];
  std::snprintf(path, sizeof path, "/proc/%d/stat", pid);
  FILE* f = std::fopen(path, "r");
  if (!f) return false;
  const size_t n = std::fread(buf, 1, sizeof buf - 1, f);
  std::fclose(f);
  buf[n] = 0;
  const char* close = std::strrchr(buf, ')');  // "pid (comm) S ...": the state follows the last ')'
  if (close && close[1] == ' ' && (close[2] == 'Z' || close[2] == 'X')) return false;
#endif
  return true;
}
}  // namespace

struct alignas(64) RankState {
  std::atomic<int32_t> pid;
  std::atomic<uint64_t> arrived;
};

struct ShmCollective::Header {
  std::atomic<uint32_t> magic;
  uint32_t world;
  uint64_t slotBytes, totalBytes;
  std::atomic<uint32_t> wake;  // bumped on every arrival and on failure; waiters sleep on it
  std::atomic<int32_t> failed;
  std::atomic<int32_t> reasonReady;
  char reason[512];
  RankState ranks[kMaxWorld];
};

static_assert(std::atomic<uint32_t>::is_always_lock_free && std::atomic<uint64_t>::is_always_lock_free,
              "shared-memory collectives need lock-free atomics");

ShmCollective::ShmCollective(const ShmOptions& o, long joinTimeoutMs) : o_(o) {
  if (o.world < 1 || o.world > kMaxWorld)
    fail("NATIVE_TP_CONFIG", "tp world size " + std::to_string(o.world) + " must be 1.." + std::to_string(kMaxWorld));
  if (o.rank < 0 || o.rank >= o.world)
    fail("NATIVE_TP_CONFIG", "tp rank " + std::to_string(o.rank) + " must be 0.." + std::to_string(o.world - 1));
  if (o.name.empty() || o.name.size() > 200 ||
      o.name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") != std::string::npos)
    fail("NATIVE_TP_CONFIG", "tp group name '" + o.name + "' must be 1..200 characters of A-Z a-z 0-9 . _ -");
  if (o.timeoutMs < 1) fail("NATIVE_TP_CONFIG", "tp collective timeout must be >= 1 ms");
  if (o.slotBytes < 4096 || o.slotBytes > (256u << 20) || o.slotBytes % 64)
    fail("NATIVE_TP_CONFIG", "tp slotBytes must be a multiple of 64 in 4096..268435456");
  shmName_ = "/tpserve-" + o.name;
  const size_t headerBytes = (sizeof(Header) + 4095) / 4096 * 4096;
  total_ = headerBytes + 2 * (size_t)o.world * o.slotBytes;
  const Clock::time_point start = Clock::now();
  if (o.rank == 0) {
    fd_ = shm_open(shmName_.c_str(), O_CREAT | O_EXCL | O_RDWR, 0600);
    if (fd_ < 0)
      fail("NATIVE_TP_CONFIG", "cannot create shared memory " + shmName_ + ": " + std::strerror(errno) +
                                   (errno == EEXIST ? " (another group uses this --tp-group name, or a crashed one "
                                                      "left /dev/shm" + shmName_ + " behind: remove it or pick a new name)"
                                                    : ""));
    if (ftruncate(fd_, (off_t)total_) != 0) {
      const int e = errno;
      close(fd_), shm_unlink(shmName_.c_str());
      fd_ = -1;
      fail("NATIVE_TP_CONFIG", "cannot size shared memory " + shmName_ + " to " + std::to_string(total_) +
                                   " bytes: " + std::strerror(e) + " (is /dev/shm large enough?)");
    }
  } else {
    for (;;) {
      fd_ = shm_open(shmName_.c_str(), O_RDWR, 0600);
      if (fd_ >= 0) {
        struct stat st;
        if (fstat(fd_, &st) == 0 && (size_t)st.st_size == total_) break;
        close(fd_), fd_ = -1;  // rank 0 is still sizing it
      } else if (errno != ENOENT) {
        fail("NATIVE_TP_CONFIG", "cannot open shared memory " + shmName_ + ": " + std::strerror(errno));
      }
      if (msSince(start) > joinTimeoutMs)
        fail("NATIVE_TP_TIMEOUT", "rank 0 of tp group '" + o.name + "' did not create its shared memory within " +
                                      std::to_string(joinTimeoutMs) + " ms (same --tp, --tp-group and slot size on "
                                      "every rank? is rank 0 running?)");
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
  }
  void* p = mmap(nullptr, total_, PROT_READ | PROT_WRITE, MAP_SHARED, fd_, 0);
  if (p == MAP_FAILED) {
    const int e = errno;
    close(fd_), fd_ = -1;
    if (o.rank == 0) shm_unlink(shmName_.c_str());
    fail("NATIVE_TP_CONFIG", "cannot map shared memory " + shmName_ + ": " + std::strerror(e));
  }
  h_ = static_cast<Header*>(p);
  data_ = static_cast<uint8_t*>(p) + headerBytes;
  if (o.rank == 0) {
    h_->world = (uint32_t)o.world, h_->slotBytes = o.slotBytes, h_->totalBytes = total_;
    h_->magic.store(kMagic, std::memory_order_release);
  } else {
    while (h_->magic.load(std::memory_order_acquire) != kMagic) {
      if (msSince(start) > joinTimeoutMs)
        fail("NATIVE_TP_TIMEOUT", "tp group '" + o.name + "': rank 0 did not initialize the shared memory in time");
      std::this_thread::sleep_for(std::chrono::milliseconds(5));
    }
    if (h_->world != (uint32_t)o.world || h_->slotBytes != o.slotBytes)
      fail("NATIVE_TP_CONFIG", "tp group '" + o.name + "' has world " + std::to_string(h_->world) + " and slot " +
                                   std::to_string(h_->slotBytes) + " bytes, this rank expects " +
                                   std::to_string(o.world) + " and " + std::to_string(o.slotBytes) +
                                   ": start every rank with the same --tp");
  }
  int32_t expected = 0;
  if (!h_->ranks[o.rank].pid.compare_exchange_strong(expected, (int32_t)getpid()))
    fail("NATIVE_TP_CONFIG", "tp group '" + o.name + "': rank " + std::to_string(o.rank) +
                                 " is already taken by pid " + std::to_string(expected));
}

ShmCollective::~ShmCollective() {
  if (h_) munmap(h_, total_);
  if (fd_ >= 0) close(fd_);
  if (o_.rank == 0 && !unlinked_) shm_unlink(shmName_.c_str());
}

void ShmCollective::join(long joinTimeoutMs) {
  std::lock_guard<std::mutex> lk(mu_);
  const uint64_t k = ++seq_;
  arrive(k);
  try {
    waitAll(k, joinTimeoutMs);
  } catch (...) {
    if (o_.rank == 0 && !unlinked_) shm_unlink(shmName_.c_str()), unlinked_ = true;
    throw;
  }
  if (o_.rank == 0) shm_unlink(shmName_.c_str()), unlinked_ = true;  // every rank has it mapped
}

uint8_t* ShmCollective::slot(uint64_t k, int r) const {
  return data_ + ((size_t)(k % 2) * o_.world + r) * o_.slotBytes;
}

void ShmCollective::arrive(uint64_t k) {
  h_->ranks[o_.rank].arrived.store(k, std::memory_order_release);
  h_->wake.fetch_add(1, std::memory_order_acq_rel);
  futexWakeAll(&h_->wake);
}

std::string ShmCollective::deadPeer() const {
  for (int j = 0; j < o_.world; j++) {
    if (j == o_.rank) continue;
    const int pid = h_->ranks[j].pid.load(std::memory_order_acquire);
    if (!alive(pid)) return "rank " + std::to_string(j) + " (pid " + std::to_string(pid) + ") exited";
  }
  return "";
}

void ShmCollective::raise(const char* code, const std::string& reason) {
  int32_t expected = 0;
  if (h_->failed.compare_exchange_strong(expected, 1)) {
    std::snprintf(h_->reason, sizeof h_->reason, "%s", reason.c_str());
    h_->reasonReady.store(1, std::memory_order_release);
    h_->wake.fetch_add(1, std::memory_order_acq_rel);
    futexWakeAll(&h_->wake);
    fail(code, "tp group '" + o_.name + "' failed: " + reason);
  }
  requireHealthy();
  fail(code, "tp group '" + o_.name + "' failed: " + reason);
}

void ShmCollective::requireHealthy() {
  if (!h_->failed.load(std::memory_order_acquire)) return;
  for (int i = 0; i < 100 && !h_->reasonReady.load(std::memory_order_acquire); i++)
    std::this_thread::sleep_for(std::chrono::milliseconds(1));
  fail("NATIVE_TP_FAILED", "tp group '" + o_.name + "' failed: " + std::string(h_->reason));
}

void ShmCollective::waitAll(uint64_t k, long waitMs) {
  const Clock::time_point start = Clock::now();
  Clock::time_point checked = start;
  for (int spins = 0;; spins++) {
    const uint32_t seen = h_->wake.load(std::memory_order_acquire);
    int missing = -1;
    for (int j = 0; j < o_.world && missing < 0; j++)
      if (h_->ranks[j].arrived.load(std::memory_order_acquire) < k) missing = j;
    if (missing < 0) return;  // complete, even if a rank failed the group right after arriving
    requireHealthy();
    if (spins < 32 || (spinUs_.load(std::memory_order_relaxed) > 0 &&
                       Clock::now() - start < std::chrono::microseconds(spinUs_.load(std::memory_order_relaxed)))) {
      std::this_thread::yield();
      continue;
    }
    if (msSince(checked) >= 20) {
      checked = Clock::now();
      const std::string dead = deadPeer();
      if (!dead.empty()) raise("NATIVE_TP_PEER_DEAD", dead);
    }
    if (waitMs > 0 && msSince(start) >= waitMs)
      raise("NATIVE_TP_TIMEOUT", "rank " + std::to_string(missing) + " did not reach collective #" +
                                     std::to_string(k) + " within " + std::to_string(waitMs) +
                                     " ms (hung or overloaded; raise --tp-timeout-ms if it is only slow)");
    futexWait(&h_->wake, seen, 10);
  }
}

void ShmCollective::allReduceSum(float* data, size_t n) {
  std::lock_guard<std::mutex> lk(mu_);
  requireHealthy();
  const size_t chunk = o_.slotBytes / sizeof(float);
  for (size_t off = 0; off < n; off += chunk) {
    const size_t c = std::min(chunk, n - off);
    const uint64_t k = ++seq_;
    std::memcpy(slot(k, o_.rank), data + off, c * sizeof(float));
    arrive(k);
    waitAll(k, o_.timeoutMs);
    float* out = data + off;
    std::memcpy(out, slot(k, 0), c * sizeof(float));  // rank order, so every rank gets the same bits
    for (int j = 1; j < o_.world; j++) {
      const float* s = reinterpret_cast<const float*>(slot(k, j));
      for (size_t i = 0; i < c; i++) out[i] += s[i];
    }
  }
}

void ShmCollective::allGather(const void* in, size_t bytes, void* out) {
  std::lock_guard<std::mutex> lk(mu_);
  requireHealthy();
  const uint8_t* src = static_cast<const uint8_t*>(in);
  uint8_t* dst = static_cast<uint8_t*>(out);
  for (size_t off = 0; off < bytes || (bytes == 0 && off == 0); off += o_.slotBytes) {
    const size_t c = std::min(o_.slotBytes, bytes - off);
    const uint64_t k = ++seq_;
    std::memcpy(slot(k, o_.rank), src + off, c);
    arrive(k);
    waitAll(k, o_.timeoutMs);
    for (int j = 0; j < o_.world; j++) std::memcpy(dst + (size_t)j * bytes + off, slot(k, j), c);
    if (bytes == 0) break;
  }
}

void ShmCollective::broadcast(void* data, size_t bytes, int root, long waitMs) {
  std::lock_guard<std::mutex> lk(mu_);
  requireHealthy();
  if (root < 0 || root >= o_.world) fail("NATIVE_TP_CONFIG", "broadcast root " + std::to_string(root) + " out of range");
  uint8_t* buf = static_cast<uint8_t*>(data);
  bool first = true;
  for (size_t off = 0; off < bytes || (bytes == 0 && off == 0); off += o_.slotBytes) {
    const size_t c = std::min(o_.slotBytes, bytes - off);
    const uint64_t k = ++seq_;
    if (o_.rank == root) std::memcpy(slot(k, root), buf + off, c);
    arrive(k);
    waitAll(k, first ? (waitMs < 0 ? o_.timeoutMs : waitMs) : o_.timeoutMs);
    first = false;
    if (o_.rank != root) std::memcpy(buf + off, slot(k, root), c);
    if (bytes == 0) break;
  }
}

void ShmCollective::abort(const std::string& reason) {
  // No mu_ here: a collective of this rank may be waiting under it (a follower idle in broadcast), and the abort is
  // what must wake it. The compare-and-swap on `failed` makes one writer of the reason.
  int32_t expected = 0;
  if (h_->failed.compare_exchange_strong(expected, 1)) {
    std::snprintf(h_->reason, sizeof h_->reason, "rank %d: %s", o_.rank, reason.c_str());
    h_->reasonReady.store(1, std::memory_order_release);
    h_->wake.fetch_add(1, std::memory_order_acq_rel);
    futexWakeAll(&h_->wake);
  }
}

std::string ShmCollective::failure() {
  if (h_->failed.load(std::memory_order_acquire)) {
    for (int i = 0; i < 100 && !h_->reasonReady.load(std::memory_order_acquire); i++)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    return h_->reason;
  }
  return deadPeer();
}

}  // namespace tpserve
