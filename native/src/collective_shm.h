// Shared-memory collectives for the CPU ranks of one TP group on one host (see collective.h for the contract).
//
// One POSIX shared-memory segment per group, created by rank 0 and unlinked once every rank has mapped it:
//   header: magic, world, slot size, a failure flag and reason, a wake-up word (futex), and per rank its pid and
//           the number of the last collective it arrived at;
//   data:   two banks of `world` slots of `slotBytes` each. Collective number k uses bank k % 2.
// A collective: write this rank's part into its slot of the bank, publish arrival k, wait until every rank has
// arrived at k, read the slots it needs. Rank j arriving at k+1 proves it finished reading collective k, so a rank
// that starts collective k+2 (it has seen everyone at k+1) may overwrite bank k % 2. Messages larger than a slot go
// in several collectives. Waits sleep on a futex in slices of at most 10 ms; between slices they check the failure
// flag, whether each peer's pid is still alive (every 20 ms), and the deadline.
#pragma once
#include <atomic>
#include <mutex>
#include <string>

#include "collective.h"

namespace tpserve {

struct ShmOptions {
  std::string name;  // [A-Za-z0-9._-], unique per group launch
  int rank = 0, world = 1;
  long timeoutMs = 10000;  // bound on one collective inside a step
  size_t slotBytes = 1 << 20;
};

class ShmCollective : public Collective {
 public:
  /** Creates (rank 0) or opens (rank > 0, waiting up to joinTimeoutMs for rank 0) the segment. */
  ShmCollective(const ShmOptions& o, long joinTimeoutMs);
  ~ShmCollective() override;
  /** Barrier of every rank (up to joinTimeoutMs); rank 0 then unlinks the segment's name. */
  void join(long joinTimeoutMs);
  int rank() const override { return o_.rank; }
  int world() const override { return o_.world; }
  long timeoutMs() const override { return o_.timeoutMs; }
  void setSpinMicros(long us) override { spinUs_.store(us < 0 ? 0 : us, std::memory_order_relaxed); }
  void allReduceSum(float* data, size_t n) override;
  void allGather(const void* in, size_t bytes, void* out) override;
  void broadcast(void* data, size_t bytes, int root, long waitMs = -1) override;
  void abort(const std::string& reason) override;
  std::string failure() override;

 private:
  struct Header;
  uint8_t* slot(uint64_t k, int r) const;
  void arrive(uint64_t k);
  void waitAll(uint64_t k, long waitMs);
  [[noreturn]] void raise(const char* code, const std::string& reason);
  /** Name of a peer that died, or empty. */
  std::string deadPeer() const;
  void requireHealthy();

  ShmOptions o_;
  std::string shmName_;
  int fd_ = -1;
  size_t total_ = 0;
  Header* h_ = nullptr;
  uint8_t* data_ = nullptr;
  uint64_t seq_ = 0;
  std::atomic<long> spinUs_{0};  // beyond the first 32 yields
  bool unlinked_ = false;
  std::mutex mu_;
};

}  // namespace tpserve
