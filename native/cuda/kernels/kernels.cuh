// The CUDA kernels of tpserve's GPU backend: host-side launchers, one per kernel, all asynchronous on `stream`.
// Activations are float32 (the GPU path matches the CPU engine's fp32 compute); weights are int4 (group-wise),
// bf16 or fp32. Shapes follow native/index.ts: a linear weight is (out, in), y = x W^T. Each launcher returns the
// cudaError_t of its launch (cudaGetLastError after the launch); callers turn it into a JS error with a code.
#pragma once
#include <cuda_bf16.h>
#include <cuda_runtime.h>
#include <cstdint>

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

/** y (m, rows) = x (m, cols) W^T with W (rows, cols) bf16 row-major. */
cudaError_t bf16_matmul(const float* x, const __nv_bfloat16* w, int rows, int cols, float* y, int m,
                        cudaStream_t stream);

/** y (m, rows) = x (m, cols) W^T with W (rows, cols) fp32 row-major. */
cudaError_t f32_matmul(const float* x, const float* w, int rows, int cols, float* y, int m, cudaStream_t stream);

/** out (n, dim) = table[ids[i]] (table (vocab, dim) fp32). */
cudaError_t embedding(const int32_t* ids, int n, const float* table, int dim, float* out, cudaStream_t stream);

/**
 * RMSNorm with an optional fused residual add: when `residual` is not null, x += residual first (x is updated in
 * place, the sum is what the next layer adds to); then y = x / sqrt(mean(x^2) + eps) * w. x, y (rows, dim).
 */
cudaError_t rmsnorm(float* x, const float* residual, const float* w, float* y, int rows, int dim, float eps,
                    cudaStream_t stream);

/** In place on q (tokens, heads, headDim) and k (tokens, kvHeads, headDim): Hugging Face rotate-half RoPE. */
cudaError_t rope(float* q, float* k, const int32_t* positions, int tokens, int heads, int kvHeads, int headDim,
                 float theta, cudaStream_t stream);

/** out (rows, inter) = silu(gu[:, :inter]) * gu[:, inter:], gu (rows, 2*inter) (merged gate/up output). */
cudaError_t silu_mul(const float* gu, float* out, int rows, int inter, cudaStream_t stream);

/**
 * Writes k, v (tokens, kvHeads, headDim) into the paged caches (numPages, blockSize, kvHeads, headDim) at
 * slot[t] = page * blockSize + offset (slot < 0: skip the token).
 */
cudaError_t kv_write(const float* k, const float* v, const int32_t* slots, int tokens, float* kCache, float* vCache,
                     int kvHeads, int headDim, cudaStream_t stream);

/**
 * From the merged QKV projection qkv (tokens, heads*headDim + 2*kvHeads*headDim) = [q | k | v] per token: q rotated
 * into `q` (tokens, heads, headDim), k rotated and v copied into the paged caches at slots[t] (skipped when < 0).
 * ropeCos/ropeSin (maxPositions, headDim/2): cos and sin of position * inv_freq, computed once on the host.
 */
cudaError_t qkv_rope_kv(const float* qkv, float* q, const int32_t* positions, const int32_t* slots, int tokens,
                        float* kCache, float* vCache, int heads, int kvHeads, int headDim, const float* ropeCos,
                        const float* ropeSin, cudaStream_t stream);

/** Paged-attention arguments shared by decode and prefill. */
struct AttentionArgs {
  const float* q;            // (tokens, heads, headDim)
  const float* kCache;       // (numPages, blockSize, kvHeads, headDim)
  const float* vCache;
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
};

/** Bytes of workspace attention() needs for these sizes. */
size_t attention_workspace_bytes(int tokens, int heads, int headDim, int maxContext);

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

}  // namespace tpserve::cuda
