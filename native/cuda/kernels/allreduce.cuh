// One-shot collectives over peer-to-peer device memory (NVLink), for the small messages of a tensor-parallel
// decode step, where NCCL's latency (tens of microseconds per call) would exceed the step's compute.
//
// Each rank owns one buffer, mapped into every peer with CUDA IPC (or plain peer pointers in one process):
//   [flags: kMaxBlocks x 8 uint32][data, parity 0: cap floats][data, parity 1: cap floats]
// Block b of a call owns chunk b (kChunk floats) of the message. It bumps its own call counter (epoch e, kept in
// local device memory, so a captured CUDA graph replays correctly), copies its chunk into its buffer's half e % 2,
// writes e into slot [b][rank] of every peer's flags (release, system scope), waits until its own slots [b][*]
// all reach e (acquire), then reads chunk b of every rank's half e % 2. Sums add in rank order 0..world-1, so every
// rank gets bitwise the same result. A rank at epoch e+1 has finished reading epoch e (kernels of one stream run in
// order), so the half of epoch e is overwritten only at e+2, after that rank signalled e+1: two halves suffice and
// one barrier per call. Waits give up after `timeoutNs`, or when the host sets `*abortFlag`, and set `*err`.
#pragma once
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace tpserve::cuda {

constexpr int kP2pMaxRanks = 8;
constexpr int kP2pChunk = 1024;  // floats per block and call

struct P2pGroup {
  uint8_t* base[kP2pMaxRanks] = {};  // every rank's buffer, as mapped in this process
  int rank = 0, world = 1;
  size_t cap = 0;                 // floats per parity half; one call moves at most cap floats per rank
  uint32_t* counters = nullptr;   // this rank's per-block epochs (cap / kP2pChunk of them), zeroed at start
  int* err = nullptr;             // host-mapped: set to 1 by a wait that timed out or was aborted
  const int* abortFlag = nullptr;  // host-mapped: the host sets it to stop every wait
  long long timeoutNs = 10'000'000'000LL;
};

/** Bytes of one rank's buffer for messages of up to `cap` floats. */
size_t p2p_buffer_bytes(size_t cap);

/** x (n floats, n <= cap) becomes the sum over ranks, added in rank order. */
cudaError_t p2p_all_reduce(float* x, size_t n, const P2pGroup& g, cudaStream_t stream);

/**
 * Vocab-parallel logits: `local` (rows, cols) of every rank (rows * cols <= cap) gathered into out (rows,
 * world * cols), rank j's block at columns [j * cols, (j + 1) * cols).
 */
cudaError_t p2p_gather_cols(const float* local, int rows, int cols, float* out, const P2pGroup& g,
                            cudaStream_t stream);

}  // namespace tpserve::cuda
