// A Promise whose work runs on the libuv pool: run() off the main thread (every C++ error becomes a rejection
// with a NATIVE_* code), then done() on the main thread builds the resolved value. JS values that run() uses or
// done() returns go in `keep` and come back to done() as references: a Napi::Value captured in a lambda would
// dangle once the calling handle scope is gone.
#pragma once
#include <napi.h>

#include <functional>
#include <string>
#include <vector>

#include "errors.h"

namespace tpserve {

class AsyncTask : public Napi::AsyncWorker {
 public:
  using Run = std::function<void()>;
  using Kept = std::vector<Napi::ObjectReference>;
  using Done = std::function<Napi::Value(Napi::Env, const Kept&)>;
  /** `keep`: JS values (typed arrays) that must stay alive while run() uses their memory. */
  static Napi::Promise start(Napi::Env env, const char* name, Run run, Done done,
                             const std::vector<Napi::Value>& keep = {}) {
    auto* t = new AsyncTask(env, name, std::move(run), std::move(done));
    for (const Napi::Value& v : keep) t->keep_.push_back(Napi::Persistent(v.As<Napi::Object>()));
    Napi::Promise p = t->deferred_.Promise();
    t->Queue();
    return p;
  }
  void Execute() override {
    std::string message;
    if (!captureErrors(run_, &code_, &message, name_)) SetError(message);
  }
  void OnOK() override { deferred_.Resolve(done_(Env(), keep_)); }
  void OnError(const Napi::Error& err) override {
    Napi::Error e = Napi::Error::New(Env(), err.Message());
    e.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(e.Value());
  }

 private:
  AsyncTask(Napi::Env env, const char* name, Run run, Done done)
      : Napi::AsyncWorker(env, name), deferred_(Napi::Promise::Deferred::New(env)), run_(std::move(run)),
        done_(std::move(done)), name_(name) {}
  Napi::Promise::Deferred deferred_;
  Run run_;
  Done done_;
  Kept keep_;
  const char* name_;
  std::string code_ = "NATIVE_INTERNAL";
};

}  // namespace tpserve
