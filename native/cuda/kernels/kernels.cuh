// The CUDA kernels of tpserve's GPU backend: host-side launchers, one per kernel, all asynchronous on `stream`.
// Activations are float32 (the GPU path matches the CPU engine's fp32 compute); weights are int4 (group-wise),
// bf16 or fp32. Shapes follow native/index.ts: a linear weight is (out, in), y = x W^T. Each launcher returns the
// cudaError_t of its launch (cudaGetLastError after the launch); callers turn it into a JS error with a code.
#pragma once
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <cstdint>
#include <vector>

#include "allreduce.cuh"
#include "kv_cache.cuh"

namespace tpserve::cuda {

/**
 * Group-wise int4 weight in the on-disk layout of native/index.ts, kept as is on the device:
 * qweight (rows, cols/2) bytes, byte j of row r = column 2j (low nibble) | column 2j+1 (high nibble);
 * scales (rows, cols/group) float32; zeros (rows, cols/group) uint8 or nullptr (symmetric: zero 8).
 * w = (q - zero) * scale.
 */
struct Int4Weight {
  const uint8_t* qweight;
  const float* scales;
  const uint8_t* zeros;
  int rows;  // out
  int cols;  // in
  int group;
};

/** y (m, rows) = x (m, cols) W^T, fp32 accumulate. Any m >= 1; fast paths for small m (decode). */
cudaError_t int4_matmul(const float* x, const Int4Weight& w, float* y, int m, cudaStream_t stream);

/**
 * Int4 weight in the tile-packed layout of int4_tiled.cu (built on the device by int4_tile_pack): q
 * (ceil(rows/16), cols/64, 32 lanes) x 16 bytes; scales float32 and zeros uint8 (or nullptr: symmetric, zero 8)
 * as (ceil(rows/16), cols/group, 16). Rows past `rows` are padding (scale 0).
 */
struct Int4Tiled {
  const uint4* q;
  const float* scales;
  const uint8_t* zeros;
  int rows;
  int cols;
  int group;
};

/**
 * What the tiled GEMV does with its results instead of writing y (m, rows). The weight must have been packed with
 * the matching row order (int4_tile_pack's rowMap, built by int4_tile_row_map).
 *  kPlain: y (m, rows) (+ residual).
 *  kSiluPairs (merged gate/up, rows = 2 * inter, packed kGateUpPairs): y (m, inter) = silu(gate) * up, and when
 *    xpOut is set (m <= 16) also in the prepared layout for the down projection.
 *  kRopeQkv (merged q/k/v, rows = (heads + 2 kvHeads) headDim, packed kRopePairs): q rotated into `q` (m, heads,
 *    headDim); k rotated and v copied into the paged caches at slots[t] (skipped when < 0); cos/sin tables
 *    (maxPositions, headDim / 2) as for qkv_rope_kv. Replaces qkv_rope_kv.
 */
struct Int4Epilogue {
  enum Kind { kPlain = 0, kSiluPairs = 1, kRopeQkv = 2 } kind = kPlain;
  __half* xpOut = nullptr;
  const int32_t* positions = nullptr;
  const int32_t* slots = nullptr;
  float* q = nullptr;
  kv_t* kCache = nullptr;
  kv_t* vCache = nullptr;
  const float* ropeCos = nullptr;
  const float* ropeSin = nullptr;
  int heads = 0, kvHeads = 0, headDim = 0;
  // kPlain's xpOut (the folded norm's producer side): column k at xpMap[k] when set, the inverse permutation of an
  // act-order consumer (xprep.cuh). The pair epilogues ignore it.
  const int32_t* xpMap = nullptr;
  // A folded RMSNorm (decode GEMV, m <= 16, no GEMM path): W (x * r * w) computed as r * W (x * w), r = 1/rms(x)
  // per token. Producer (kPlain): y += the result (the residual stream, in place), xpOut gets each new row times
  // normW (the next GEMV's prepared input), ssqOut[tok * gridDim + block] the block's sum of the new rows' squares.
  // Consumer (kSiluPairs / kRopeQkv): the results are multiplied by r from ssqIn (ssqParts partials a token over
  // normCols columns, + eps) before the epilogue.
  bool accumulate = false;
  const float* normW = nullptr;
  float* ssqOut = nullptr;
  const float* ssqIn = nullptr;
  int ssqParts = 0, normCols = 0;
  float eps = 0.f;
  // Pair epilogues (kSiluPairs / kRopeQkv) of one-token decode GEMVs: when set, k is split across two blocks a tile;
  // block p of a tile stores its sums in slot p of splitParts ([2][m][rows] floats, every entry written), and
  // int4_pair_finish adds the two slots in order, applies a folded norm's r and the epilogue (int4_tiled_split.cu).
  // TPSERVE_T_SPLIT=0 turns it off. The engine sets it only with TPSERVE_T_SPLIT=1: whole tiles with the epilogue
  // inside (int4t_gemv_one) were faster (docs/gpu-runs.md run 50).
  float* splitParts = nullptr;
  bool splitDeferFinish = false;  // the caller launches int4_pair_finish itself (checks, measurements)
  // Row-parallel layers in a tensor-parallel group (kPlain, one token, comm.world > 1): the GEMV's results are this
  // rank's partial sums, and each block exchanges its 16 rows with the peers itself (the p2p push protocol of
  // allreduce.cuh, one call of the group) and adds them in rank order before the rest of the epilogue (accumulate,
  // the folded norm's producer side): all_reduce_fold's sums without its kernel. Only where
  // int4_gemv_allreduce_ok() says so (every block resident at once: a block waits for its peers' same rows).
  P2pGroup comm{};
};

/**
 * Whether int4_tiled_matmul can take Int4Epilogue::comm for this weight and m tokens: one token, the one-token
 * kernel, and a grid that fits the GPU at once (TPSERVE_TP_FUSE=0 says no, for A/B runs).
 */
bool int4_gemv_allreduce_ok(int rows, int cols, int group, bool zeros, int m);

/** Most tokens a GEMV takes the split-k path of Int4Epilogue::splitParts at. */
constexpr int kSplitMaxTokens = 1;

/** The pair epilogue of a split GEMV (Int4Epilogue::splitParts), rows of the weight, y as int4_tiled_matmul's. */
cudaError_t int4_pair_finish(const Int4Epilogue& ep, int rows, int m, float* y, cudaStream_t stream);

/** Row orders of the tiled layout: in order, gate/up pairs (kSiluPairs), rope pairs (kRopeQkv). */
enum class Int4RowOrder { kInOrder, kGateUpPairs, kRopePairs };

/**
 * Packed row -> source row for an order (host side; -1 = padding), or an empty vector when the shape does not
 * allow it (gate/up: rows % 16 == 0; rope: headDim % 16 == 0 and rows = (heads + 2 kvHeads) headDim).
 */
std::vector<int32_t> int4_tile_row_map(Int4RowOrder order, int rows, int heads, int kvHeads, int headDim);

/** Whether a weight can take the tiled layout: cols % 64 == 0 and group 64 or 128. */
bool int4_tiled_supported(int rows, int cols, int group);

/** Sizes of the tiled layout: 32-bit words of q, and entries of scales (and of zeros). */
void int4_tiled_sizes(int rows, int cols, int group, size_t* qWords, size_t* groupEntries);

/**
 * Repacks an Int4Weight (device memory, on-disk layout) into the tiled buffers (sizes from int4_tiled_sizes).
 * rowMap (device memory, ceil(rows/16)*16 entries, or nullptr for rows in order): source row of each packed row.
 */
cudaError_t int4_tile_pack(const Int4Weight& src, uint32_t* q, float* scales, uint8_t* zeros, const int32_t* rowMap,
                           cudaStream_t stream);

/** Writes x (m, cols) fp32 in the GEMV/GEMM prepared layout (xprep.cuh), cols % 64 == 0. */
cudaError_t xprep(const float* x, int m, int cols, __half* xp, cudaStream_t stream);

/**
 * y (m, rows) = x W^T (+ residual (m, rows) when not null) on the tiled layout, or the epilogue `ep`. xp: a buffer
 * of xprep_halves(m, cols) halves (xprep.cuh; min(m, 16) tokens' worth when `exact`). When m <= 16 and xpReady, xp
 * already holds x prepared (by the kernel that produced x) and x is not read; otherwise x is prepared into xp here.
 * m > 16: fp16 activations (about 2e-4 relative) in the tensor-core GEMM (m >= 64; below 8192 rows it splits k
 * through `ws`, up to 8 x m x rows rounded up to 16 floats, and takes slices without room there) or the GEMV on
 * 16-token slices; with
 * `exact`, the GEMV on 8-token slices with hi/lo activations (about 1e-7; for all-position passes such as
 * teacher-forced checks).
 */
cudaError_t int4_tiled_matmul(const float* x, __half* xp, bool xpReady, const Int4Tiled& w, float* y, int m,
                              const float* residual, cudaStream_t stream, bool exact = true,
                              const Int4Epilogue& ep = Int4Epilogue(), float* ws = nullptr, size_t wsFloats = 0);

/** y (m, rows) = x (m, cols) W^T with W (rows, cols) bf16 row-major. */
cudaError_t bf16_matmul(const float* x, const __nv_bfloat16* w, int rows, int cols, float* y, int m,
                        cudaStream_t stream);

/** y (m, rows) = x (m, cols) W^T with W (rows, cols) fp32 row-major. */
cudaError_t f32_matmul(const float* x, const float* w, int rows, int cols, float* y, int m, cudaStream_t stream);

/**
 * out (n, dim) = table[ids[i] - begin] (table (count, dim) fp32): a vocabulary shard holding ids [begin, begin +
 * count); rows of ids outside it (and negative ids) are zero.
 */
cudaError_t embedding(const int32_t* ids, int n, const float* table, int dim, float* out, cudaStream_t stream,
                      int begin = 0, int count = 0x7fffffff);

/**
 * out (rows, cols) = x with its columns permuted: out[r][i] = x[r][perm[i]]. The input of an act-order int4 weight,
 * whose columns are stored in group order (perm: a permutation of 0..cols-1; out must not alias x). xCols (0: cols):
 * x's row width when perm picks cols distinct columns of a wider input (a row-parallel act-order shard).
 */
cudaError_t permute_cols(const float* x, int rows, int cols, const int32_t* perm, float* out, cudaStream_t stream,
                         int xCols = 0);

/**
 * The same permutation on a prepared input (xprep.cuh) of m <= 16 tokens: column i of out is column perm[i] of xp,
 * every token's hi and lo halves (cols % 64 == 0; out must not alias xp).
 */
cudaError_t permute_xprep(const __half* xp, int m, int cols, const int32_t* perm, __half* out, cudaStream_t stream);

/**
 * RMSNorm with an optional fused residual add: when `residual` is not null, x += residual first (x is updated in
 * place, the sum is what the next layer adds to); then y = x / sqrt(mean(x^2) + eps) * w. x, y (rows, dim).
 * With `xp` (rows <= 16, dim % 64 == 0), y is also written in the decode GEMV's prepared layout (xprep.cuh), column
 * k at xpMap[k] when xpMap is set (the inverse permutation of an act-order consumer).
 */
cudaError_t rmsnorm(float* x, const float* residual, const float* w, float* y, int rows, int dim, float eps,
                    cudaStream_t stream, __half* xp = nullptr, const int32_t* xpMap = nullptr);

/** In place on q (tokens, heads, headDim) and k (tokens, kvHeads, headDim): Hugging Face rotate-half RoPE. */
cudaError_t rope(float* q, float* k, const int32_t* positions, int tokens, int heads, int kvHeads, int headDim,
                 float theta, cudaStream_t stream);

/**
 * out (rows, inter) = silu(gu[:, :inter]) * gu[:, inter:], gu (rows, 2*inter) (merged gate/up output); with `xp`
 * (rows <= 16, inter % 64 == 0, 16-byte aligned buffers) also in the prepared layout (xprep.cuh).
 */
cudaError_t silu_mul(const float* gu, float* out, int rows, int inter, cudaStream_t stream, __half* xp = nullptr);

/**
 * Writes k, v (tokens, kvHeads, headDim) into the paged caches (numPages, blockSize, kvHeads, headDim) at
 * slot[t] = page * blockSize + offset (slot < 0: skip the token).
 */
cudaError_t kv_write(const float* k, const float* v, const int32_t* slots, int tokens, kv_t* kCache, kv_t* vCache,
                     int kvHeads, int headDim, cudaStream_t stream);

/**
 * From the merged QKV projection qkv (tokens, heads*headDim + 2*kvHeads*headDim) = [q | k | v] per token: q rotated
 * into `q` (tokens, heads, headDim), k rotated and v copied into the paged caches at slots[t] (skipped when < 0).
 * ropeCos/ropeSin (maxPositions, headDim/2): cos and sin of position * inv_freq, computed once on the host.
 */
cudaError_t qkv_rope_kv(const float* qkv, float* q, const int32_t* positions, const int32_t* slots, int tokens,
                        kv_t* kCache, kv_t* vCache, int heads, int kvHeads, int headDim, const float* ropeCos,
                        const float* ropeSin, cudaStream_t stream);

/** Paged-attention arguments shared by decode and prefill. */
struct AttentionArgs {
  const float* q;            // (tokens, heads, headDim)
  const kv_t* kCache;        // (numPages, blockSize, kvHeads, headDim), fp16 (kv_cache.cuh)
  const kv_t* vCache;
  const int32_t* blockTables;  // (numSeqs, maxBlocks)
  const int32_t* contextLens;  // (numSeqs) context after this step
  const int32_t* queryStart;   // (numSeqs + 1) token offsets of each sequence's queries in q (cu_seqlens)
  float* out;                  // (tokens, heads, headDim)
  float* workspace;            // split-K partials; attention_workspace_bytes() tells the size
  int numSeqs;
  int maxBlocks;
  int heads;
  int kvHeads;
  int headDim;
  int blockSize;
  int maxContext;  // upper bound of contextLens (sizes the split)
  int maxQueryLen; // upper bound of queries per sequence in this batch
  __half* xpOut = nullptr;  // decode with numSeqs <= 16: out also in the GEMV's prepared layout (xprep.cuh)
  const int32_t* xpMap = nullptr;  // xpOut's column k at xpMap[k] (an act-order consumer's inverse permutation)
  // One-pass decode: the first chunk of K/V rows loaded before pdl_wait() (attention.cu, kv_early_on). The engine
  // turns it off in a tensor-parallel group (docs/gpu-runs.md run 77).
  bool kvEarly = true;
  // Set by the engine in a tensor-parallel group: the decode forms measured on one GPU only (attention.cu: 12 warps
  // a head at short contexts, GQA in one pass) stay off there unless their variable says `all`.
  bool group = false;
};

/** Bytes of workspace attention() needs for these sizes. */
size_t attention_workspace_bytes(int tokens, int heads, int headDim, int maxContext);
/** The context (tokens) of the decode graph bucket whose attention takes a short one-pass form (12 warps up to 192
 * tokens, 8 up to 128) for a step of this longest context; 0 above them or with those forms off. CudaModel::stage
 * sizes its bucket to it, so that such contexts get those forms. */
int attention_short_bucket(int context);

/**
 * Causal attention of each sequence's queries (at positions contextLen - qLen .. contextLen - 1) over its paged
 * K/V, GQA (head h reads kv head h / (heads / kvHeads)), scale 1/sqrt(headDim), fp32 softmax. Decode (one query
 * per sequence) splits long contexts across blocks and reduces.
 */
cudaError_t attention(const AttentionArgs& a, cudaStream_t stream);

/** Sampling parameters of one logits row (the semantics of services/worker/sampler.ts). */
struct SamplingRow {
  float temperature;  // 0 = greedy (argmax, ties: lowest id)
  int topK;           // 0 = off
  float topP;         // (0, 1]; 1 = off
  float minP;         // [0, 1); 0 = off
  uint64_t seed;
  int position;       // index of the generated token in its sequence: the draw is uniformAt(seed, position)
};

/** Bytes of workspace sample_rows() needs. */
size_t sample_workspace_bytes(int rows, int vocab);

/**
 * out[r] = the token sampled from row r of logits (rows, vocab) with params[r] (device memory), exactly as
 * services/worker/sampler.ts sampleToken() would pick it from the same logits.
 */
cudaError_t sample_rows(const float* logits, int rows, int vocab, const SamplingRow* params, int32_t* out,
                        void* workspace, cudaStream_t stream);

/** out[r] = argmax over logits (rows, vocab) of row r (ties: lowest id). */
cudaError_t argmax_rows(const float* logits, int rows, int vocab, int32_t* out, cudaStream_t stream);

/**
 * What advance_decode() writes for each sequence of a decode step taken ahead: its next position's KV slot, and
 * the block-table entry that position's page has (block index, page), which the step staged before may lack.
 */
struct AdvanceStep {
  static constexpr int kMaxSeqs = 128;  // kernel parameter space: 1.5 KiB of entries
  /** The step's integers on the device, advanced in place: StepInts' parts (step_ints.h) tok, pos, slot, ctx, bt. */
  int32_t *tok = nullptr, *pos = nullptr, *kvSlot = nullptr, *ctx = nullptr, *bt = nullptr;
  int S = 0, mb = 0;
  int32_t slot[kMaxSeqs], blk[kMaxSeqs], page[kMaxSeqs];
};

/**
 * Turns a decode step's integers on the device (a's pointers into its StepInts buffer, one token per sequence) into
 * those of the step after it, as StepInts::fill(b, bs, mb, 1) would stage them: tok = ids, every position and
 * context one further, the slots and block-table entries of a. Also copies the ids to hostIds (host memory mapped
 * for the device), so that no copy runs between the two steps.
 */
cudaError_t advance_decode(const int32_t* ids, int32_t* hostIds, const AdvanceStep& a, cudaStream_t stream);

namespace detail {
/** Multiprocessors of the current device (132 if it cannot be read), for the launchers' grid rules. */
int sm_count();
/** A switch from the environment (TPSERVE_...) that is on unless the variable starts with '0'. */
bool env_on(const char* name);
/** The integer in environment variable `name` (0 when unset). */
int env_int(const char* name);
/** Whether environment variable `name` is set to exactly `value`. */
bool env_is(const char* name, const char* value);
/** Whether p is 16-byte aligned (the launchers' check before float4 access). */
inline bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }
}  // namespace detail

}  // namespace tpserve::cuda
