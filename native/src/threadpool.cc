#include "threadpool.h"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_PAUSE() _mm_pause()
#else
#define TP_PAUSE() ((void)0)
#endif

namespace tpserve {

// About 0.1-0.5 ms of spinning before sleeping: long enough to bridge the gaps between the kernels of a step.
static constexpr int kSpinIters = 4096;

ThreadPool::ThreadPool(int threads) : n_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < n_; i++) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
    gen_.fetch_add(1);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::worker(int id) {
  unsigned seen = 0;
  for (;;) {
    unsigned g = gen_.load(std::memory_order_acquire);
    for (int i = 0; g == seen && i < kSpinIters; i++) {
      TP_PAUSE();
      g = gen_.load(std::memory_order_acquire);
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lk, [&] { return gen_.load(std::memory_order_acquire) != seen; });
      sleepers_.fetch_sub(1);
      g = gen_.load(std::memory_order_acquire);
    }
    seen = g;
    if (stop_.load()) return;
    (*job_)(id, n_);
    pending_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_ == 1) {
    fn(0, 1);
    return;
  }
  job_ = &fn;
  pending_.store(n_ - 1, std::memory_order_relaxed);
  {
    // Publishing under the lock closes the race with a worker that is about to sleep.
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      gen_.fetch_add(1);
      cv_.notify_all();
    } else {
      gen_.fetch_add(1);
      if (sleepers_.load() > 0) {
        std::lock_guard<std::mutex> lk(mu_);
        cv_.notify_all();
      }
    }
  }
  fn(0, n_);
  // Spin briefly, then yield so an oversubscribed machine (more threads than free cores) still makes progress.
  for (int i = 0; pending_.load(std::memory_order_acquire) != 0; i++) {
    if (i < 2048) TP_PAUSE();
    else std::this_thread::yield();
  }
}

void ThreadPool::parallelFor(int n, int align, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  const int units = (n + align - 1) / align;
  if (n_ == 1 || units == 1) {
    fn(0, n);
    return;
  }
  run([&](int part, int parts) {
    const int b = (int)((long long)units * part / parts) * align;
    int e = (int)((long long)units * (part + 1) / parts) * align;
    if (e > n) e = n;
    if (b < e) fn(b, e);
  });
}

}  // namespace tpserve

