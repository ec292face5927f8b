// JS class TpGroup: one rank's membership of a tensor-parallel group over shared memory (ShmCollective). The
// engine takes it as options.group; the collectives are also callable from JS (tests, benchmarks).
#include <memory>

#include "async_task.h"
#include "collective_shm.h"
#include "napi_util.h"

namespace tpserve {
namespace {

class TpGroupWrap : public Napi::ObjectWrap<TpGroupWrap> {
 public:
  TpGroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<TpGroupWrap>(info) {
    guard(info.Env(), [&] {
      Napi::Object o = asObject(info[0], "options");
      Napi::Value name = o.Get("name");
      if (!name.IsString()) fail("NATIVE_TP_CONFIG", "options.name must be a string");
      opts_.name = name.As<Napi::String>().Utf8Value();
      if (opts_.name.empty() || opts_.name.size() > 200 ||
          opts_.name.find_first_not_of("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") !=
              std::string::npos)
        fail("NATIVE_TP_CONFIG", "options.name '" + opts_.name + "' must be 1..200 characters of A-Z a-z 0-9 . _ -");
      opts_.world = getInt(o, "world", "options", 1, 64);
      opts_.rank = getInt(o, "rank", "options", 0, opts_.world - 1);
      Napi::Value t = o.Get("timeoutMs");
      opts_.timeoutMs = t.IsUndefined() ? 10000 : toInt(t, "options.timeoutMs", 1);
      Napi::Value j = o.Get("joinTimeoutMs");
      joinTimeoutMs_ = j.IsUndefined() ? 60000 : toInt(j, "options.joinTimeoutMs", 1);
      Napi::Value sb = o.Get("slotBytes");
      opts_.slotBytes = sb.IsUndefined() ? (1u << 20) : (size_t)toInt(sb, "options.slotBytes", 4096, 256 << 20);
      info.This().As<Napi::Object>().Set("rank", opts_.rank);
      info.This().As<Napi::Object>().Set("world", opts_.world);
    });
  }

  std::shared_ptr<ShmCollective> joined() const {
    if (!comm_) fail("NATIVE_TP_CONFIG", "tp group '" + opts_.name + "' is not joined: await group.join() first");
    return comm_;
  }

  Napi::Value Join(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (joining_ || comm_) return reject(env, "NATIVE_TP_CONFIG", "join() was already called on this group");
    joining_ = true;
    auto slot = std::make_shared<std::shared_ptr<ShmCollective>>();
    const ShmOptions o = opts_;
    const long jt = joinTimeoutMs_;
    Napi::Object self = info.This().As<Napi::Object>();
    return AsyncTask::start(
        env, "tpserve.tpJoin",
        [slot, o, jt] {
          auto c = std::make_shared<ShmCollective>(o, jt);
          c->join(jt);
          *slot = c;
        },
        [this, slot](Napi::Env e, const AsyncTask::Kept&) -> Napi::Value {
          comm_ = *slot;
          return e.Undefined();
        },
        {self});
  }

  Napi::Value AllReduceSum(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      auto c = joined();
      Napi::Float32Array a = f32(info[0], "allReduceSum(x): x");
      float* d = a.Data();
      const size_t n = a.ElementLength();
      return AsyncTask::start(
          env, "tpserve.allReduce", [c, d, n] { c->allReduceSum(d, n); }, [](Napi::Env, const AsyncTask::Kept& k) -> Napi::Value { return k[0].Value(); }, {a});
    } catch (const NativeError& e) {
      return reject(env, e.code, e.what());
    }
  }

  Napi::Value AllGather(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      auto c = joined();
      Napi::Uint8Array a = u8(info[0], "allGather(x): x");
      Napi::Uint8Array out = Napi::Uint8Array::New(env, a.ByteLength() * c->world());
      const uint8_t* in = a.Data();
      uint8_t* o = out.Data();
      const size_t n = a.ByteLength();
      return AsyncTask::start(
          env, "tpserve.allGather", [c, in, n, o] { c->allGather(in, n, o); }, [](Napi::Env, const AsyncTask::Kept& k) -> Napi::Value { return k[1].Value(); },
          {a, out});
    } catch (const NativeError& e) {
      return reject(env, e.code, e.what());
    }
  }

  Napi::Value Broadcast(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    try {
      auto c = joined();
      Napi::Uint8Array a = u8(info[0], "broadcast(x, root): x");
      const int root = toInt(info[1], "broadcast(x, root): root", 0, c->world() - 1);
      const long wait = info[2].IsUndefined() ? -1 : toInt(info[2], "broadcast(x, root, waitMs): waitMs", 0);
      uint8_t* d = a.Data();
      const size_t n = a.ByteLength();
      return AsyncTask::start(
          env, "tpserve.broadcast", [c, d, n, root, wait] { c->broadcast(d, n, root, wait); },
          [](Napi::Env, const AsyncTask::Kept& k) -> Napi::Value { return k[0].Value(); }, {a});
    } catch (const NativeError& e) {
      return reject(env, e.code, e.what());
    }
  }

  Napi::Value Abort(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      const std::string why = info[0].IsString() ? info[0].As<Napi::String>().Utf8Value() : "aborted";
      joined()->abort(why);
      return info.Env().Undefined();
    });
  }

  Napi::Value Failure(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value { return Napi::String::New(info.Env(), joined()->failure()); });
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    comm_.reset();  // an engine built on this group keeps its own reference
    return info.Env().Undefined();
  }

 private:
  static Napi::Value reject(Napi::Env env, const std::string& code, const std::string& msg) {
    auto d = Napi::Promise::Deferred::New(env);
    Napi::Error e = Napi::Error::New(env, msg);
    e.Set("code", Napi::String::New(env, code));
    d.Reject(e.Value());
    return d.Promise();
  }
  ShmOptions opts_;
  long joinTimeoutMs_ = 60000;
  bool joining_ = false;
  std::shared_ptr<ShmCollective> comm_;
};

/** Per-environment data of the addon (napi instance data): the TpGroup constructor, for instanceof checks. */
struct AddonData {
  Napi::FunctionReference tpGroup;
};

}  // namespace

std::shared_ptr<Collective> collectiveFrom(const Napi::Value& v) {
  AddonData* d = v.Env().GetInstanceData<AddonData>();
  if (!v.IsObject() || !d || !v.As<Napi::Object>().InstanceOf(d->tpGroup.Value()))
    fail("NATIVE_INVALID_ARG", "options.group must be a TpGroup");
  return TpGroupWrap::Unwrap(v.As<Napi::Object>())->joined();
}

Napi::Function defineTpGroup(Napi::Env env) {
  Napi::Function f = TpGroupWrap::DefineClass(env, "TpGroup",
                                              {TpGroupWrap::InstanceMethod("join", &TpGroupWrap::Join),
                                               TpGroupWrap::InstanceMethod("allReduceSum", &TpGroupWrap::AllReduceSum),
                                               TpGroupWrap::InstanceMethod("allGather", &TpGroupWrap::AllGather),
                                               TpGroupWrap::InstanceMethod("broadcast", &TpGroupWrap::Broadcast),
                                               TpGroupWrap::InstanceMethod("abort", &TpGroupWrap::Abort),
                                               TpGroupWrap::InstanceMethod("failure", &TpGroupWrap::Failure),
                                               TpGroupWrap::InstanceMethod("close", &TpGroupWrap::Close)});
  auto* d = new AddonData{Napi::Persistent(f)};
  env.SetInstanceData<AddonData>(d);  // freed with the environment
  return f;
}

}  // namespace tpserve
