// One-shot collectives over peer-to-peer device memory (NVLink), for the small messages of a tensor-parallel
// decode step, where NCCL's latency (about 20 us per call eagerly) would exceed the step's compute.
//
// Push ("Lamport") protocol, no flags and no fences: every rank owns a receive buffer of 3 slots x world regions x
// cap floats, mapped into every peer with CUDA IPC (or plain peer pointers in one process), and filled with a
// sentinel bit pattern (0xFFFFFFFF, a NaN no kernel writes: such a value is sent as the canonical NaN instead).
// Call e uses slot e % 3: each rank stores its message straight into region [rank] of slot e % 3 of every peer's
// buffer, then polls its own slot until no element of the regions it needs holds the sentinel, combines them
// (sums add in rank order 0..world-1, so every rank gets the same bits), and writes the sentinel back over the
// slot it used in call e - 1. A peer can run at most one call ahead (call e + 1 needs everybody's e + 1 data), so
// it only ever writes slot (e + 1) % 3 while this rank is in call e, and slot (e - 1) % 3 is free to reset.
// The call number lives in device memory (P2pState), so a captured CUDA graph replays correctly; the last block
// of a call advances it. Polls give up after `timeoutNs`, or when the host sets `*abortFlag`, and set `*err`.
// The abort flag lives in device memory (GpuComm writes it with a copy on a stream of its own): every polling
// thread reads it each 256 polls, and reads of host-mapped memory by thousands of threads at once queue on PCIe
// for long enough to keep two ranks out of step (docs/tensor-parallel.md, "Decoding ahead in a group").
#pragma once
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>

namespace tpserve::cuda {

constexpr int kP2pMaxRanks = 8;

/** Per-rank bookkeeping in device memory (zeroed at start). */
struct P2pState {
  uint32_t slot;     // slot of the next call (0, 1, 2)
  uint32_t done;     // blocks of the current call that finished
  uint32_t used[3];  // floats per region each slot last carried (what the reset must cover)
};

struct P2pGroup {
  uint8_t* base[kP2pMaxRanks] = {};  // every rank's receive buffer, as mapped in this process
  int rank = 0, world = 1;
  size_t cap = 0;                     // floats per region: one call moves at most cap floats per rank
  P2pState* state = nullptr;          // this rank's
  int* err = nullptr;                 // host-mapped: set to 1 by a poll that timed out or was aborted
  const int* abortFlag = nullptr;     // device memory (host-mapped in the checks): set to stop every poll
  long long timeoutNs = 10'000'000'000LL;
  // Diagnostics (TPSERVE_TP_TRACE_DIR): the one-token GEMV's exchange records, per call and block, when its loop
  // began, when it pushed and when the peers' values were in (kExchangeTrace* below; gpu_comm.cu writes them out).
  unsigned long long* trace = nullptr;
};

constexpr int kExchangeTraceBlocks = 1024;  // blocks a call at most
constexpr int kExchangeTraceCalls = 8192;   // calls recorded (the first ones)

/** Bytes of one rank's receive buffer; fill it with 0xFF bytes (the sentinel) before the first call. */
size_t p2p_buffer_bytes(size_t cap, int world);

/** x (n floats, n <= cap) becomes the sum over ranks, added in rank order. */
cudaError_t p2p_all_reduce(float* x, size_t n, const P2pGroup& g, cudaStream_t stream);

/**
 * Vocab-parallel logits: `local` (rows, cols) of every rank (rows * cols <= cap) gathered into out (rows,
 * world * cols), rank j's block at columns [j * cols, (j + 1) * cols).
 */
cudaError_t p2p_gather_cols(const float* local, int rows, int cols, float* out, const P2pGroup& g,
                            cudaStream_t stream);

/**
 * A row-parallel act-order shard's decode input (rows <= 16): every rank's `local` (rows, cols) gathered as by
 * p2p_gather_cols into the whole input (rows, world * cols), of which stored column i of this shard (i < outCols)
 * takes column perm[i], written straight into the decode GEMV's prepared input xp (rows tokens, outCols columns;
 * outCols % 64 == 0): the gather, permute_cols and xprep of the unfused path in one kernel, with the same bits.
 * Each value is polled where it is read, so no block waits for the whole gather. rows * cols <= cap.
 */
cudaError_t p2p_gather_xprep(const float* local, int rows, int cols, const int32_t* perm, int outCols, __half* xp,
                             const P2pGroup& g, cudaStream_t stream);

/**
 * The all-reduce of a row-parallel layer's partial output fused with the residual add and RMSNorm that follow:
 * x += sum over ranks of `partial` (rows, dim), then y = rmsnorm(x) * w, and the decode GEMV's prepared input when
 * xp is set (as cuda::rmsnorm with residual = the reduced partial; same bits). Needs rows * dim <= cap, dim % 4 == 0
 * and dim <= 16384 (cudaErrorInvalidValue otherwise: reduce and normalize separately).
 */
cudaError_t p2p_all_reduce_rmsnorm(const float* partial, float* x, const float* w, float* y, __half* xp, int rows,
                                   int dim, float eps, const P2pGroup& g, cudaStream_t stream);

/**
 * Folded RMSNorm after a row-parallel layer (decode, rows <= 16): x += sum over ranks of `partial` (rows, dim) in
 * rank order, xp = the next int4 GEMV's prepared input of x * w (not normalized), ssq[row * parts + part] = the sum
 * of squares of x over part `part` of fold_parts(dim) equal column ranges; the GEMV scales its results by
 * 1 / rms from them (Int4Epilogue::ssqIn). g null: `partial` already holds the sum (reduced by NCCL), nothing is
 * exchanged. cudaErrorInvalidValue when fold_parts(dim) is 0 or the message exceeds the buffer.
 */
/**
 * The first kernel of a step (embed_norm.cu): x (rows, dim) = the embedding rows of `ids` (this rank's vocab rows
 * [begin, begin + count) of `table`; other ids give zeros) summed over the ranks when g is set (the vocab-parallel
 * embedding's all-reduce), then y = rmsnorm(x) * w and the GEMV's prepared input when xp is set: the bits of
 * cuda::embedding, p2p_all_reduce and cuda::rmsnorm run apart (xpMap as rmsnorm's). Needs dim % 4 == 0,
 * dim <= 16384, 16-byte aligned table, w, x and y, rows * dim <= g's buffer (cudaErrorInvalidValue otherwise: run
 * them apart).
 */
cudaError_t embed_rmsnorm(const int32_t* ids, int rows, const float* table, int begin, int count, const float* w,
                          float* x, float* y, __half* xp, int dim, float eps, const P2pGroup* g, cudaStream_t stream,
                          const int32_t* xpMap = nullptr);

int fold_parts(int dim);
cudaError_t all_reduce_fold(const float* partial, float* x, const float* w, __half* xp, float* ssq, int rows, int dim,
                            const P2pGroup* g, cudaStream_t stream);

}  // namespace tpserve::cuda
