#include "stepper.h"

#include <chrono>
#include <thread>

#include "errors.h"

namespace tpserve {

// State the thread shares with the Stepper; the thread holds it too, so it outlives a Stepper that is destroyed
// (garbage-collected Engine) while a step still runs.
struct Stepper::Shared {
  std::atomic<int> state{kIdle};
  std::atomic<bool> stop{false};
  std::atomic<bool> sleeping{false};
  std::mutex mu;
  std::condition_variable cv;
  std::function<void()> job;
  int32_t* flag = nullptr;
  std::string code, message;
};

namespace {

// How long the thread spins for the next step before it sleeps: a decode loop submits the next step well within
// this, so a busy engine never pays a wake-up.
constexpr auto kSpin = std::chrono::milliseconds(2);

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#endif
}

}  // namespace

Stepper::Stepper() : sh_(std::make_shared<Shared>()), state_(sh_->state) {
  std::shared_ptr<Shared> sh = sh_;
  std::thread([sh] { run(sh); }).detach();
}

Stepper::~Stepper() {
  while (state_.load(std::memory_order_acquire) == kQueued || state_.load(std::memory_order_acquire) == kRunning)
    std::this_thread::sleep_for(std::chrono::microseconds(200));
  sh_->stop.store(true, std::memory_order_release);
  std::lock_guard<std::mutex> lk(sh_->mu);
  sh_->cv.notify_all();
}

bool Stepper::submit(std::function<void()> job, int32_t* flag) {
  if (state_.load(std::memory_order_acquire) != kIdle) return false;
  sh_->job = std::move(job);
  sh_->flag = flag;
  sh_->code.clear(), sh_->message.clear();
  __atomic_store_n(flag, 0, __ATOMIC_RELAXED);
  // seq_cst here and in the thread's sleeping store / predicate load: one of the two sides sees the other.
  state_.store(kQueued);
  if (sh_->sleeping.load()) {
    std::lock_guard<std::mutex> lk(sh_->mu);
    sh_->cv.notify_all();
  }
  return true;
}

void Stepper::finish(std::string* code, std::string* message) {
  if (state_.load(std::memory_order_acquire) != kDone)
    fail("NATIVE_INTERNAL", "finishStep() before the step announced its end");
  *code = std::move(sh_->code), *message = std::move(sh_->message);
  sh_->job = nullptr;
  state_.store(kIdle, std::memory_order_release);
}

void Stepper::run(const std::shared_ptr<Shared>& sh) {
  using Clock = std::chrono::steady_clock;
  for (;;) {
    const Clock::time_point until = Clock::now() + kSpin;
    while (sh->state.load(std::memory_order_acquire) != kQueued && !sh->stop.load(std::memory_order_acquire)) {
      if (Clock::now() < until) {
        cpu_relax();
        continue;
      }
      std::unique_lock<std::mutex> lk(sh->mu);
      sh->sleeping.store(true);
      sh->cv.wait(lk, [&] { return sh->state.load() == kQueued || sh->stop.load(); });
      sh->sleeping.store(false, std::memory_order_release);
    }
    if (sh->state.load(std::memory_order_acquire) != kQueued) return;  // stopped while idle
    sh->state.store(kRunning, std::memory_order_release);
    captureErrors(sh->job, &sh->code, &sh->message, "forward");
    sh->state.store(kDone, std::memory_order_release);
    __atomic_store_n(sh->flag, 1, __ATOMIC_RELEASE);
  }
}

}  // namespace tpserve
