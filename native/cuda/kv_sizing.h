// The GPU KV pool's size from --gpu-memory-utilization: bytes per page, what the forward pass still allocates after
// loading (held back), and the number of pages that keeps the device under the cap. Host code only; gpu_model_load.cu
// calls it once the weights are on the device.
#pragma once
#include <cstddef>
#include <string>

#include "../src/engine.h"

namespace tpserve {

/** What the budget depends on besides the device's memory. */
struct KvBudget {
  ModelShape s;           // this rank's shard
  int blockSize = 16;
  size_t maxBatchTokens = 0;
  int maxContext = 0;     // 0: the pool bounds the context
  int vocab = 0;          // the whole vocabulary (logits rows)
  bool tpGather = false;  // a TP group's NCCL logits gather needs its scratch buffer
};

/** Device bytes of one KV page: K and V of every layer (float32), plus the page's rows of the RoPE tables. */
size_t kvPageBytes(const ModelShape& s, int blockSize);

/**
 * Device memory the forward pass still allocates after finalize, for a pool of `poolTokens` tokens: held back from
 * the KV budget. It is a bound from the allocation sites in CudaModel::forward(), not a measurement:
 * - attention split-K workspace: attention_workspace_bytes() at maxBatchTokens tokens and the longest context a
 *   step can ask for (maxContext, or the pool without it, plus the 16-block padding of a decode graph's bucket),
 *   twice, since the workspace grows by doubling (the old buffer is freed before the new one is taken);
 * - a TP group's NCCL logits gather: rows x vocab floats, twice for the same reason;
 * - the step's int buffers (tokens, positions, slots, block tables) and sampling rows, twice;
 * - a fixed 512 MiB for what has no formula: CUDA graphs (one per batch size and block-table bucket; their kernel
 *   nodes and parameters live in device memory), kernel code loaded lazily at first launch
 *   (CUDA_MODULE_LOADING=LAZY), NCCL's own lazily allocated buffers.
 * bench/gpu.ts records the device memory in use after decode at every batch size beside this budget.
 */
size_t kvReserveBytes(const KvBudget& b, size_t poolTokens);

/**
 * The largest pool (pages, page 0 included) that keeps this process's and every other's use of the device under
 * fraction x totalBytes with kvReserveBytes() held back, given the memory free now; fills *sizing. Throws
 * NATIVE_OOM, with the figures and what to change, below 2 pages. `device` names the card in that message.
 */
int kvPagesFromUtilization(const KvBudget& b, double fraction, size_t freeBytes, size_t totalBytes,
                           const std::string& device, KvSizing* sizing);

}  // namespace tpserve
