// Shared helpers of the GPTQ and AWQ tensor layouts: int32 words of eight 4-bit fields, little-endian bytes.

import { ModelLoadError } from "../../../common/errors.js";
import type { WriteTensor } from "../../../common/model/safetensors.js";
import { fromFloat32, toFloat32 } from "../../../common/model/safetensors.js";

export function i32Tensor(values: Int32Array, shape: number[]): WriteTensor {
  return {
    dtype: "I32",
    shape,
    data: new Uint8Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength)),
  };
}

export function f16Tensor(values: Float32Array, shape: number[]): WriteTensor {
  return { dtype: "F16", shape, data: fromFloat32(values, "F16") };
}

export function asInt32(data: Uint8Array): Int32Array {
  const copy = data.slice();
  return new Int32Array(copy.buffer, 0, copy.byteLength / 4);
}

export function asFloat(name: string, dtype: string, data: Uint8Array): Float32Array {
  if (dtype !== "F16" && dtype !== "BF16" && dtype !== "F32") {
    throw new ModelLoadError(`tensor "${name}" has dtype ${dtype}, expected F16 (or BF16/F32) scales`);
  }
  return toFloat32(data, dtype);
}

/** Nibble k (bits 4k..4k+3) of a 32-bit word. */
export function nibble(word: number, k: number): number {
  return (word >>> (4 * k)) & 15;
}
