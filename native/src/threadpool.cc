#include "threadpool.h"

#include <sched.h>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define TP_PAUSE() _mm_pause()
#else
#define TP_PAUSE() ((void)0)
#endif

namespace tpserve {

// Idle workers: pause-spin a little (bridges the gaps between the kernels of a step), then spin with sched_yield
// (costs nothing when the core is free, hands it over when another thread wants it), then sleep.
static constexpr int kPauseIters = 1024;
static constexpr int kYieldIters = 64;

// state_ = generation (32 bits) | number of parts (16 bits) | next part to claim (16 bits): one word, so that a
// claim can only succeed for the generation (and part count) it read.
static inline uint32_t genOf(uint64_t s) { return (uint32_t)(s >> 32); }
static inline uint32_t partsOf(uint64_t s) { return (uint32_t)(s >> 16) & 0xffff; }
static inline uint32_t partOf(uint64_t s) { return (uint32_t)s & 0xffff; }

ThreadPool::ThreadPool(int threads) : n_(threads < 1 ? 1 : threads) {
  for (int i = 1; i < n_; i++) threads_.emplace_back([this, i] { worker(i); });
}

ThreadPool::~ThreadPool() {
  {
    std::lock_guard<std::mutex> lk(mu_);
    stop_.store(true);
    state_.fetch_add(uint64_t(1) << 32);
  }
  cv_.notify_all();
  for (auto& t : threads_) t.join();
}

void ThreadPool::drain(uint32_t gen) {
  for (;;) {
    uint64_t s = state_.load(std::memory_order_acquire);
    if (genOf(s) != gen) return;
    const uint32_t p = partOf(s), ps = partsOf(s);
    if (p >= ps) return;
    if (!state_.compare_exchange_weak(s, s + 1, std::memory_order_acq_rel)) continue;
    // The claim succeeded for this generation, so job_ is this generation's and stays valid: the caller cannot
    // return (and publish another job) before every part of this one is done.
    (*job_)((int)p, (int)ps);
    done_.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::worker(int) {
  uint32_t seen = 0;
  for (;;) {
    uint32_t g = genOf(state_.load(std::memory_order_acquire));
    for (int i = 0; g == seen && i < kPauseIters + kYieldIters; i++) {
      if (i < kPauseIters) TP_PAUSE();
      else sched_yield();
      g = genOf(state_.load(std::memory_order_acquire));
    }
    if (g == seen) {
      std::unique_lock<std::mutex> lk(mu_);
      sleepers_.fetch_add(1);
      cv_.wait(lk, [&] { return genOf(state_.load(std::memory_order_acquire)) != seen; });
      sleepers_.fetch_sub(1);
      g = genOf(state_.load(std::memory_order_acquire));
    }
    seen = g;
    if (stop_.load()) return;
    drain(g);
  }
}

void ThreadPool::dispatch(const std::function<void(int, int)>& fn, int parts) {
  // A late worker still in drain() of the previous job cannot claim anything: all its parts are claimed.
  job_ = &fn;
  done_.store(0, std::memory_order_relaxed);
  const uint64_t old = state_.load(std::memory_order_relaxed);
  const uint64_t next = ((uint64_t)(genOf(old) + 1) << 32) | ((uint64_t)parts << 16);
  const uint32_t gen = genOf(next);
  if (sleepers_.load() > 0) {
    // Publishing under the lock closes the race with a worker that is about to sleep.
    std::lock_guard<std::mutex> lk(mu_);
    state_.store(next, std::memory_order_release);
    cv_.notify_all();
  } else {
    state_.store(next, std::memory_order_release);
    if (sleepers_.load() > 0) {
      std::lock_guard<std::mutex> lk(mu_);
      cv_.notify_all();
    }
  }
  drain(gen);
  if (done_.load(std::memory_order_acquire) == parts) return;
  // Every part is claimed; wait for the ones still running on workers.
  std::chrono::steady_clock::time_point t0{};
  if (profiling_) t0 = std::chrono::steady_clock::now();
  for (int i = 0; done_.load(std::memory_order_acquire) != parts; i++) {
    if (i < 4096) TP_PAUSE();
    else sched_yield();
  }
  if (profiling_) {
    waitNs_ += std::chrono::duration_cast<std::chrono::nanoseconds>(std::chrono::steady_clock::now() - t0).count();
    waitCalls_++;
  }
}

void ThreadPool::run(const std::function<void(int, int)>& fn) {
  if (n_ == 1) {
    fn(0, 1);
    return;
  }
  dispatch(fn, n_);
}

void ThreadPool::parallelFor(int n, int align, const std::function<void(int, int)>& fn) {
  if (n <= 0) return;
  const int units = (n + align - 1) / align;
  if (n_ == 1 || units == 1) {
    fn(0, n);
    return;
  }
  // Two parts per thread, so that a thread that is descheduled mid-job leaves little for the others to wait on.
  int parts = n_ * 2;
  if (parts > 0xffff) parts = 0xffff;
  if (parts > units) parts = units;
  const std::function<void(int, int)> part = [&](int p, int ps) {
    const int b = (int)((long long)units * p / ps) * align;
    int e = (int)((long long)units * (p + 1) / ps) * align;
    if (e > n) e = n;
    if (b < e) fn(b, e);
  };
  dispatch(part, parts);
}

}  // namespace tpserve
