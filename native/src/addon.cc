// Module entry: Engine class, single kernels (synchronous, one thread) and buildInfo().
#include <vector>

#include "napi_util.h"

#ifdef TPSERVE_WITH_CUDA
extern "C" int tpserve_cuda_device_count();
#endif

namespace tpserve {
namespace {

Napi::Value RmsNorm(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array x = f32(info[0], "rmsNorm x"), w = f32(info[1], "rmsNorm weight");
    const int rows = toInt(info[2], "rmsNorm rows", 1);
    if (!info[3].IsNumber()) fail("NATIVE_INVALID_ARG", "rmsNorm eps must be a number");
    const size_t cols = w.ElementLength();
    if (cols == 0 || x.ElementLength() != (size_t)rows * cols)
      fail("NATIVE_SHAPE", "rmsNorm: x has " + std::to_string(x.ElementLength()) + " elements, expected rows * " +
                               "weight.length = " + std::to_string((size_t)rows * cols));
    Napi::Float32Array y = Napi::Float32Array::New(info.Env(), x.ElementLength());
    rmsNormRows(x.Data(), w.Data(), y.Data(), rows, (int)cols, info[3].As<Napi::Number>().FloatValue());
    return y;
  });
}

Napi::Value Matmul(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array x = f32(info[0], "matmul x");
    const int m = toInt(info[1], "matmul m", 1);
    TensorIn t = parseTensor(info[2], "matmul w");
    Weight w;
    if (t.nf4) {
      loadNf4(t, "matmul w", w);
    } else if (t.int4) {
      loadInt4(t, "matmul w", w);
    } else {
      if (t.shape.size() != 2) fail("NATIVE_SHAPE", "matmul w: dense weight must be 2-D (out, in)");
      if (t.dtype == "bf16") keepBf16(t, "matmul w", w.b);  // the engine's bf16 path
      else toFloat32(t, "matmul w", w.f);
      w.rows = (int)t.shape[0], w.cols = (int)t.shape[1];
    }
    const size_t in = (size_t)w.inputCols();
    if (x.ElementLength() != (size_t)m * in)
      fail("NATIVE_SHAPE", "matmul: x has " + std::to_string(x.ElementLength()) + " elements, expected m * in = " +
                               std::to_string((size_t)m * in));
    Napi::Float32Array y = Napi::Float32Array::New(info.Env(), (size_t)m * w.rows);
    const Simd s = activeSimd();
    if (w.nf4.present) {
      gemmNf4(kernelsFor(s), x.Data(), m, w, y.Data(), w.rows, 0, w.rows);
    } else if (w.int4) {
      const KernelTable& kt = int4KernelsFor(s, w.group);
      std::vector<float> xp((size_t)m * w.cols), xs((size_t)m * (w.cols / w.group)), permBuf;
      kt.prepI4(permuteInput(w, x.Data(), m, permBuf), m, w.cols, w.group, xp.data(), xs.data());
      kt.gemmI4(xp.data(), xs.data(), m, w.view(), y.Data(), w.rows, 0, w.rows);
    } else {
      if (!w.b.empty()) kernelsFor(s).gemmBf16(x.Data(), m, w.cols, w.b.data(), y.Data(), w.rows, 0, w.rows);
      else kernelsFor(s).gemmF32(x.Data(), m, w.cols, w.f.data(), y.Data(), w.rows, 0, w.rows);
    }
    return y;
  });
}

Napi::Value Rope(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array x = f32(info[0], "rope x");
    Napi::Int32Array pos = i32(info[1], "rope positions");
    const int heads = toInt(info[2], "rope numHeads", 1), hd = toInt(info[3], "rope headDim", 2, 1024);
    if (hd % 2) fail("NATIVE_INVALID_ARG", "rope headDim must be even");
    if (!info[4].IsNumber()) fail("NATIVE_INVALID_ARG", "rope theta must be a number");
    const size_t T = pos.ElementLength();
    if (x.ElementLength() != T * heads * hd)
      fail("NATIVE_SHAPE", "rope: x has " + std::to_string(x.ElementLength()) +
                               " elements, expected positions.length * numHeads * headDim = " +
                               std::to_string(T * heads * hd));
    std::vector<float> cs(T * hd / 2), sn(T * hd / 2);
    ropeTables(pos.Data(), (int)T, hd, info[4].As<Napi::Number>().FloatValue(), cs.data(), sn.data());
    ropeApply(x.Data(), (int)T, heads, hd, heads * hd, cs.data(), sn.data());
    return x;
  });
}

Napi::Value SiluMul(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Float32Array g = f32(info[0], "siluMul gate"), u = f32(info[1], "siluMul up");
    if (g.ElementLength() != u.ElementLength())
      fail("NATIVE_SHAPE", "siluMul: gate has " + std::to_string(g.ElementLength()) + " elements but up has " +
                               std::to_string(u.ElementLength()));
    Napi::Float32Array y = Napi::Float32Array::New(info.Env(), g.ElementLength());
    siluMul(g.Data(), u.Data(), y.Data(), g.ElementLength());
    return y;
  });
}

Napi::Value PagedAttention(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    Napi::Object o = asObject(info[0], "pagedAttention args");
    const std::string w = "pagedAttention";
    Napi::Float32Array q = f32(o.Get("q"), w + ".q"), kc = f32(o.Get("kCache"), w + ".kCache");
    Napi::Float32Array vc = f32(o.Get("vCache"), w + ".vCache");
    Napi::Int32Array bt = i32(o.Get("blockTable"), w + ".blockTable");
    AttnArgs a{};
    a.qLen = getInt(o, "qLen", w, 1), a.numHeads = getInt(o, "numHeads", w, 1);
    a.numKvHeads = getInt(o, "numKvHeads", w, 1), a.headDim = getInt(o, "headDim", w, 1);
    a.blockSize = getInt(o, "blockSize", w, 1), a.contextLen = getInt(o, "contextLen", w, 1);
    if (a.numHeads % a.numKvHeads) fail("NATIVE_INVALID_ARG", w + ": numHeads must be a multiple of numKvHeads");
    if (q.ElementLength() != (size_t)a.qLen * a.numHeads * a.headDim)
      fail("NATIVE_SHAPE", w + ": q has " + std::to_string(q.ElementLength()) + " elements, expected qLen*numHeads*" +
                               "headDim = " + std::to_string((size_t)a.qLen * a.numHeads * a.headDim));
    const size_t page = (size_t)a.blockSize * a.numKvHeads * a.headDim;
    if (kc.ElementLength() == 0 || kc.ElementLength() % page || vc.ElementLength() != kc.ElementLength())
      fail("NATIVE_SHAPE", w + ": kCache and vCache must have the same length, a multiple of blockSize*numKvHeads*" +
                               "headDim = " + std::to_string(page));
    const size_t numPages = kc.ElementLength() / page;
    if (a.contextLen < a.qLen) fail("NATIVE_INVALID_ARG", w + ": contextLen must be >= qLen");
    const size_t blocks = ((size_t)a.contextLen + a.blockSize - 1) / a.blockSize;
    if (blocks > bt.ElementLength())
      fail("NATIVE_PAGE_RANGE", w + ": contextLen " + std::to_string(a.contextLen) + " needs " +
                                    std::to_string(blocks) + " pages but blockTable has " +
                                    std::to_string(bt.ElementLength()));
    for (size_t j = 0; j < blocks; j++)
      if (bt.Data()[j] <= 0 || (size_t)bt.Data()[j] >= numPages)
        fail("NATIVE_PAGE_RANGE", w + ": blockTable[" + std::to_string(j) + "] = " + std::to_string(bt.Data()[j]) +
                                      ", expected 1.." + std::to_string(numPages - 1) + " (page 0 is reserved)");
    Napi::Float32Array out = Napi::Float32Array::New(info.Env(), q.ElementLength());
    a.q = q.Data(), a.out = out.Data(), a.k = kc.Data(), a.v = vc.Data(), a.blockTable = bt.Data();
    a.qStride = a.numHeads * a.headDim;
    std::vector<float> scratch(a.contextLen);
    const KernelTable& kt = kernelsFor(activeSimd());
    for (int t = 0; t < a.qLen; t++)
      for (int h = 0; h < a.numHeads; h++) kt.attention(a, t, h, scratch.data());
    return out;
  });
}

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("simd", simdName(activeSimd()));
#ifdef TPSERVE_WITH_CUDA
  o.Set("cuda", true);
  o.Set("cudaDevices", tpserve_cuda_device_count());
#else
  o.Set("cuda", false);
  o.Set("cudaDevices", 0);
#endif
  o.Set("version", "0.1.0");
  return o;
}

}  // namespace

Napi::Object makeKernels(Napi::Env env) {
  Napi::Object k = Napi::Object::New(env);
  k.Set("rmsNorm", Napi::Function::New(env, RmsNorm, "rmsNorm"));
  k.Set("matmul", Napi::Function::New(env, Matmul, "matmul"));
  k.Set("rope", Napi::Function::New(env, Rope, "rope"));
  k.Set("siluMul", Napi::Function::New(env, SiluMul, "siluMul"));
  k.Set("pagedAttention", Napi::Function::New(env, PagedAttention, "pagedAttention"));
  return k;
}

Napi::Object init(Napi::Env env, Napi::Object exports) {
  exports.Set("Engine", defineEngine(env));
  exports.Set("TpGroup", defineTpGroup(env));
  exports.Set("kernels", makeKernels(env));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo, "buildInfo"));
  return exports;
}

}  // namespace tpserve

static Napi::Object TpserveInit(Napi::Env env, Napi::Object exports) { return tpserve::init(env, exports); }

NODE_API_MODULE(tpserve_native, TpserveInit)
