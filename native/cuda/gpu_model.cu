// CudaModel, one step (cuda_model.h): forward() stages the step's integers and replays the decode graph of its
// bucket (or enqueues the pass), and decodes the next step ahead when the batch continues (docs/gpu.md).
#include <chrono>
#include <cstdint>
#include <vector>

#include "../src/errors.h"
#include "cuda_check.h"
#include "cuda_model.h"
#include "step_ints.h"

namespace tpserve {

void CudaModel::forward(const BatchIn& b, float* out, int32_t* ids, const SampleParams* sampling) {
  CK(cudaSetDevice(dev_));
  const auto traceStart = std::chrono::steady_clock::now();
  trace_.drain();
  const ModelShape& s = o_.s;
  const int T = (int)b.tokens.size(), S = (int)b.seqLens.size();
  const bool decode = !b.all && T == S;  // one new token per sequence (b.hidden implies b.all)
  // Decode steps replay a CUDA graph captured per (batch size, block-table width bucket): one launch instead of
  // ~10 per layer. The width is padded to a multiple of 16 blocks so a graph serves 256 tokens of growth.
  const bool graph = decode && graphsOn_ && !profiling_;
  // Decode ahead (docs/gpu.md): the previous call may have enqueued this very step already. When that step held
  // more sequences than b (some finished meanwhile), rowOf[i] is the logits row of b's sequence i in it; empty
  // rowOf: row i is sequence i.
  const bool ahead = decideAhead(b, ids != nullptr, out != nullptr, sampling != nullptr);
  // The step ahead's integers made on the device from this step's (no copy between the two graphs; run 82).
  const bool advance = ahead && advanceOn_ && S <= cuda::AdvanceStep::kMaxSeqs;
  std::vector<int> rowOf;
  const int bRows = b.all ? T : S;  // the rows b asks for
  int rows = 0;                     // the logits rows on the device
  bool hit = false;
  if (ahead_.valid) {
    ahead_.valid = false;
    hit = mayTakeAhead(ids != nullptr, out != nullptr, sampling != nullptr) && ahead_.match(b, o_.blockSize, rowOf);
    if (hit) {
      rows = ahead_.S, aheadHits_++;
    } else {
      rowOf.clear(), aheadMisses_++;
      sync();  // before any buffer below may be reallocated under that step
    }
  }
  if (!hit) rows = stage(b, graph, 0);
  if (b.hidden) {
    if (out) CK(cudaMemcpyAsync(out, h_.p, (size_t)T * s.hidden * sizeof(float), cudaMemcpyDeviceToHost, stream_));
    sync();
    return;
  }
  if (ids) {
    if (sampling) {
      std::vector<cuda::SamplingRow> rowsHost(rows, cuda::SamplingRow{0.f, 0, 1.f, 0.f, 0, 0});  // rows b lacks: argmax
      for (int r = 0; r < bRows; r++) {
        const SampleParams& q = sampling[r];
        rowsHost[rowOf.empty() ? r : rowOf[r]] = {q.temperature, q.topK, q.topP, q.minP, q.seed, q.position};
      }
      sampleParams_.reserve(rows * sizeof(cuda::SamplingRow));
      sampleWs_.reserve(cuda::sample_workspace_bytes(rows, vocab_));
      CK(cudaMemcpyAsync(sampleParams_.p, rowsHost.data(), rows * sizeof(cuda::SamplingRow),
                         cudaMemcpyHostToDevice, stream_));
      const auto* params = reinterpret_cast<const cuda::SamplingRow*>(sampleParams_.p);
      checkLaunch(cuda::sample_rows(logits_.p, rows, vocab_, params, ids_.p, sampleWs_.p, stream_), "sample_rows");
    } else {
      checkLaunch(cuda::argmax_rows(logits_.p, rows, vocab_, ids_.p, stream_), "argmax_rows");
    }
    if ((size_t)rows > hostIds_.n) sync(), hostIds_.reserve(rows);
    // Into pinned memory, so that the copy does not hold this thread while the next step is enqueued; a step
    // decoded ahead on the device's integers (advance_decode) writes them there itself instead.
    if (!advance)
      CK(cudaMemcpyAsync(hostIds_.p, ids_.p, (size_t)rows * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
  }
  if (out)
    CK(cudaMemcpyAsync(out, logits_.p, (size_t)rows * vocab_ * sizeof(float), cudaMemcpyDeviceToHost, stream_));
  if (ahead) {
    if (!idsDone_) CK(cudaEventCreateWithFlags(&idsDone_, cudaEventDisableTiming));
    if (!advance) CK(cudaEventRecord(idsDone_, stream_));
    stage(b, true, advance ? 2 : 1);  // 2: records idsDone_ itself, after the ids reach hostIds_
    sync(idsDone_);
  } else {
    sync();
  }
  if (ids)
    for (int i = 0; i < bRows; i++) ids[i] = hostIds_.p[rowOf.empty() ? i : rowOf[i]];
  if (ahead) ahead_.record(b, ids);
  trace_.drain(std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - traceStart).count(),
               hit ? (ahead ? "hit+ahead" : "hit") : (ahead ? "ahead" : "plain"), rows);
  if (profiling_ && !graph) {
    for (int i = 1; i < nMarks_; i++) {
      float ms = 0.f;
      CK(cudaEventElapsedTime(&ms, marks_[i - 1], marks_[i]));
      profMs_[markOp_[i]] += ms, profCalls_[markOp_[i]]++;
    }
  }
}

bool CudaModel::decideAhead(const BatchIn& b, bool ids, bool out, bool sampled) const {
  const int S = (int)b.seqLens.size();
  if (b.all || (int)b.tokens.size() != S || !b.continues || !ids || out || (comm_ && sampled)) return false;
  // In a group too, at any batch since the p2p polls read a device-memory abort flag (gpu_comm.cu): with the
  // host-mapped one, phases at batch 32 ran 12x slower (docs/tensor-parallel.md, "Decoding ahead in a group").
  if (comm_ && S > groupAheadMaxSeqs_) return false;
  const bool follower = comm_ && comm_->rank() > 0;
  if (!follower && (!aheadOn_ || !graphsOn_ || profiling_)) return false;
  if (!DecodeAhead::possible(b, o_.blockSize)) return false;
  // A step taken on a subset of its sequences leaves the ids on the device out of b's order: not from there.
  std::vector<int> rowOf;
  return !(ahead_.valid && mayTakeAhead(ids, out, sampled) && ahead_.match(b, o_.blockSize, rowOf) &&
           !rowOf.empty());
}

int CudaModel::stage(const BatchIn& b, bool graph, int aheadMode) {
  const int ahead = aheadMode > 0 ? 1 : 0;
  bool advance = aheadMode == 2;
  const ModelShape& s = o_.s;
  const int T = (int)b.tokens.size(), S = (int)b.seqLens.size(), bs = o_.blockSize;
  // Graph buckets: 16 blocks wide, and below the first one buckets of exactly the contexts that decode attention's
  // short one-pass forms take (128 and 192 tokens at block size 16; cuda::attention_short_bucket).
  int mb = b.maxBlocksPerSeq;
  if (graph) {
    const int shortBlocks = cuda::attention_short_bucket(mb * bs) / bs;
    mb = shortBlocks >= mb ? shortBlocks : (mb + 15) / 16 * 16;
  }
  const int rows = b.all ? T : S;
  const size_t nInts = StepInts::count(T, S, rows, mb);
  // Two staging buffers in turn: the copy from the other one may still be queued behind the step in flight.
  PinnedBuf<int32_t>& host = hostInts_[hostCur_ ^= 1];
  if (nInts > host.n) sync(), host.reserve(nInts);
  Ptrs p{};
  p.T = T, p.S = S, p.mb = mb, p.rows = rows, p.all = b.all, p.hidden = b.hidden;
  allLogits_ = b.all;
  StepInts(host.p, T, S, rows).fill(b, bs, mb, ahead, p.maxCtx, p.maxQ);
  if (graph) p.maxCtx = mb * bs;  // the graph's attention grid is sized for the bucket; lengths come from ctx
  // Buffers a graph points at must not move: growing one drops every captured graph.
  const size_t wsFloats = (cuda::attention_workspace_bytes(T, s.heads, s.headDim, p.maxCtx) + 3) / 4;
  // The NCCL logits gather lands in a scratch buffer first (the p2p one writes the logits directly).
  const size_t gatherFloats = comm_ ? (size_t)rows * vocab_ : 0;
  const bool grow = nInts > ints_.n || wsFloats > attnWs_.n || gatherFloats > gatherWs_.n;
  // advance_decode needs ints_ to hold this step's integers in the next one's layout (a wider block-table bucket
  // would not); otherwise the step is staged from the host after all, the ids copied out first.
  const IntsLayout layout{T, S, rows, mb};
  if (advance && (grow || !(devInts_ == layout))) {
    CK(cudaMemcpyAsync(hostIds_.p, ids_.p, (size_t)S * sizeof(int32_t), cudaMemcpyDeviceToHost, stream_));
    CK(cudaEventRecord(idsDone_, stream_));
    advance = false;
  }
  devInts_ = layout;
  if (grow) {
    sync();
    graphs_.clear();
    ints_.reserve(std::max(nInts, ints_.n * 2));
    attnWs_.reserve(std::max(wsFloats, attnWs_.n * 2));
    if (gatherFloats > gatherWs_.n) gatherWs_.reserve(std::max(gatherFloats, gatherWs_.n * 2));
  }
  const StepInts d(ints_.p, T, S, rows);  // the step's integers on the device (ints_ is not reallocated below)
  if (advance) {
    // ints_ still holds this step's integers (b's, staged or advanced): one kernel makes the next step's from them
    // and hands the ids to the host; the entries come from b (its block table may have a page more since then).
    cuda::AdvanceStep a;
    a.S = S, a.mb = mb;
    a.tok = d.tok, a.pos = d.pos, a.kvSlot = d.slot, a.ctx = d.ctx, a.bt = d.bt;
    StepInts(host.p, T, S, rows).advanceEntries(S, mb, bs, a.slot, a.blk, a.page);
    // hostIds_ is cudaMallocHost memory: with unified addressing (every 64-bit platform CUDA runs on) the device
    // reaches it at its host address, as check_ops' case does.
    checkLaunch(cuda::advance_decode(ids_.p, hostIds_.p, a, stream_), "advance_decode");
    CK(cudaEventRecord(idsDone_, stream_));
  } else {
    CK(cudaMemcpyAsync(ints_.p, host.p, nInts * sizeof(int32_t), cudaMemcpyHostToDevice, stream_));
    if (ahead) CK(cudaMemcpyAsync(ints_.p, ids_.p, (size_t)T * sizeof(int32_t), cudaMemcpyDeviceToDevice, stream_));
  }
  p.tok = d.tok, p.pos = d.pos, p.slot = d.slot, p.qs = d.qs, p.ctx = d.ctx, p.rowIdx = d.rowIdx, p.bt = d.bt;
  if (graph) {
    const uint64_t key = ((uint64_t)S << 32) | (uint32_t)mb;
    auto it = graphs_.find(key);
    if (it == graphs_.end()) {
      cudaGraph_t g = nullptr;
      CK(cudaStreamBeginCapture(stream_, cudaStreamCaptureModeThreadLocal));
      try {
        enqueue(p);
      } catch (...) {
        cudaStreamEndCapture(stream_, &g);
        if (g) cudaGraphDestroy(g);
        throw;
      }
      CK(cudaStreamEndCapture(stream_, &g));
      cudaGraphExec_t exec = nullptr;
      const cudaError_t e = cudaGraphInstantiate(&exec, g, 0);
      cudaGraphDestroy(g);
      CK(e);
      it = graphs_.emplace(key, GraphExec(exec)).first;
    }
    trace_.begin(stream_);
    CK(cudaGraphLaunch(it->second.exec, stream_));
    trace_.end(stream_, ahead ? "ahead" : "now");
  } else {
    nMarks_ = 0;
    enqueue(p);
  }
  return rows;
}

void CudaModel::sync(cudaEvent_t until) {
  if (comm_) comm_->wait(stream_, until);
  else if (until) CK(cudaEventSynchronize(until));
  else CK(cudaStreamSynchronize(stream_));
}

DeviceMemory CudaModel::deviceMemory() const {
  DeviceMemory m;
  CK(cudaSetDevice(dev_));
  CK(cudaMemGetInfo(&m.freeBytes, &m.totalBytes));
  return m;
}

std::unique_ptr<GpuModel> createGpuModel(const EngineOptions& o, int device, const ModelShape& local, int vocabBegin) {
  return std::make_unique<CudaModel>(o, device, local, vocabBegin);
}

}  // namespace tpserve
