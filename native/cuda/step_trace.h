// Diagnostics (benchmarks only): TPSERVE_TRACE_STEPS=N prints, for the first N graph replays of this model, the time
// the GPU spent in the replay, the GPU's idle time before it (since the previous replay ended) and the host's time
// inside forward(), one line each on stderr. Off (no events recorded) unless set.
#pragma once

#include <cuda_runtime.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <deque>

namespace tpserve {

class StepTrace {
 public:
  StepTrace() {
    const char* v = std::getenv("TPSERVE_TRACE_STEPS");
    left_ = limit_ = v ? std::atoi(v) : 0;
  }
  ~StepTrace() {
    for (Pair& p : pending_) cudaEventDestroy(p.a), cudaEventDestroy(p.b);
    for (Pair& p : free_) cudaEventDestroy(p.a), cudaEventDestroy(p.b);
  }
  bool on() const { return left_ > 0; }
  void setRank(int r) { rank_ = r; }

  /** Around one replay: begin() before the launch, end(tag) after it. */
  void begin(cudaStream_t s) {
    if (!on()) return;
    if (free_.empty()) {
      Pair p{};
      cudaEventCreate(&p.a), cudaEventCreate(&p.b);
      free_.push_back(p);
    }
    cur_ = free_.front();
    free_.pop_front();
    cudaEventRecord(cur_.a, s);
  }
  void end(cudaStream_t s, const char* tag) {
    if (!on()) return;
    cudaEventRecord(cur_.b, s);
    cur_.tag = tag, cur_.n = n_++;
    pending_.push_back(cur_);
    left_--;
  }

  /** Prints every replay that has finished (call at forward() entry and exit). */
  void drain(double hostMs = -1, const char* what = "", int rows = 0) {
    while (!pending_.empty() && cudaEventQuery(pending_.front().b) == cudaSuccess) {
      Pair p = pending_.front();
      pending_.pop_front();
      float gpu = 0, gap = -1;
      cudaEventElapsedTime(&gpu, p.a, p.b);
      if (hasLast_) cudaEventElapsedTime(&gap, last_, p.a);
      std::fprintf(stderr, "[trace r%d] replay %ld %s: gpu %.3f ms, idle before %.3f ms\n", rank_, p.n, p.tag, gpu,
                   gap);
      if (hasLast_) free_.push_back(lastPair_);
      last_ = p.b, lastPair_ = p, hasLast_ = true;
    }
    if (hostMs >= 0 && traced_ < limit_ && ++traced_) std::fprintf(stderr, "[trace r%d] forward %s rows %d: host %.3f ms\n", rank_, what, rows, hostMs);
  }

 private:
  struct Pair {
    cudaEvent_t a = nullptr, b = nullptr;
    const char* tag = "";
    long n = 0;
  };
  int left_ = 0, limit_ = 0, rank_ = 0;
  long n_ = 0, traced_ = 0;
  Pair cur_{}, lastPair_{};
  cudaEvent_t last_ = nullptr;
  bool hasLast_ = false;
  std::deque<Pair> pending_, free_;
};

}  // namespace tpserve
