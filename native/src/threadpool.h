// Persistent worker pool with low-latency dispatch that degrades gracefully when the machine is oversubscribed.
// A job is split into parts that any thread claims from one atomic counter; the calling thread claims parts too,
// so a worker that is not running (descheduled by another process) never holds the caller up: the caller does the
// work itself. Idle workers spin briefly (yielding the core when someone else wants it), then sleep on a
// condition variable.
#pragma once
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace tpserve {

class ThreadPool {
 public:
  explicit ThreadPool(int threads);
  ~ThreadPool();
  int size() const { return n_; }
  /** Runs fn(part, parts) for part in [0, parts) with parts == size(); returns when all are done. Each part runs
   *  exactly once, on some thread; two parts may run one after the other on the same thread. */
  void run(const std::function<void(int, int)>& fn);
  /** Splits [0, n) into contiguous ranges aligned to `align`; fn(begin, end) once per range. */
  void parallelFor(int n, int align, const std::function<void(int, int)>& fn);
  void setProfiling(bool on) { profiling_ = on; }
  void resetWait() { waitNs_ = 0, waitCalls_ = 0; }
  long long waitNs() const { return waitNs_; }
  long long waitCalls() const { return waitCalls_; }

 private:
  void worker(int id);
  void dispatch(const std::function<void(int, int)>& fn, int parts);
  /** Claims and runs parts of job generation `gen` until none is left. */
  void drain(uint32_t gen);
  int n_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<uint64_t> state_{0};
  std::atomic<int> done_{0};     // parts finished in the current generation
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
  bool profiling_ = false;
  long long waitNs_ = 0, waitCalls_ = 0;
};

}  // namespace tpserve
