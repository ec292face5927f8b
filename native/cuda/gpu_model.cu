// GpuModel on CUDA: device weights (int4 as stored, dense as fp32 or bf16), a float32 paged KV pool, workspaces
// for maxBatchTokens, and the Llama forward pass as kernel launches on one stream.
#include <cuda_bf16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <cstring>
#include <vector>

#include "../src/errors.h"
#include "../src/gpu_model.h"
#include "kernels/kernels.cuh"

namespace tpserve {
namespace {

#define CK(call)                                                                                            \
  do {                                                                                                      \
    cudaError_t e_ = (call);                                                                                \
    if (e_ != cudaSuccess) {                                                                                \
      cudaGetLastError();                                                                                   \
      fail(e_ == cudaErrorMemoryAllocation ? "NATIVE_OOM" : "NATIVE_CUDA",                                 \
           std::string(#call) + " failed: " + cudaGetErrorString(e_) + " (" + __FILE__ + ":" +             \
               std::to_string(__LINE__) + ")");                                                             \
    }                                                                                                       \
  } while (0)

/** A device allocation that frees itself. */
template <typename T>
struct DevBuf {
  T* p = nullptr;
  size_t n = 0;
  DevBuf() = default;
  DevBuf(const DevBuf&) = delete;
  DevBuf& operator=(const DevBuf&) = delete;
  DevBuf(DevBuf&& o) noexcept : p(o.p), n(o.n) { o.p = nullptr, o.n = 0; }
  DevBuf& operator=(DevBuf&& o) noexcept {
    if (this != &o) reset(), p = o.p, n = o.n, o.p = nullptr, o.n = 0;
    return *this;
  }
  ~DevBuf() { reset(); }
  void reset() {
    if (p) cudaFree(p);
    p = nullptr, n = 0;
  }
  void alloc(size_t count) {
    reset();
    if (count == 0) return;
    CK(cudaMalloc(&p, count * sizeof(T)));
    n = count;
  }
  /** Grows (never shrinks) to at least `count` elements; contents are not kept. */
  void reserve(size_t count) {
    if (count > n) alloc(count);
  }
  void upload(const T* src, size_t count) {
    alloc(count);
    if (count) CK(cudaMemcpy(p, src, count * sizeof(T), cudaMemcpyHostToDevice));
  }
  size_t bytes() const { return n * sizeof(T); }
};

/** A weight on the device: int4 (qweight, scales, zeros), bf16 or fp32. */
struct DWeight {
  enum Kind { kNone, kF32, kBf16, kInt4 } kind = kNone;
  int rows = 0, cols = 0, group = 0;
  DevBuf<float> f, scales;
  DevBuf<__nv_bfloat16> b;
  DevBuf<uint8_t> q, zeros;
  size_t bytes() const { return f.bytes() + scales.bytes() + b.bytes() + q.bytes() + zeros.bytes(); }
};

std::vector<__nv_bfloat16> toBf16(const std::vector<float>& f) {
  std::vector<__nv_bfloat16> out(f.size());
  for (size_t i = 0; i < f.size(); i++) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    const uint16_t hi = (uint16_t)(bits >> 16);  // exact: the values came from bf16
    std::memcpy(&out[i], &hi, 2);
  }
  return out;
}

class CudaModel : public GpuModel {
 public:
  CudaModel(const EngineOptions& o, int device) : o_(o), dev_(device) {
    int count = 0;
    if (cudaGetDeviceCount(&count) != cudaSuccess || count == 0) {
      cudaGetLastError();
      fail("NATIVE_NO_CUDA", "no CUDA device is visible (cudaGetDeviceCount); use device \"cpu\"");
    }
    if (device < 0 || device >= count)
      fail("NATIVE_INVALID_ARG", "CUDA device " + std::to_string(device) + " does not exist; this machine has " +
                                     std::to_string(count));
    CK(cudaSetDevice(dev_));
    CK(cudaGetDeviceProperties(&props_, dev_));
    CK(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking));
    const ModelShape& s = o.s;
    const size_t T = o.maxBatchTokens, H = s.hidden, qd = (size_t)s.heads * s.headDim;
    const size_t kvd = (size_t)s.kvHeads * s.headDim;
    layers_.resize(s.layers);
    staging_.resize(s.layers);
    kvPerLayer_ = (size_t)o.numPages * o.blockSize * kvd;
    kv_.alloc(2 * kvPerLayer_ * s.layers);
    CK(cudaMemset(kv_.p, 0, kv_.bytes()));
    x_.alloc(T * H), h_.alloc(T * H), tmp_.alloc(T * H);
    q_.alloc(T * qd), k_.alloc(T * kvd), v_.alloc(T * kvd), att_.alloc(T * qd);
    gu_.alloc(T * 2 * s.inter), act_.alloc(T * s.inter);
    logits_.alloc(T * (size_t)s.vocab);
    ids_.alloc(T);
  }

  ~CudaModel() override {
    cudaSetDevice(dev_);
    if (hostInts_) cudaFreeHost(hostInts_);
    if (stream_) cudaStreamDestroy(stream_);
  }

  void upload(const std::string& name, const Weight& w, const std::string& srcDtype) override {
    CK(cudaSetDevice(dev_));
    // gate and up are merged into one (2*inter, hidden) weight at finalize: keep host copies until then.
    if (name.size() > 5 && (name.compare(name.size() - 5, 5, ".gate") == 0 || name.compare(name.size() - 3, 3, ".up") == 0)) {
      const int l = layerOf(name);
      (name.back() == 'e' ? staging_[l].gate : staging_[l].up) = w;
      return;
    }
    DWeight* d = target(name);
    put(*d, w, srcDtype == "bf16" && w.rows > 1 && name != "embed");
    if (name == "embed") {
      embedBf16_ = srcDtype == "bf16";
      if (o_.s.tie && embedBf16_) put(tiedHead_, w, true);
    }
  }

  void finalize() override {
    CK(cudaSetDevice(dev_));
    for (int l = 0; l < o_.s.layers; l++) {
      Staging& st = staging_[l];
      if (st.gate.rows == 0 && st.up.rows == 0) continue;  // already merged by an earlier finalize
      Weight merged;
      merged.present = true, merged.int4 = st.gate.int4, merged.rows = st.gate.rows + st.up.rows;
      merged.cols = st.gate.cols, merged.group = st.gate.group;
      if (st.gate.int4 != st.up.int4 || st.gate.group != st.up.group || st.gate.zeros.empty() != st.up.zeros.empty())
        fail("NATIVE_INVALID_ARG", "layers." + std::to_string(l) + ".gate and .up must share one format on the GPU "
                                   "(both int4 with the same group size and zero points, or both dense)");
      auto cat = [](auto& dst, const auto& a, const auto& b) {
        dst.reserve(a.size() + b.size());
        dst.insert(dst.end(), a.begin(), a.end());
        dst.insert(dst.end(), b.begin(), b.end());
      };
      cat(merged.f, st.gate.f, st.up.f), cat(merged.q, st.gate.q, st.up.q);
      cat(merged.scales, st.gate.scales, st.up.scales), cat(merged.zeros, st.gate.zeros, st.up.zeros);
      put(layers_[l].gateUp, merged, false);
      st = Staging();
    }
  }

  void forward(const BatchIn& b, float* out, int32_t* ids) override {
    CK(cudaSetDevice(dev_));
    const ModelShape& s = o_.s;
    const int T = (int)b.tokens.size(), S = (int)b.seqLens.size(), bs = o_.blockSize, mb = b.maxBlocksPerSeq;
    const int H = s.hidden;
    // Host-side index arrays, packed in one pinned buffer: tokens, positions, slots, queryStart, contextLens,
    // rows (logit row of each output), blockTables.
    const int rows = b.all ? T : S;
    const size_t nInts = (size_t)3 * T + (S + 1) + S + rows + (size_t)S * mb;
    if (nInts > hostIntsCap_) {
      if (hostInts_) cudaFreeHost(hostInts_), hostInts_ = nullptr;
      CK(cudaMallocHost(&hostInts_, nInts * sizeof(int32_t)));
      hostIntsCap_ = nInts;
    }
    int32_t* tok = hostInts_;
    int32_t* pos = tok + T;
    int32_t* slot = pos + T;
    int32_t* qstart = slot + T;
    int32_t* ctx = qstart + S + 1;
    int32_t* rowIdx = ctx + S;
    int32_t* bt = rowIdx + rows;
    int maxCtx = 0, maxQ = 0;
    qstart[0] = 0;
    for (int sq = 0, t = 0; sq < S; sq++) {
      const int len = b.seqLens[sq], c = b.contextLens[sq];
      maxCtx = std::max(maxCtx, c), maxQ = std::max(maxQ, len);
      const int32_t* table = b.blockTables.data() + (size_t)sq * mb;
      for (int i = 0; i < len; i++, t++) {
        const int p = c - len + i;
        tok[t] = b.tokens[t], pos[t] = p, slot[t] = table[p / bs] * bs + p % bs;
      }
      qstart[sq + 1] = t, ctx[sq] = c;
      if (!b.all) rowIdx[sq] = t - 1;
    }
    if (b.all)
      for (int t = 0; t < T; t++) rowIdx[t] = t;
    std::memcpy(bt, b.blockTables.data(), (size_t)S * mb * sizeof(int32_t));
    ints_.reserve(nInts);
    CK(cudaMemcpyAsync(ints_.p, hostInts_, nInts * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    const int32_t* dTok = ints_.p;
    const int32_t* dPos = dTok + T;
    const int32_t* dSlot = dPos + T;
    const int32_t* dQs = dSlot + T;
    const int32_t* dCtx = dQs + S + 1;
    const int32_t* dRows = dCtx + S;
    const int32_t* dBt = dRows + rows;
    attnWs_.reserve((cuda::attention_workspace_bytes(T, s.heads, s.headDim, maxCtx) + 3) / 4);

    L(cuda::embedding(dTok, T, embed_.f.p, H, x_.p, stream_), "embedding");
    for (int l = 0; l < s.layers; l++) {
      Layer& Ly = layers_[l];
      float* kc = kv_.p + (size_t)2 * l * kvPerLayer_;
      float* vc = kc + kvPerLayer_;
      L(cuda::rmsnorm(x_.p, l == 0 ? nullptr : tmp_.p, Ly.attnNorm.f.p, h_.p, T, H, s.eps, stream_), "rmsnorm");
      matmul(h_.p, Ly.q, q_.p, T), matmul(h_.p, Ly.k, k_.p, T), matmul(h_.p, Ly.v, v_.p, T);
      L(cuda::rope(q_.p, k_.p, dPos, T, s.heads, s.kvHeads, s.headDim, s.theta, stream_), "rope");
      L(cuda::kv_write(k_.p, v_.p, dSlot, T, kc, vc, s.kvHeads, s.headDim, stream_), "kv_write");
      cuda::AttentionArgs a{};
      a.q = q_.p, a.kCache = kc, a.vCache = vc, a.blockTables = dBt, a.contextLens = dCtx, a.queryStart = dQs;
      a.out = att_.p, a.workspace = attnWs_.p, a.numSeqs = S, a.maxBlocks = mb, a.heads = s.heads;
      a.kvHeads = s.kvHeads, a.headDim = s.headDim, a.blockSize = bs, a.maxContext = maxCtx, a.maxQueryLen = maxQ;
      L(cuda::attention(a, stream_), "attention");
      matmul(att_.p, Ly.o, tmp_.p, T);
      L(cuda::rmsnorm(x_.p, tmp_.p, Ly.mlpNorm.f.p, h_.p, T, H, s.eps, stream_), "rmsnorm");
      matmul(h_.p, Ly.gateUp, gu_.p, T);
      L(cuda::silu_mul(gu_.p, act_.p, T, s.inter, stream_), "silu_mul");
      matmul(act_.p, Ly.down, tmp_.p, T);
    }
    L(cuda::rmsnorm(x_.p, tmp_.p, finalNorm_.f.p, h_.p, T, H, s.eps, stream_), "rmsnorm");
    const float* head = h_.p;
    if (!b.all) {  // gather each sequence's last row
      L(cuda::embedding(dRows, rows, h_.p, H, tmp_.p, stream_), "gather");
      head = tmp_.p;
    }
    const DWeight& lm = lmHead_.kind != DWeight::kNone ? lmHead_ : (tiedHead_.kind != DWeight::kNone ? tiedHead_ : embed_);
    matmul(head, lm, logits_.p, rows);
    if (ids) {
      L(cuda::argmax_rows(logits_.p, rows, s.vocab, ids_.p, stream_), "argmax_rows");
      CK(cudaMemcpyAsync(ids, ids_.p, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    }
    if (out)
      CK(cudaMemcpyAsync(out, logits_.p, (size_t)rows * s.vocab * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    CK(cudaStreamSynchronize(stream_));
  }

  size_t weightBytes() const override {
    size_t n = embed_.bytes() + finalNorm_.bytes() + lmHead_.bytes() + tiedHead_.bytes();
    for (const Layer& Ly : layers_)
      n += Ly.attnNorm.bytes() + Ly.mlpNorm.bytes() + Ly.q.bytes() + Ly.k.bytes() + Ly.v.bytes() + Ly.o.bytes() +
           Ly.gateUp.bytes() + Ly.down.bytes();
    return n;
  }
  size_t kvBytes() const override { return kv_.bytes(); }
  std::string describe() const override {
    return std::string(props_.name) + " (device " + std::to_string(dev_) + ", " +
           std::to_string(props_.multiProcessorCount) + " SMs, " +
           std::to_string((long long)(props_.totalGlobalMem >> 20)) + " MiB)";
  }

 private:
  struct Layer {
    DWeight attnNorm, mlpNorm, q, k, v, o, gateUp, down;
  };
  struct Staging {
    Weight gate, up;
  };

  static int layerOf(const std::string& name) { return std::stoi(name.substr(7, name.find('.', 7) - 7)); }

  DWeight* target(const std::string& name) {
    if (name == "embed") return &embed_;
    if (name == "lm_head") return &lmHead_;
    if (name == "final_norm") return &finalNorm_;
    Layer& Ly = layers_[layerOf(name)];
    const std::string part = name.substr(name.find('.', 7) + 1);
    if (part == "attn_norm") return &Ly.attnNorm;
    if (part == "mlp_norm") return &Ly.mlpNorm;
    if (part == "q") return &Ly.q;
    if (part == "k") return &Ly.k;
    if (part == "v") return &Ly.v;
    if (part == "o") return &Ly.o;
    if (part == "down") return &Ly.down;
    fail("NATIVE_INVALID_ARG", "tensor '" + name + "' has no place in the GPU model");
  }

  /** Copies a host weight to the device; dense matrices as bf16 when `bf16` (exact for bf16 sources). */
  void put(DWeight& d, const Weight& w, bool bf16) {
    d = DWeight();
    d.rows = w.rows, d.cols = w.cols, d.group = w.group;
    if (w.int4) {
      d.kind = DWeight::kInt4;
      d.q.upload(w.q.data(), w.q.size()), d.scales.upload(w.scales.data(), w.scales.size());
      if (!w.zeros.empty()) d.zeros.upload(w.zeros.data(), w.zeros.size());
    } else if (bf16) {
      d.kind = DWeight::kBf16;
      const std::vector<__nv_bfloat16> b = toBf16(w.f);
      d.b.upload(b.data(), b.size());
    } else {
      d.kind = DWeight::kF32;
      d.f.upload(w.f.data(), w.f.size());
    }
  }

  void matmul(const float* x, const DWeight& w, float* y, int m) {
    switch (w.kind) {
      case DWeight::kInt4: {
        cuda::Int4Weight iw{w.q.p, w.scales.p, w.zeros.p, w.rows, w.cols, w.group};
        L(cuda::int4_matmul(x, iw, y, m, stream_), "int4_matmul");
        break;
      }
      case DWeight::kBf16:
        L(cuda::bf16_matmul(x, w.b.p, w.rows, w.cols, y, m, stream_), "bf16_matmul");
        break;
      case DWeight::kF32:
        L(cuda::f32_matmul(x, w.f.p, w.rows, w.cols, y, m, stream_), "f32_matmul");
        break;
      default:
        fail("NATIVE_INTERNAL", "GPU weight missing at forward time");
    }
  }

  /** Checks a kernel launch's status. */
  static void L(cudaError_t e, const char* what) {
    if (e != cudaSuccess) {
      cudaGetLastError();
      fail("NATIVE_CUDA", std::string("kernel ") + what + " failed: " + cudaGetErrorString(e));
    }
  }

  EngineOptions o_;
  int dev_;
  cudaDeviceProp props_{};
  cudaStream_t stream_ = nullptr;
  DWeight embed_, finalNorm_, lmHead_, tiedHead_;
  bool embedBf16_ = false;
  std::vector<Layer> layers_;
  std::vector<Staging> staging_;
  size_t kvPerLayer_ = 0;
  DevBuf<float> kv_, x_, h_, tmp_, q_, k_, v_, att_, gu_, act_, logits_, attnWs_;
  DevBuf<int32_t> ints_, ids_;
  int32_t* hostInts_ = nullptr;
  size_t hostIntsCap_ = 0;
};

}  // namespace

std::unique_ptr<GpuModel> createGpuModel(const EngineOptions& o, int device) {
  return std::make_unique<CudaModel>(o, device);
}

}  // namespace tpserve
