// Engine construction, tensor loading and finalize().
#include "engine.h"

#include <algorithm>
#include <cstring>
#include <new>
#include <thread>

#include "errors.h"
#include "gpu_model.h"

namespace tpserve {

static float f16ToF32(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16;
  uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: renormalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400)) {
        man <<= 1;
        exp--;
      }
      bits = sign | (exp << 23) | ((man & 0x3ff) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  float f;
  std::memcpy(&f, &bits, 4);
  return f;
}

void toFloat32(const TensorIn& t, const std::string& name, std::vector<float>& out) {
  size_t n = 1;
  for (int64_t d : t.shape) {
    if (d <= 0) fail("NATIVE_SHAPE", "tensor '" + name + "': every dimension must be a positive integer");
    n *= (size_t)d;
  }
  const size_t es = t.dtype == "f32" ? 4 : 2;
  if (t.dtype != "f32" && t.dtype != "f16" && t.dtype != "bf16")
    fail("NATIVE_INVALID_ARG", "tensor '" + name + "': dtype '" + t.dtype + "' is not one of f32, f16, bf16");
  if (t.dataBytes != n * es)
    fail("NATIVE_SHAPE", "tensor '" + name + "': data has " + std::to_string(t.dataBytes) + " bytes, expected " +
                             std::to_string(n * es) + " (" + std::to_string(n) + " " + t.dtype + " elements)");
  out.resize(n);
  if (t.dtype == "f32") {
    std::memcpy(out.data(), t.data, n * 4);
  } else {
    for (size_t i = 0; i < n; i++) {
      uint16_t v;
      std::memcpy(&v, t.data + 2 * i, 2);
      if (t.dtype == "bf16") {
        const uint32_t bits = (uint32_t)v << 16;
        std::memcpy(&out[i], &bits, 4);
      } else {
        out[i] = f16ToF32(v);
      }
    }
  }
}

void keepBf16(const TensorIn& t, const std::string& name, std::vector<uint16_t>& out) {
  size_t n = 1;
  for (int64_t d : t.shape) {
    if (d <= 0) fail("NATIVE_SHAPE", "tensor '" + name + "': every dimension must be a positive integer");
    n *= (size_t)d;
  }
  if (t.dataBytes != n * 2)
    fail("NATIVE_SHAPE", "tensor '" + name + "': data has " + std::to_string(t.dataBytes) + " bytes, expected " +
                             std::to_string(n * 2) + " (" + std::to_string(n) + " bf16 elements)");
  out.resize(n);
  std::memcpy(out.data(), t.data, n * 2);
}

void Weight::rowF32(size_t r, float* out) const {
  const size_t c = (size_t)cols;
  if (!b.empty()) {
    for (size_t i = 0; i < c; i++) {
      const uint32_t bits = (uint32_t)b[r * c + i] << 16;
      std::memcpy(&out[i], &bits, 4);
    }
  } else {
    std::memcpy(out, &f[r * c], c * sizeof(float));
  }
}

void loadInt4(const TensorIn& t, const std::string& name, Weight& w) {
  const std::string p = "int4 tensor '" + name + "': ";
  if (t.rows <= 0 || t.cols <= 0) fail("NATIVE_SHAPE", p + "rows and cols must be positive");
  if (t.group <= 0 || t.group % 2 != 0 || t.cols % t.group != 0)
    fail("NATIVE_SHAPE", p + "groupSize " + std::to_string(t.group) + " must be even and divide cols " +
                             std::to_string(t.cols));
  const size_t ng = (size_t)t.cols / t.group;
  const size_t qb = (size_t)t.rows * t.cols / 2;
  if (t.dataBytes != qb)
    fail("NATIVE_SHAPE", p + "qweight has " + std::to_string(t.dataBytes) + " bytes, expected rows*cols/2 = " +
                             std::to_string(qb));
  if (t.numScales != (size_t)t.rows * ng)
    fail("NATIVE_SHAPE", p + "scales has " + std::to_string(t.numScales) + " floats, expected rows*cols/groupSize = " +
                             std::to_string((size_t)t.rows * ng));
  if (t.zeros && t.numZeros != (size_t)t.rows * ng)
    fail("NATIVE_SHAPE", p + "zeros has " + std::to_string(t.numZeros) + " bytes, expected rows*cols/groupSize = " +
                             std::to_string((size_t)t.rows * ng));
  // 16 is legal: GPTQ v1 checkpoints store zero-1 in 4 bits, so a stored 15 means 16 (docs/quantization.md).
  if (t.zeros)
    for (size_t i = 0; i < t.numZeros; i++)
      if (t.zeros[i] > 16) fail("NATIVE_INVALID_ARG", p + "zeros[" + std::to_string(i) + "] is above 16");
  loadPerm(t, p, w);
  w.int4 = true;
  w.rows = t.rows, w.cols = t.cols, w.group = t.group;
  w.q.assign(t.data, t.data + qb);
  w.scales.assign(t.scales, t.scales + t.numScales);
  if (t.zeros) w.zeros.assign(t.zeros, t.zeros + t.numZeros);
  else w.zeros.clear();
  w.f.clear();
  w.f.shrink_to_fit();
}

static void checkPositive(const char* what, long long v, long long max = 1LL << 30) {
  if (v <= 0 || v > max)
    fail("NATIVE_INVALID_ARG", std::string(what) + " is " + std::to_string(v) + ", expected 1.." + std::to_string(max));
}

Engine::Engine(const EngineOptions& o) : o_(o), simd_(activeSimd()) {
  const ModelShape& s = o.s;
  checkPositive("shape.vocabSize", s.vocab);
  checkPositive("shape.hiddenSize", s.hidden);
  checkPositive("shape.intermediateSize", s.inter);
  checkPositive("shape.numLayers", s.layers, 4096);
  checkPositive("shape.numHeads", s.heads, 4096);
  checkPositive("shape.numKvHeads", s.kvHeads, 4096);
  checkPositive("shape.headDim", s.headDim, 1024);
  if (s.headDim % 2) fail("NATIVE_INVALID_ARG", "shape.headDim must be even, got " + std::to_string(s.headDim));
  if (s.heads % s.kvHeads)
    fail("NATIVE_INVALID_ARG", "shape.numHeads (" + std::to_string(s.heads) + ") must be a multiple of numKvHeads (" +
                                   std::to_string(s.kvHeads) + ")");
  if (!(s.eps >= 0.f)) fail("NATIVE_INVALID_ARG", "shape.rmsNormEps must be >= 0");
  if (!(s.theta > 0.f)) fail("NATIVE_INVALID_ARG", "shape.ropeTheta must be > 0");
  if (o.numPages == 0 && o.device < 0)
    fail("NATIVE_INVALID_ARG", "numPages 0 (a KV pool sized from GPU memory) needs a CUDA device; the CPU engine "
                               "takes numPages >= 2 (the worker's --kv-cache-mib or --num-pages)");
  if (o.numPages == 0 && !(o.gpuMemoryUtilization > 0 && o.gpuMemoryUtilization <= 1))
    fail("NATIVE_INVALID_ARG", "numPages 0 sizes the KV pool from gpuMemoryUtilization, which must be in (0, 1], "
                               "got " + std::to_string(o.gpuMemoryUtilization));
  if (o.numPages != 0 && o.gpuMemoryUtilization != 0)
    fail("NATIVE_INVALID_ARG", "gpuMemoryUtilization goes with numPages 0 (size the pool from GPU memory); with "
                               "numPages " + std::to_string(o.numPages) + " leave it out");
  if (o.numPages != 0 && o.numPages < 2)
    fail("NATIVE_INVALID_ARG", "numPages must be >= 2 (page 0 is reserved), or 0 on a GPU to size the pool from "
                               "gpuMemoryUtilization, got " + std::to_string(o.numPages));
  checkPositive("blockSize", o.blockSize, 1 << 16);
  if (o.maxContext < 0) fail("NATIVE_INVALID_ARG", "maxContext must be >= 0 (0: the pool's), got " + std::to_string(o.maxContext));
  checkPositive("maxBatchTokens", o.maxBatchTokens, 1 << 20);
  if (o.threads < 0 || o.threads > 1024) fail("NATIVE_INVALID_ARG", "threads must be 0..1024");
  const int threads = o.threads > 0 ? o.threads : (int)std::max(1u, std::thread::hardware_concurrency());
  if (o.device >= 0 && (o.kvInt8 || o.kvF32))
    fail("NATIVE_INVALID_ARG", std::string("kvCacheDtype \"") + (o.kvInt8 ? "int8" : "f32") +
                                   "\" runs on the CPU engine only; the GPU engine keeps its KV cache in f16 (leave "
                                   "it out or pass f16)");
  if (o.device < 0 && o.kvF16)
    fail("NATIVE_INVALID_ARG", "kvCacheDtype \"f16\" runs on the GPU engine only; the CPU engine keeps f32 or int8");
  ls_ = s;
  if (o.comm && o.comm->world() > 1) {
    comm_ = o.comm, rank_ = comm_->rank(), world_ = comm_->world();
    setupShards();
  }
  if (o.device >= 0) {  // the GPU holds the KV pool and workspaces; the host keeps only staging copies
    gpu_ = createGpuModel(o, o.device, ls_, vocabBegin_);
    layers_.resize(s.layers);
    if (o.numPages > 0) setPages(o.numPages);  // else finalize sizes the pool
    return;
  }
  const ModelShape& l = ls_;  // this rank's shard
  const size_t T = o.maxBatchTokens, H = s.hidden, qd = (size_t)l.heads * l.headDim, kvd = (size_t)l.kvHeads * l.headDim;
  setPages(o.numPages);
  const double kvFloats = 2.0 * s.layers * (double)o.numPages * o.blockSize * kvd;
  if (kvFloats > 1.5e10)
    fail("NATIVE_OOM", "KV pool of " + std::to_string((long long)(kvFloats * 4 / 1e6)) +
                           " MB is too large: lower numPages or blockSize");
  try {
    if (o.kvInt8) {
      kv8_.assign((size_t)kvFloats, 0);
      kvScale_.assign((size_t)kvFloats / s.headDim, 0.f);
    } else {
      kv_.assign((size_t)kvFloats, 0.f);
    }
    const size_t maxK = std::max({H, qd, (size_t)l.inter});
    x_.resize(T * H), h_.resize(T * H), h2_.resize(T * H);
    q_.resize(T * qd), k_.resize(T * kvd), v_.resize(T * kvd), att_.resize(T * qd);
    gate_.resize(T * l.inter), up_.resize(T * l.inter);
    if (world_ > 1) lmLocal_.resize(T * l.vocab), gathered_.resize(T * (size_t)s.vocab);
    cos_.resize(T * s.headDim / 2), sin_.resize(T * s.headDim / 2);
    scratch_.resize((size_t)threads * maxCtx_);
    for (int i = 0; i < 3; i++) xp_[i].resize(T * maxK), xsum_[i].resize(T * maxK / 2);
    pos_.resize(T), seqOf_.resize(T);
    args_.reserve(T);
    layers_.resize(s.layers);
  } catch (const std::bad_alloc&) {
    fail("NATIVE_OOM", "could not allocate the KV pool (" + std::to_string((long long)(kvFloats * 4 / 1e6)) +
                           " MB) and workspaces: lower numPages, blockSize or maxBatchTokens");
  }
  pool_ = std::make_unique<ThreadPool>(threads);
}

Weight* Engine::lookup(const std::string& name, int& r, int& c, bool& matrix) {
  const ModelShape& s = ls_;  // shapes of this rank's shard
  const int qd = s.heads * s.headDim, kvd = s.kvHeads * s.headDim;
  matrix = true;
  if (name == "embed") return r = s.vocab, c = s.hidden, &embed_;
  if (name == "lm_head") return r = s.vocab, c = s.hidden, &lmHead_;
  if (name == "final_norm") return r = 1, c = s.hidden, matrix = false, &finalNorm_;
  if (name.rfind("layers.", 0) == 0) {
    size_t dot = name.find('.', 7);
    if (dot != std::string::npos && dot > 7) {
      const std::string idx = name.substr(7, dot - 7), part = name.substr(dot + 1);
      if (idx.find_first_not_of("0123456789") == std::string::npos && idx.size() < 6) {
        const int i = std::stoi(idx);
        if (i >= s.layers)
          fail("NATIVE_INVALID_ARG", "tensor '" + name + "': layer index " + idx + " is out of range, the model has " +
                                         std::to_string(s.layers) + " layers");
        Layer& L = layers_[i];
        if (part == "attn_norm") return r = 1, c = s.hidden, matrix = false, &L.attnNorm;
        if (part == "mlp_norm") return r = 1, c = s.hidden, matrix = false, &L.mlpNorm;
        if (part == "q") return r = qd, c = s.hidden, &L.q;
        if (part == "k") return r = kvd, c = s.hidden, &L.k;
        if (part == "v") return r = kvd, c = s.hidden, &L.v;
        if (part == "o") return r = s.hidden, c = qd, &L.o;
        if (part == "gate") return r = s.inter, c = s.hidden, &L.gate;
        if (part == "up") return r = s.inter, c = s.hidden, &L.up;
        if (part == "down") return r = s.hidden, c = s.inter, &L.down;
      }
    }
  }
  fail("NATIVE_INVALID_ARG", "unknown tensor name '" + name +
                                 "': expected embed, final_norm, lm_head or layers.<i>.{attn_norm,mlp_norm,q,k,v,o,"
                                 "gate,up,down}");
}

void Engine::setTensor(const std::string& name, const TensorIn& t) {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) fail("NATIVE_CLOSED", "engine is closed: create a new Engine");
  int r = 0, c = 0;
  bool matrix = true;
  Weight* w = lookup(name, r, c, matrix);
  Weight tmp;
  if (t.nf4) {
    if (!matrix || name == "embed")
      fail("NATIVE_INVALID_ARG", "tensor '" + name + "' must be dense (nf4 is only for linear layers and lm_head)");
    if (gpu_) fail("NATIVE_INVALID_ARG", "tensor '" + name + "': nf4 weights run on the CPU engine only");
    if (t.rows != r || t.cols != c)
      fail("NATIVE_SHAPE", "tensor '" + name + "' is " + shapeStr(t.rows, t.cols) + ", expected " + shapeStr(r, c));
    loadNf4(t, name, tmp);
  } else if (t.int4) {
    if (!matrix || name == "embed")
      fail("NATIVE_INVALID_ARG", "tensor '" + name + "' must be dense (int4 is only for linear layers and lm_head)");
    if (t.rows != r || t.cols != c)
      fail("NATIVE_SHAPE", "tensor '" + name + "' is " + shapeStr(t.rows, t.cols) + ", expected " + shapeStr(r, c));
    loadInt4(t, name, tmp);
    if (tmp.permCols > tmp.cols) {  // a row-parallel act-order shard: its perm picks from the whole input
      bool rowParallel = false;
      for (const Layer& L : layers_) rowParallel = rowParallel || w == &L.o || w == &L.down;
      if (!rowParallel || world_ < 2 || tmp.permCols != c * world_)
        fail("NATIVE_SHAPE", "tensor '" + name + "': permCols " + std::to_string(tmp.permCols) +
                                 " is only for o and down at tp > 1, as cols x tp = " + std::to_string(c * world_));
    }
  } else {
    const bool ok = matrix ? (t.shape.size() == 2 && t.shape[0] == r && t.shape[1] == c)
                           : (t.shape.size() == 1 && t.shape[0] == c);
    if (!ok) {
      std::string got = "[";
      for (size_t i = 0; i < t.shape.size(); i++) got += (i ? ", " : "") + std::to_string(t.shape[i]);
      fail("NATIVE_SHAPE", "tensor '" + name + "' has shape " + got + "], expected " +
                               (matrix ? "[" + std::to_string(r) + ", " + std::to_string(c) + "]"
                                       : "[" + std::to_string(c) + "]"));
    }
    // On the CPU, bf16 matrices stay bf16 (the kernels widen them exactly on load); norms become float32.
    if (matrix && t.dtype == "bf16" && !gpu_) keepBf16(t, name, tmp.b);
    else toFloat32(t, name, tmp.f);
    tmp.rows = r, tmp.cols = c;
  }
  tmp.present = true;
  if (gpu_) {
    gpu_->upload(name, tmp, t.int4 ? "int4" : t.dtype);  // nf4 was refused above
    Weight mark;  // host copy not kept: the shape is enough for finalize()'s checks
    mark.present = true, mark.int4 = tmp.int4, mark.rows = tmp.rows, mark.cols = tmp.cols, mark.group = tmp.group;
    mark.permCols = tmp.permCols;
    tmp = std::move(mark);
  }
  *w = std::move(tmp);
  finalized_ = false;
}

void Engine::finalize() {
  std::lock_guard<std::mutex> lk(mu_);
  if (closed_) fail("NATIVE_CLOSED", "engine is closed: create a new Engine");
  std::vector<std::string> missing;
  if (!embed_.present) missing.push_back("embed");
  if (!finalNorm_.present) missing.push_back("final_norm");
  if (!lmHead_.present && !o_.s.tie) missing.push_back("lm_head (shape.tieWordEmbeddings is false)");
  static const char* parts[] = {"attn_norm", "mlp_norm", "q", "k", "v", "o", "gate", "up", "down"};
  for (int i = 0; i < o_.s.layers; i++) {
    Layer& L = layers_[i];
    const Weight* ws[] = {&L.attnNorm, &L.mlpNorm, &L.q, &L.k, &L.v, &L.o, &L.gate, &L.up, &L.down};
    for (int j = 0; j < 9; j++)
      if (!ws[j]->present) missing.push_back("layers." + std::to_string(i) + "." + parts[j]);
  }
  if (!missing.empty()) {
    std::string list;
    for (size_t i = 0; i < missing.size() && i < 8; i++) list += (i ? ", " : "") + missing[i];
    if (missing.size() > 8) list += ", ... (" + std::to_string(missing.size()) + " in all)";
    fail("NATIVE_MISSING_TENSOR", "cannot finalize, missing tensors: " + list);
  }
  if (gpu_) {
    gpu_->finalize();
    if (pages_ == 0) setPages(gpu_->numPages());  // sized just now; a later limitPages only lowers it
  }
  finalized_ = true;
}

void Engine::limitPages(int n) {
  std::lock_guard<std::mutex> lk(mu_);
  requireReady();
  if (n < 2 || n > pages_)
    fail("NATIVE_INVALID_ARG", "limitPages(" + std::to_string(n) + "): expected 2.." + std::to_string(pages_) +
                                   " (it only lowers the usable pages; page 0 is reserved)");
  setPages(n);
}

void Engine::setPages(int n) {
  pages_ = n;
  maxCtx_ = (size_t)(n - 1) * o_.blockSize;
  if (o_.maxContext > 0) maxCtx_ = std::min(maxCtx_, (size_t)o_.maxContext);
}

KvSizing Engine::kvSizing() const { return gpu_ ? gpu_->kvSizing() : KvSizing(); }

DeviceMemory Engine::deviceMemory() const { return gpu_ ? gpu_->deviceMemory() : DeviceMemory(); }

Engine::~Engine() = default;

std::string Engine::device() const { return gpu_ ? gpu_->describe() : std::string("cpu"); }

bool Engine::aheadCounts(long long* hits, long long* misses) const {
  *hits = 0, *misses = 0;
  return gpu_ && gpu_->aheadCounts(hits, misses);
}

size_t Engine::kvBytes() const {
  return gpu_ ? gpu_->kvBytes() : kv_.size() * sizeof(float) + kv8_.size() + kvScale_.size() * sizeof(float);
}

size_t Engine::weightBytes() const {
  if (gpu_) return gpu_->weightBytes();
  size_t n = embed_.bytes() + finalNorm_.bytes() + lmHead_.bytes();
  for (const Layer& L : layers_)
    n += L.attnNorm.bytes() + L.mlpNorm.bytes() + L.q.bytes() + L.k.bytes() + L.v.bytes() + L.o.bytes() +
         L.gate.bytes() + L.up.bytes() + L.down.bytes();
  return n;
}

void Engine::close() {
  // A follower closing while its leader still runs steps fails the group (the leader must not wait for it).
  if (comm_ && rank_ > 0 && !closed_ && !stopped_) comm_->abort("rank " + std::to_string(rank_) + " shut down");
  std::lock_guard<std::mutex> lk(mu_);
  if (comm_ && rank_ == 0 && !closed_ && finalized_) sendStop();
  closed_ = true;
  finalized_ = false;
  pool_.reset();
  gpu_.reset();
  embed_ = Weight(), finalNorm_ = Weight(), lmHead_ = Weight();
  std::vector<Layer>().swap(layers_);
  std::vector<int8_t>().swap(kv8_);
  std::vector<float>().swap(kvScale_);
  for (auto* v : {&kv_, &x_, &h_, &h2_, &q_, &k_, &v_, &att_, &gate_, &up_, &cos_, &sin_, &scratch_, &lmLocal_,
                  &gathered_, &followOut_})
    std::vector<float>().swap(*v);
  for (int i = 0; i < 3; i++)
    std::vector<float>().swap(xp_[i]), std::vector<float>().swap(xsum_[i]), std::vector<float>().swap(permx_[i]);
}

}  // namespace tpserve
