// JS class Engine: wraps tpserve::Engine. forward*OnPool() run on the libuv pool and resolve a Promise; startStep()
// runs a step on the engine's Stepper thread (pollSteps) and native/index.ts polls for its end. native/index.ts
// defines the public forward, forwardArgmax and forwardSample on top of both.
#include <cstdlib>
#include <memory>

#include "async_task.h"
#include "napi_util.h"
#include "stepper.h"

namespace tpserve {
namespace {

EngineOptions parseOptions(const Napi::Value& v) {
  Napi::Object o = asObject(v, "options");
  Napi::Object s = asObject(o.Get("shape"), "options.shape");
  EngineOptions e;
  const std::string w = "options.shape";
  e.s.vocab = getInt(s, "vocabSize", w, 1), e.s.hidden = getInt(s, "hiddenSize", w, 1);
  e.s.inter = getInt(s, "intermediateSize", w, 1), e.s.layers = getInt(s, "numLayers", w, 1);
  e.s.heads = getInt(s, "numHeads", w, 1), e.s.kvHeads = getInt(s, "numKvHeads", w, 1);
  e.s.headDim = getInt(s, "headDim", w, 2);
  e.s.theta = (float)getNumber(s, "ropeTheta", w), e.s.eps = (float)getNumber(s, "rmsNormEps", w);
  Napi::Value tie = s.Get("tieWordEmbeddings");
  if (!tie.IsBoolean()) fail("NATIVE_INVALID_ARG", "options.shape.tieWordEmbeddings must be a boolean");
  e.s.tie = tie.As<Napi::Boolean>().Value();
  e.numPages = getInt(o, "numPages", "options", 0), e.blockSize = getInt(o, "blockSize", "options", 1);
  Napi::Value util = o.Get("gpuMemoryUtilization");
  if (!util.IsUndefined()) e.gpuMemoryUtilization = getNumber(o, "gpuMemoryUtilization", "options");
  Napi::Value mc = o.Get("maxContext");
  if (!mc.IsUndefined()) e.maxContext = getInt(o, "maxContext", "options", 1);
  e.maxBatchTokens = getInt(o, "maxBatchTokens", "options", 1);
  Napi::Value th = o.Get("threads");
  e.threads = th.IsUndefined() ? 0 : toInt(th, "options.threads", 0, 1024);
  Napi::Value kvd = o.Get("kvCacheDtype");
  if (!kvd.IsUndefined()) {
    const std::string k = kvd.IsString() ? kvd.As<Napi::String>().Utf8Value() : "";
    if (k != "f32" && k != "f16" && k != "int8")
      fail("NATIVE_INVALID_ARG", "options.kvCacheDtype must be \"f32\", \"f16\" or \"int8\"");
    e.kvInt8 = k == "int8", e.kvF32 = k == "f32", e.kvF16 = k == "f16";
  }
  Napi::Value dev = o.Get("device");
  if (!dev.IsUndefined()) {
    const std::string d = dev.IsString() ? dev.As<Napi::String>().Utf8Value() : "";
    if (d == "cpu") {
      e.device = -1;
    } else if (d.rfind("cuda", 0) == 0) {
      const std::string idx = d.size() > 5 && d[4] == ':' ? d.substr(5) : (d == "cuda" ? "0" : "x");
      if (idx.empty() || idx.find_first_not_of("0123456789") != std::string::npos || idx.size() > 3)
        fail("NATIVE_INVALID_ARG", "options.device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + d + "\"");
      e.device = std::stoi(idx);
    } else {
      fail("NATIVE_INVALID_ARG", "options.device must be \"cpu\", \"cuda\" or \"cuda:N\", got \"" + d + "\"");
    }
  }
  Napi::Value group = o.Get("group");
  if (!group.IsUndefined() && !group.IsNull()) e.comm = collectiveFrom(group);
  return e;
}

std::shared_ptr<BatchIn> parseBatch(const Napi::Value& v) {
  Napi::Object o = asObject(v, "batch");
  auto b = std::make_shared<BatchIn>();
  auto copy = [&](const char* key, std::vector<int32_t>& dst) {
    Napi::Int32Array a = i32(o.Get(key), std::string("batch.") + key);
    dst.assign(a.Data(), a.Data() + a.ElementLength());
  };
  copy("tokens", b->tokens), copy("seqLens", b->seqLens), copy("contextLens", b->contextLens);
  copy("blockTables", b->blockTables);
  b->maxBlocksPerSeq = getInt(o, "maxBlocksPerSeq", "batch", 1);
  Napi::Value lg = o.Get("logits");
  const std::string l = lg.IsString() ? lg.As<Napi::String>().Utf8Value() : "";
  if (l != "last" && l != "all" && l != "hidden")
    fail("NATIVE_INVALID_ARG", "batch.logits must be \"last\", \"all\" or \"hidden\"");
  b->all = l == "all" || l == "hidden";
  b->hidden = l == "hidden";
  Napi::Value cont = o.Get("continues");
  if (!cont.IsUndefined() && !cont.IsBoolean()) fail("NATIVE_INVALID_ARG", "batch.continues must be a boolean");
  b->continues = cont.IsBoolean() && cont.As<Napi::Boolean>().Value();
  return b;
}

/** One sampling object per logits row: {temperature, topK, topP, minP, seed, position}, validated. */
std::vector<SampleParams> parseSampling(const Napi::Value& v, int rows) {
  if (!v.IsArray()) fail("NATIVE_INVALID_ARG", "forwardSample(batch, sampling): sampling must be an array");
  Napi::Array a = v.As<Napi::Array>();
  if ((int)a.Length() != rows)
    fail("NATIVE_INVALID_ARG", "sampling has " + std::to_string(a.Length()) + " entries, expected one per logits row (" +
                                   std::to_string(rows) + ")");
  std::vector<SampleParams> out(rows);
  for (int r = 0; r < rows; r++) {
    const std::string w = "sampling[" + std::to_string(r) + "]";
    Napi::Object o = asObject(a.Get((uint32_t)r), w);
    SampleParams& q = out[r];
    q.temperature = (float)getNumber(o, "temperature", w), q.topK = getInt(o, "topK", w, 0);
    q.topP = (float)getNumber(o, "topP", w), q.minP = (float)getNumber(o, "minP", w);
    const double seed = getNumber(o, "seed", w);
    q.position = getInt(o, "position", w, 0);
    if (!(q.temperature >= 0.f)) fail("NATIVE_INVALID_ARG", w + ".temperature must be >= 0");
    if (!(q.topP > 0.f && q.topP <= 1.f)) fail("NATIVE_INVALID_ARG", w + ".topP must be in (0, 1]");
    if (!(q.minP >= 0.f && q.minP < 1.f)) fail("NATIVE_INVALID_ARG", w + ".minP must be in [0, 1)");
    if (!(seed >= 0 && seed <= 9007199254740991.0) || seed != (double)(uint64_t)seed)
      fail("NATIVE_INVALID_ARG", w + ".seed must be an integer in 0..2^53-1");
    q.seed = (uint64_t)seed;
  }
  return out;
}

class ForwardWorker : public Napi::AsyncWorker {
 public:
  enum Mode { kLogits, kArgmax, kSample };
  /** `out` is a Float32Array of logits (kLogits), or an Int32Array of ids (kArgmax, kSample). */
  ForwardWorker(Napi::Env env, std::shared_ptr<Engine> e, std::shared_ptr<BatchIn> b, Napi::TypedArray out,
                void* data, Mode mode)
      : Napi::AsyncWorker(env, "tpserve.forward"), deferred_(Napi::Promise::Deferred::New(env)), eng_(std::move(e)),
        batch_(std::move(b)), outPtr_(data), mode_(mode) {
    out_ = Napi::Persistent(out.As<Napi::Object>());
  }
  Napi::Promise promise() { return deferred_.Promise(); }
  /** One forward pass of `mode` under the engine's lock (also the polled steps' job). */
  static void run(Engine& eng, const BatchIn& b, Mode mode, void* out) {
    std::lock_guard<std::mutex> lk(eng.mutex());
    if (mode == kArgmax) eng.forwardArgmax(b, static_cast<int32_t*>(out));
    else if (mode == kSample) eng.forwardSample(b, static_cast<int32_t*>(out));
    else eng.forward(b, static_cast<float*>(out));
  }
  void Execute() override {
    std::string message;
    if (!captureErrors([&] { run(*eng_, *batch_, mode_, outPtr_); }, &code_, &message, "forward")) SetError(message);
  }
  void OnOK() override { deferred_.Resolve(out_.Value()); }
  void OnError(const Napi::Error& err) override {
    Napi::Error e = Napi::Error::New(Env(), err.Message());
    e.Set("code", Napi::String::New(Env(), code_));
    deferred_.Reject(e.Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Engine> eng_;
  std::shared_ptr<BatchIn> batch_;
  Napi::Reference<Napi::Object> out_;
  void* outPtr_;
  Mode mode_;
  std::string code_ = "NATIVE_INTERNAL";
};

class EngineWrap : public Napi::ObjectWrap<EngineWrap> {
 public:
  EngineWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<EngineWrap>(info) {
    guard(info.Env(), [&] {
      eng_ = std::make_shared<Engine>(parseOptions(info[0]));
      // Polled steps: on by default for GPU engines (short steps); TPSERVE_POLL_STEPS=0/1 overrides (A/B runs).
      Napi::Value ps = info[0].As<Napi::Object>().Get("pollSteps");
      if (!ps.IsUndefined() && !ps.IsBoolean()) fail("NATIVE_INVALID_ARG", "options.pollSteps must be a boolean");
      poll_ = ps.IsBoolean() ? ps.As<Napi::Boolean>().Value() : eng_->onGpu();
      if (const char* e = std::getenv("TPSERVE_POLL_STEPS")) poll_ = e[0] == '1';
    });
  }

  Napi::Value SetTensor(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      if (!info[0].IsString()) fail("NATIVE_INVALID_ARG", "setTensor(name, tensor): name must be a string");
      const std::string name = info[0].As<Napi::String>().Utf8Value();
      eng_->setTensor(name, parseTensor(info[1], "tensor '" + name + "'"));
      return info.Env().Undefined();
    });
  }

  Napi::Value Finalize(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      eng_->finalize();
      return info.Env().Undefined();
    });
  }

  Napi::Value Forward(const Napi::CallbackInfo& info) { return Start(info, ForwardWorker::kLogits); }
  Napi::Value ForwardArgmax(const Napi::CallbackInfo& info) { return Start(info, ForwardWorker::kArgmax); }
  Napi::Value ForwardSample(const Napi::CallbackInfo& info) { return Start(info, ForwardWorker::kSample); }

  /** A checked batch and the typed array its results go to. */
  struct Prepared {
    std::shared_ptr<BatchIn> batch;
    Napi::TypedArray out;
    void* data;
  };

  Prepared prepare(const Napi::CallbackInfo& info, int argBatch, ForwardWorker::Mode mode) {
    auto b = parseBatch(info[argBatch]);
    const int rows = eng_->validate(*b);
    if (b->hidden && mode != ForwardWorker::kLogits)
      fail("NATIVE_INVALID_ARG", "batch.logits \"hidden\" goes with forward(), not forwardArgmax/forwardSample");
    if (mode == ForwardWorker::kSample) {
      if (!eng_->onGpu())
        fail("NATIVE_INVALID_ARG", "forwardSample needs a GPU engine (device \"cuda\"); on the CPU call forward() "
                                   "and sample the logits in JavaScript");
      b->sampling = parseSampling(info[argBatch + 1], rows);
    }
    if (mode != ForwardWorker::kLogits) {
      Napi::Int32Array out = Napi::Int32Array::New(info.Env(), (size_t)rows);
      return {b, out, out.Data()};
    }
    Napi::Float32Array out =
        Napi::Float32Array::New(info.Env(), (size_t)rows * (b->hidden ? eng_->hiddenSize() : eng_->vocab()));
    return {b, out, out.Data()};
  }

  Napi::Value Start(const Napi::CallbackInfo& info, ForwardWorker::Mode mode) {
    Napi::Env env = info.Env();
    try {
      Prepared p = prepare(info, 0, mode);
      auto* w = new ForwardWorker(env, eng_, p.batch, p.out, p.data, mode);
      Napi::Promise promise = w->promise();
      w->Queue();
      return promise;
    } catch (const NativeError& e) {
      return rejected(env, e.code, e.what());
    } catch (const std::bad_alloc&) {
      return rejected(env, "NATIVE_OOM", "out of memory preparing forward");
    }
  }

  /**
   * startStep(mode, batch, sampling?): with pollSteps on and no step of this engine in flight, starts the step on
   * the Stepper thread and returns [results, flag] (flag[0] becomes 1 at the end; then finishStep()); otherwise
   * undefined, and the caller uses the promise methods. mode: 0 forward, 1 forwardArgmax, 2 forwardSample.
   */
  Napi::Value StartStep(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      Napi::Env env = info.Env();
      const int m = toInt(info[0], "startStep mode", 0, 2);
      if (!poll_ || (stepper_ && stepper_->busy())) return env.Undefined();
      const auto mode = m == 0 ? ForwardWorker::kLogits : m == 1 ? ForwardWorker::kArgmax : ForwardWorker::kSample;
      Prepared p = prepare(info, 1, mode);
      if (!stepper_) {
        stepper_ = std::make_unique<Stepper>();
        Napi::Int32Array flag = Napi::Int32Array::New(env, 1);
        flag_ = Napi::Persistent(flag.As<Napi::Object>());
        flagPtr_ = flag.Data();
      }
      std::shared_ptr<Engine> eng = eng_;
      std::shared_ptr<BatchIn> b = p.batch;
      void* data = p.data;
      auto job = [eng, b, data, mode] { ForwardWorker::run(*eng, *b, mode, data); };
      stepOut_ = Napi::Persistent(p.out.As<Napi::Object>());  // alive until finishStep()
      if (!stepper_->submit(job, flagPtr_)) return env.Undefined();
      Napi::Array r = Napi::Array::New(env, 2);
      r.Set(0u, p.out), r.Set(1u, flag_.Value());
      return r;
    });
  }

  /** finishStep(): after the flag of startStep() turned 1; throws the step's error, if any. */
  Napi::Value FinishStep(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      if (!stepper_) fail("NATIVE_INTERNAL", "finishStep() without startStep()");
      std::string code, message;
      stepper_->finish(&code, &message);
      stepOut_.Reset();
      if (!code.empty()) fail(code.c_str(), message);
      return info.Env().Undefined();
    });
  }

  Napi::Value ForwardSync(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      auto b = parseBatch(info[0]);
      std::lock_guard<std::mutex> lk(eng_->mutex());
      const int rows = eng_->validate(*b);
      Napi::Float32Array out =
          Napi::Float32Array::New(info.Env(), (size_t)rows * (b->hidden ? eng_->hiddenSize() : eng_->vocab()));
      eng_->forward(*b, out.Data());
      return out;
    });
  }

  Napi::Value Follow(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto ran = std::make_shared<bool>(false);
    std::shared_ptr<Engine> eng = eng_;
    return AsyncTask::start(
        env, "tpserve.follow", [eng, ran] { *ran = eng->follow(); },
        [ran](Napi::Env e, const AsyncTask::Kept&) -> Napi::Value { return Napi::Boolean::New(e, *ran); });
  }

  /**
   * followLoop(): runs the leader's steps one after another without coming back to JavaScript between them, until
   * the leader closes the group (resolves to the number of steps) or the group fails (rejects with its code).
   */
  Napi::Value FollowLoop(const Napi::CallbackInfo& info) {
    auto steps = std::make_shared<double>(0);
    std::shared_ptr<Engine> eng = eng_;
    return AsyncTask::start(
        info.Env(), "tpserve.followLoop",
        [eng, steps] {
          while (eng->follow()) *steps += 1;
        },
        [steps](Napi::Env e, const AsyncTask::Kept&) -> Napi::Value { return Napi::Number::New(e, *steps); });
  }

  /** captureSync(batch, layer): (T, captureWidth) inputs of layer's linear layers (engine_quant.cc). */
  Napi::Value CaptureSync(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      auto b = parseBatch(info[0]);
      std::lock_guard<std::mutex> lk(eng_->mutex());
      eng_->validate(*b);
      if (eng_->onGpu()) fail("NATIVE_INVALID_ARG", "captureSync runs on the CPU engine only (device \"cpu\")");
      b->captureLayer = toInt(info[1], "captureSync layer", 0);
      if (b->captureLayer >= eng_->shape().layers)
        fail("NATIVE_INVALID_ARG", "captureSync layer " + std::to_string(b->captureLayer) + " is out of range, the " +
                                       "model has " + std::to_string(eng_->shape().layers) + " layers");
      const size_t T = b->tokens.size();
      Napi::Float32Array out = Napi::Float32Array::New(info.Env(), T * (size_t)captureWidth(eng_->shape()));
      b->capture = out.Data();
      b->all = true, b->hidden = true;  // no LM head needed (forward returns before it anyway)
      std::vector<float> scratch(T * (size_t)eng_->hiddenSize());
      eng_->forward(*b, scratch.data());
      return out;
    });
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      if (eng_->closed()) fail("NATIVE_CLOSED", "engine is closed: create a new Engine");
      Napi::Object o = Napi::Object::New(info.Env());
      o.Set("threads", eng_->threads());
      o.Set("simd", eng_->simd());
      o.Set("weightBytes", (double)eng_->weightBytes());
      o.Set("kvBytes", (double)eng_->kvBytes());
      o.Set("device", eng_->device());
      o.Set("tpRank", eng_->tpRank());
      o.Set("tpSize", eng_->tpWorld());
      o.Set("numPages", eng_->numPages());
      if (eng_->onGpu()) {
        const DeviceMemory m = eng_->deviceMemory();
        Napi::Object mem = Napi::Object::New(info.Env());
        mem.Set("freeBytes", (double)m.freeBytes), mem.Set("totalBytes", (double)m.totalBytes);
        o.Set("deviceMemory", mem);
        long long hits = 0, misses = 0;
        const bool on = eng_->aheadCounts(&hits, &misses);
        Napi::Object ah = Napi::Object::New(info.Env());
        ah.Set("enabled", on), ah.Set("hits", (double)hits), ah.Set("misses", (double)misses);
        o.Set("decodeAhead", ah);
        const KvSizing k = eng_->kvSizing();
        if (k.fraction > 0) {
          Napi::Object z = Napi::Object::New(info.Env());
          z.Set("fraction", k.fraction), z.Set("totalBytes", (double)k.totalBytes);
          z.Set("usedBytes", (double)k.usedBytes), z.Set("reserveBytes", (double)k.reserveBytes);
          z.Set("pageBytes", (double)k.pageBytes);
          o.Set("kvSizing", z);
        }
      }
      return o;
    });
  }

  Napi::Value LimitPages(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      eng_->limitPages(toInt(info[0], "limitPages(n): n", 2));
      return info.Env().Undefined();
    });
  }

  Napi::Value SetProfiling(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      if (!info[0].IsBoolean()) fail("NATIVE_INVALID_ARG", "setProfiling(on): on must be a boolean");
      std::lock_guard<std::mutex> lk(eng_->mutex());
      eng_->setProfiling(info[0].As<Napi::Boolean>().Value());
      return info.Env().Undefined();
    });
  }

  Napi::Value Profile(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      double ms[Engine::kNumOps];
      long long calls[Engine::kNumOps];
      {
        std::lock_guard<std::mutex> lk(eng_->mutex());
        eng_->profile(ms, calls);
      }
      Napi::Object o = Napi::Object::New(info.Env());
      for (int i = 0; i < Engine::kNumOps; i++) {
        if (calls[i] == 0) continue;
        Napi::Object e = Napi::Object::New(info.Env());
        e.Set("ms", ms[i]);
        e.Set("calls", (double)calls[i]);
        o.Set(Engine::opName(i), e);
      }
      return o;
    });
  }

  Napi::Value ResetProfile(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      std::lock_guard<std::mutex> lk(eng_->mutex());
      eng_->resetProfile();
      return info.Env().Undefined();
    });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      eng_->close();
      return info.Env().Undefined();
    });
  }

 private:
  static Napi::Value rejected(Napi::Env env, const std::string& code, const std::string& msg) {
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, code));
    d.Reject(e.Value());
    return d.Promise();
  }
  std::shared_ptr<Engine> eng_;
  bool poll_ = false;
  std::unique_ptr<Stepper> stepper_;  // created at the first polled step
  Napi::ObjectReference flag_, stepOut_;
  int32_t* flagPtr_ = nullptr;
};

}  // namespace

Napi::Function defineEngine(Napi::Env env) {
  return EngineWrap::DefineClass(env, "Engine",
                                 {EngineWrap::InstanceMethod("setTensor", &EngineWrap::SetTensor),
                                  EngineWrap::InstanceMethod("finalize", &EngineWrap::Finalize),
                                  EngineWrap::InstanceMethod("forwardOnPool", &EngineWrap::Forward),
                                  EngineWrap::InstanceMethod("forwardSync", &EngineWrap::ForwardSync),
                                  EngineWrap::InstanceMethod("info", &EngineWrap::Info),
                                  EngineWrap::InstanceMethod("captureSync", &EngineWrap::CaptureSync),
                                  EngineWrap::InstanceMethod("forwardArgmaxOnPool", &EngineWrap::ForwardArgmax),
                                  EngineWrap::InstanceMethod("forwardSampleOnPool", &EngineWrap::ForwardSample),
                                  EngineWrap::InstanceMethod("startStep", &EngineWrap::StartStep),
                                  EngineWrap::InstanceMethod("finishStep", &EngineWrap::FinishStep),
                                  EngineWrap::InstanceMethod("setProfiling", &EngineWrap::SetProfiling),
                                  EngineWrap::InstanceMethod("profile", &EngineWrap::Profile),
                                  EngineWrap::InstanceMethod("resetProfile", &EngineWrap::ResetProfile),
                                  EngineWrap::InstanceMethod("follow", &EngineWrap::Follow),
                                  EngineWrap::InstanceMethod("followLoop", &EngineWrap::FollowLoop),
                                  EngineWrap::InstanceMethod("limitPages", &EngineWrap::LimitPages),
                                  EngineWrap::InstanceMethod("close", &EngineWrap::Close)});
}

}  // namespace tpserve
