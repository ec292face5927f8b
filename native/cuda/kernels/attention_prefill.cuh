// Internal to native/cuda/kernels: the prefill / mixed half of cuda::attention (attention_prefill.cu).
#pragma once
#include <cuda_runtime.h>

#include "kernels.cuh"

namespace tpserve::cuda {

/**
 * Flash-attention tiling for batches with more than one query in a sequence; a's checks are attention()'s, qScale
 * its log2(e) / sqrt(headDim). cudaErrorInvalidValue for a head size other than 64 or 128 or a grid too large.
 */
cudaError_t attention_prefill(const AttentionArgs& a, float qScale, cudaStream_t stream);

}  // namespace tpserve::cuda
