// Persistent worker pool with low-latency dispatch: workers spin briefly on a generation counter, then sleep on a
// condition variable. The calling thread always takes part 0 of every job.
#pragma once
#include <atomic>
#include <condition_variable>
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
  /** Runs fn(part, parts) for part in [0, parts) with parts == size(); returns when all are done. */
  void run(const std::function<void(int, int)>& fn);
  /** Splits [0, n) into size() contiguous ranges aligned to `align`; fn(begin, end). */
  void parallelFor(int n, int align, const std::function<void(int, int)>& fn);

 private:
  void worker(int id);
  int n_;
  std::vector<std::thread> threads_;
  const std::function<void(int, int)>* job_ = nullptr;
  std::atomic<unsigned> gen_{0};
  std::atomic<int> pending_{0};
  std::atomic<bool> stop_{false};
  std::mutex mu_;
  std::condition_variable cv_;
  std::atomic<int> sleepers_{0};
};

}  // namespace tpserve
