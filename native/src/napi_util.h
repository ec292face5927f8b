// Helpers shared by the bindings: argument checking and C++ -> JS error conversion.
#pragma once
#include <napi.h>

#include <new>
#include <string>

#include "engine.h"
#include "errors.h"

namespace tpserve {

[[noreturn]] inline void throwJs(Napi::Env env, const std::string& code, const std::string& msg) {
  Napi::Error e = Napi::Error::New(env, msg);
  e.Set("code", Napi::String::New(env, code));
  throw e;
}

/** Runs f, turning every C++ exception into a JS Error with a NATIVE_* code. */
template <class F>
auto guard(Napi::Env env, F&& f) -> decltype(f()) {
  try {
    return f();
  } catch (const Napi::Error&) {
    throw;
  } catch (const NativeError& e) {
    throwJs(env, e.code, e.what());
  } catch (const std::bad_alloc&) {
    throwJs(env, "NATIVE_OOM", "out of memory");
  } catch (const std::exception& e) {
    throwJs(env, "NATIVE_INTERNAL", std::string("internal error: ") + e.what());
  }
}

inline Napi::Object asObject(const Napi::Value& v, const std::string& what) {
  if (!v.IsObject()) fail("NATIVE_INVALID_ARG", what + " must be an object");
  return v.As<Napi::Object>();
}

inline double getNumber(const Napi::Object& o, const char* key, const std::string& what) {
  Napi::Value v = o.Get(key);
  if (!v.IsNumber()) fail("NATIVE_INVALID_ARG", what + "." + key + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

inline int toInt(const Napi::Value& v, const std::string& what, long long lo = 0, long long hi = 2147483647LL) {
  if (!v.IsNumber()) fail("NATIVE_INVALID_ARG", what + " must be an integer");
  const double d = v.As<Napi::Number>().DoubleValue();
  if (!(d == (double)(long long)d) || d < (double)lo || d > (double)hi)
    fail("NATIVE_INVALID_ARG", what + " must be an integer in " + std::to_string(lo) + ".." + std::to_string(hi) +
                                   ", got " + std::to_string(d));
  return (int)d;
}

inline int getInt(const Napi::Object& o, const char* key, const std::string& what, long long lo = 0,
                  long long hi = 2147483647LL) {
  return toInt(o.Get(key), what + "." + key, lo, hi);
}

template <class T>
inline Napi::TypedArrayOf<T> typed(const Napi::Value& v, napi_typedarray_type type, const std::string& what,
                                   const char* tname) {
  if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != type)
    fail("NATIVE_INVALID_ARG", what + " must be a " + tname);
  return v.As<Napi::TypedArrayOf<T>>();
}

inline Napi::Float32Array f32(const Napi::Value& v, const std::string& what) {
  return typed<float>(v, napi_float32_array, what, "Float32Array");
}
inline Napi::Int32Array i32(const Napi::Value& v, const std::string& what) {
  return typed<int32_t>(v, napi_int32_array, what, "Int32Array");
}
inline Napi::Uint8Array u8(const Napi::Value& v, const std::string& what) {
  return typed<uint8_t>(v, napi_uint8_array, what, "Uint8Array");
}

/** Reads a WeightTensor; pointers stay valid while the JS value is alive (the current call). */
/** Fields of an NF4 tensor (native/index.ts Nf4Tensor); pointers stay valid for the call. */
inline void parseNf4(Napi::Object o, const std::string& what, TensorIn& t) {
  t.nf4 = true;
  t.rows = getInt(o, "rows", what, 1), t.cols = getInt(o, "cols", what, 1), t.block = getInt(o, "blockSize", what, 1);
  Napi::Uint8Array q = u8(o.Get("qweight"), what + ".qweight");
  t.data = q.Data(), t.dataBytes = q.ByteLength();
  Napi::Float32Array lv = f32(o.Get("levels"), what + ".levels");
  t.levels = lv.Data(), t.numLevels = lv.ElementLength();
  Napi::Value am = o.Get("absmax");
  if (!am.IsUndefined()) {
    Napi::Float32Array a = f32(am, what + ".absmax");
    t.absmax = a.Data(), t.numAbsmax = a.ElementLength();
    return;
  }
  Napi::Uint8Array aq = u8(o.Get("absmaxCodes"), what + ".absmaxCodes (or absmax)");
  t.absq = aq.Data(), t.numAbsq = aq.ByteLength();
  Napi::Float32Array sc = f32(o.Get("absmaxScales"), what + ".absmaxScales");
  t.absScale = sc.Data(), t.numAbsScale = sc.ElementLength();
  Napi::Float32Array nm = f32(o.Get("absmaxMap"), what + ".absmaxMap");
  t.nested = nm.Data(), t.numNested = nm.ElementLength();
  t.absOffset = (float)getNumber(o, "absmaxOffset", what);
}

inline TensorIn parseTensor(const Napi::Value& v, const std::string& what) {
  Napi::Object o = asObject(v, what);
  TensorIn t;
  Napi::Value kind = o.Get("kind");
  const std::string k = kind.IsString() ? kind.As<Napi::String>().Utf8Value() : "";
  if (k == "dense") {
    Napi::Value dt = o.Get("dtype");
    t.dtype = dt.IsString() ? dt.As<Napi::String>().Utf8Value() : "";
    Napi::Value sh = o.Get("shape");
    if (!sh.IsArray()) fail("NATIVE_INVALID_ARG", what + ".shape must be an array of integers");
    Napi::Array a = sh.As<Napi::Array>();
    for (uint32_t i = 0; i < a.Length(); i++)
      t.shape.push_back(toInt(a.Get(i), what + ".shape[" + std::to_string(i) + "]", 1));
    Napi::Uint8Array d = u8(o.Get("data"), what + ".data");
    t.data = d.Data(), t.dataBytes = d.ByteLength();
  } else if (k == "int4") {
    t.int4 = true;
    t.rows = getInt(o, "rows", what, 1), t.cols = getInt(o, "cols", what, 1), t.group = getInt(o, "groupSize", what, 1);
    Napi::Uint8Array q = u8(o.Get("qweight"), what + ".qweight");
    t.data = q.Data(), t.dataBytes = q.ByteLength();
    Napi::Float32Array s = f32(o.Get("scales"), what + ".scales");
    t.scales = s.Data(), t.numScales = s.ElementLength();
    Napi::Value z = o.Get("zeros");
    if (!z.IsUndefined() && !z.IsNull()) {
      Napi::Uint8Array zz = u8(z, what + ".zeros");
      t.zeros = zz.Data(), t.numZeros = zz.ByteLength();
    }
    Napi::Value pm = o.Get("perm");
    if (!pm.IsUndefined() && !pm.IsNull()) {
      Napi::Int32Array pp = i32(pm, what + ".perm");
      t.perm = pp.Data(), t.numPerm = pp.ElementLength();
      Napi::Value pc = o.Get("permCols");
      if (!pc.IsUndefined() && !pc.IsNull()) t.permCols = getInt(o, "permCols", what, 1);
    }
  } else if (k == "nf4") {
    parseNf4(o, what, t);
  } else {
    fail("NATIVE_INVALID_ARG", what + ".kind must be \"dense\", \"int4\" or \"nf4\"");
  }
  return t;
}

Napi::Function defineEngine(Napi::Env env);
Napi::Function defineTpGroup(Napi::Env env);
/** The joined collective behind a JS TpGroup (options.group of an Engine). */
std::shared_ptr<Collective> collectiveFrom(const Napi::Value& v);
Napi::Object makeKernels(Napi::Env env);

}  // namespace tpserve
