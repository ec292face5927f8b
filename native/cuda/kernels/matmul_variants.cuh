// Selectable int4 matmul kernels for small m (decode), for benchmarking every variant in one run (check_matmul).
// int4_matmul (kernels.cuh) dispatches to the default variant per m; TPSERVE_INT4_VARIANT=N (read once) overrides it
// wherever variant N applies to the call (else the default is used).
#pragma once
#include <cuda_runtime.h>

#include "kernels.cuh"

namespace tpserve::cuda {

// 0: auto (the default dispatch of int4_matmul). 1..kInt4VariantCount-1: see int4_variant_name.
constexpr int kInt4VariantCount = 11;

/** Short description of variant v ("legacy smem gemv", "simt R2 KS4 U4", "tc MT2 KS8 U2", ...). */
const char* int4_variant_name(int v);

/** True when variant v computes with bf16 activations (tensor cores): tolerance ~1e-2 instead of ~1e-6. */
bool int4_variant_bf16(int v);

/** Like int4_matmul, but with variant v; cudaErrorNotSupported when v does not apply to this m / shape / alignment
 * (nothing launched). v = 0 is int4_matmul itself. */
cudaError_t int4_matmul_variant(const float* x, const Int4Weight& w, float* y, int m, int variant, cudaStream_t stream);

/**
 * Whether int4_matmul runs m > 16 rows as 16-row decode-GEMV chunks (rather than the tile kernel) for a weight of
 * rows x cols. Measured on an H200: chunks win up to 32 rows for every Llama shape, up to 64 when rows <= 2 cols,
 * up to 128 when rows <= cols / 2 (down projections).
 */
bool int4_chunked(int m, int rows, int cols);

/**
 * Internal: the int4 decode GEMV for m <= 16 on a vector-eligible call (cols % 32 == 0, group % 32 == 0, aligned),
 * with the default variant for m (or TPSERVE_INT4_VARIANT when honorEnv).
 */
cudaError_t int4_decode_gemv(const float* x, const Int4Weight& w, float* y, int m, bool honorEnv, cudaStream_t stream);

}  // namespace tpserve::cuda
