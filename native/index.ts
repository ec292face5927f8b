// The one typed contract between TypeScript and the native addon (native/src). Nothing else crosses it.
//
// Layout conventions shared with the C++ side:
// - Matrices are row-major. A linear layer's weight is (out, in), as in Hugging Face checkpoints: y = x W^T.
// - Int4 weights: group-wise along `in` (groups of `groupSize` consecutive input columns of one output row).
//   qweight (out, in/2) bytes: byte j of row r holds column 2j in its low nibble and column 2j+1 in its high nibble.
//   scales (out, in/groupSize) float32. zeros (out, in/groupSize) uint8 in 0..15, or absent for symmetric (zero 8).
//   Dequantized value: w = (q - zero) * scale.
// - KV cache (CPU): per layer, K and V each (numPages, blockSize, numKvHeads, headDim) float32. Page 0 is reserved
//   and never written; a sequence's block table lists its page ids in order.
import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

export type DType = "f32" | "f16" | "bf16";

/** Model hyper-parameters the engine needs (a Llama-family decoder). */
export interface ModelShape {
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  /** When true and no `lm_head` tensor is set, the LM head reuses `embed`. */
  tieWordEmbeddings: boolean;
}

export interface EngineOptions {
  shape: ModelShape;
  /**
   * KV pool size in pages, including the reserved page 0. 0 (GPU engines only): finalize() sizes the pool to fill
   * gpuMemoryUtilization of the device once the weights are on it (info().numPages then tells the size).
   */
  numPages: number;
  /**
   * With numPages 0: the fraction (0, 1] of the device's total memory that everything on it may use, this process's
   * weights and workspaces and other processes included; the pool gets what is left after a reserve for the forward
   * pass's lazily allocated workspaces (info().kvSizing). finalize() fails with NATIVE_OOM below 2 pages.
   */
  gpuMemoryUtilization?: number;
  /**
   * The longest context (prompt and generated tokens) of one sequence; forward refuses longer ones (default: what
   * the pool holds). With a pool sized from memory it also bounds the attention workspace held back for it.
   */
  maxContext?: number;
  /** Tokens per page (16 by default in tpserve). */
  blockSize: number;
  /** Most tokens one forward() may carry (sizes the workspaces). */
  maxBatchTokens: number;
  /** Worker threads for the kernels; 0 = one per hardware thread. */
  threads?: number;
  /** Where weights, KV pool and the forward pass live: "cpu" (default), "cuda" or "cuda:N". */
  device?: string;
  /**
   * How forward* calls come back to JavaScript: true runs them on the engine's own thread and polls for the end
   * from the event loop (setImmediate; no thread wake-ups, one core busy while a step runs), false on the libuv
   * pool. Default: true on a GPU, whose steps are short, false on the CPU. TPSERVE_POLL_STEPS=0/1 overrides.
   */
  pollSteps?: boolean;
  /**
   * Tensor parallelism: a joined group; the engine then holds shard group.rank of group.world (tensors set with
   * the shard's shapes, see TensorName) and runs the group's collectives inside its forward pass. On a GPU, rank r
   * uses the device it is given (one GPU per rank), the group carries the step plans, and the activations move
   * between the GPUs through CUDA IPC peer buffers or NCCL (native/cuda/gpu_comm.h).
   */
  group?: TpGroup;
  /**
   * KV cache element type. CPU engine: "f32" (default) or "int8": int8 values with one float32 scale per token
   * and KV head (absmax / 127), dequantized inside attention. GPU engine: "f16", its only one (the default).
   */
  kvCacheDtype?: "f32" | "f16" | "int8";
}

export interface TpGroupOptions {
  /** Unique per group launch ([A-Za-z0-9._-]); names the shared-memory segment. */
  name: string;
  rank: number;
  world: number;
  /** Bound on one collective inside a step before the group is marked failed (default 10000). */
  timeoutMs?: number;
  /** How long join() waits for every rank (default 60000). */
  joinTimeoutMs?: number;
  /** Bytes of one rank's slot in the segment; larger messages take several rounds (default 1 MiB). */
  slotBytes?: number;
}

/**
 * One rank's membership of a tensor-parallel group whose ranks are processes of one host (shared-memory
 * collectives, native/src/collective_shm.h). Every rank calls the same collectives in the same order. A collective
 * fails on every rank, with code NATIVE_TP_PEER_DEAD (a rank's process exited), NATIVE_TP_TIMEOUT (a rank did not
 * arrive within timeoutMs) or NATIVE_TP_FAILED (the group had already failed), instead of waiting forever.
 */
export interface TpGroup {
  readonly rank: number;
  readonly world: number;
  /** Creates (rank 0) or opens the segment and waits until every rank has joined. */
  join(): Promise<void>;
  /** In place; resolves to x: the elementwise sum over ranks, added in rank order. */
  allReduceSum(x: Float32Array): Promise<Float32Array>;
  /** (world * x.length) bytes: rank 0's x, then rank 1's, ... */
  allGather(x: Uint8Array): Promise<Uint8Array>;
  /** In place: root's x into every rank's x (same length everywhere). waitMs 0: as long as every peer lives. */
  broadcast(x: Uint8Array, root: number, waitMs?: number): Promise<Uint8Array>;
  /** Marks the group failed for every rank. */
  abort(reason: string): void;
  /** "" while healthy, else why the group failed (also notices a peer whose process exited). */
  failure(): string;
  /** Drops this handle (an engine built on the group keeps the segment mapped). */
  close(): void;
}

/** Codes of a failed tensor-parallel group (the step's requests end with UNAVAILABLE). */
export const TP_FAILURE_CODES: ReadonlySet<string> = new Set([
  "NATIVE_TP_PEER_DEAD",
  "NATIVE_TP_TIMEOUT",
  "NATIVE_TP_FAILED",
]);

/** An unquantized tensor in its on-disk dtype; the engine converts it to float32. Raw little-endian bytes. */
export interface DenseTensor {
  kind: "dense";
  dtype: DType;
  shape: number[];
  data: Uint8Array;
}

/** A group-wise int4 weight, layout in the header comment. */
export interface Int4Tensor {
  kind: "int4";
  rows: number;
  cols: number;
  groupSize: number;
  qweight: Uint8Array;
  scales: Float32Array;
  /** 0..16 (16 only from GPTQ v1 checkpoints, see docs/quantization.md). */
  zeros?: Uint8Array;
  /**
   * Act-order (GPTQ desc_act): stored column i multiplies input x[perm[i]], so that groups stay contiguous in the
   * stored order; a permutation of 0..cols-1, or of cols distinct columns of 0..permCols-1.
   */
  perm?: Int32Array;
  /**
   * The input width perm picks from (default cols). Wider only for a row-parallel (o, down) act-order shard at
   * tp > 1: cols x tp, the whole layer input, which the engine gathers from every rank before the matmul.
   */
  permCols?: number;
}

/**
 * NF4 (bitsandbytes NormalFloat4): blocks of `blockSize` consecutive weights (row-major), w = levels[code] * absmax.
 * qweight (rows*cols/2) bytes: two codes per byte, the first weight in the HIGH nibble (bitsandbytes' order).
 * absmax (blocks) float32, or double-quantized: absmax[b] = absmaxMap[absmaxCodes[b]] * absmaxScales[b/256] +
 * absmaxOffset. CPU engine only.
 */
export interface Nf4Tensor {
  kind: "nf4";
  rows: number;
  cols: number;
  blockSize: number;
  qweight: Uint8Array;
  /** The 16 NF4 levels. */
  levels: Float32Array;
  absmax?: Float32Array;
  absmaxCodes?: Uint8Array;
  absmaxScales?: Float32Array;
  /** 256 code values of the 8-bit absmax quantization (bitsandbytes' dynamic map). */
  absmaxMap?: Float32Array;
  absmaxOffset?: number;
}

export type WeightTensor = DenseTensor | Int4Tensor | Nf4Tensor;

/**
 * Tensor names the engine takes (i = layer index):
 *   embed (vocab, hidden) dense; final_norm (hidden) dense; lm_head (vocab, hidden) dense, optional when tied;
 *   layers.i.attn_norm, layers.i.mlp_norm (hidden) dense;
 *   layers.i.q (heads*headDim, hidden), layers.i.k / layers.i.v (kvHeads*headDim, hidden),
 *   layers.i.o (hidden, heads*headDim), layers.i.gate / layers.i.up (inter, hidden), layers.i.down (hidden, inter):
 *   dense or int4.
 * With a TP group of world w, rank r takes its shard: embed / lm_head rows [r*vocab/w, (r+1)*vocab/w); q rows of
 * its heads/w heads; k, v rows of its kvHeads/w KV heads (w > kvHeads: the one KV head r*kvHeads/w, replicated);
 * gate, up rows [r*inter/w, ...); o columns of its heads; down columns [r*inter/w, ...); norms whole.
 */
export type TensorName = string;

/**
 * One forward pass over a batch that mixes prefill chunks and decodes. Tokens of sequence 0 come first, then
 * sequence 1, and so on. Sequence s contributes seqLens[s] tokens at positions contextLens[s]-seqLens[s] ..
 * contextLens[s]-1; their K/V are written into the pages of its block table before attention reads them.
 */
export interface ForwardBatch {
  /** (T) token ids. */
  tokens: Int32Array;
  /** (numSeqs) tokens of each sequence in this batch. */
  seqLens: Int32Array;
  /** (numSeqs) context length of each sequence after this step. */
  contextLens: Int32Array;
  /** (numSeqs, maxBlocksPerSeq) page ids, padded with 0. */
  blockTables: Int32Array;
  maxBlocksPerSeq: number;
  /**
   * "last": logits of each sequence's last token (numSeqs rows); "all": of every token (T rows); "hidden": no
   * logits but the final-norm hidden state of every token (T rows of hiddenSize; for embeddings, with forward()).
   */
  logits: "last" | "all" | "hidden";
  /**
   * The caller will most likely decode the same sequences (or some of them, in the same order) one token further
   * next, feeding this step's ids: a GPU engine then enqueues that step before it returns, so the GPU does not wait
   * for JavaScript between steps (docs/gpu.md, "Decode ahead"). A next call that differs only costs the GPU the
   * step it started. Ignored by CPU engines and tensor-parallel groups.
   */
  continues?: boolean;
}

/** Sampling parameters of one logits row for forwardSample. */
export interface RowSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
  position: number;
}

export interface EngineInfo {
  threads: number;
  /** Instruction set the kernels use: "avx512", "avx2" or "scalar" on the CPU, "cuda" on a GPU. */
  simd: string;
  weightBytes: number;
  kvBytes: number;
  /** "cpu", or the GPU's description ("NVIDIA H200 (device 0, 132 SMs, 143771 MiB)"). */
  device: string;
  /** Tensor-parallel rank and group size (0 and 1 without a group). */
  tpRank?: number;
  tpSize?: number;
  /** Pages block tables may use (page 0 included): 0 before finalize() sized a pool from gpuMemoryUtilization. */
  numPages: number;
  /** GPU engines: the device's memory now (cudaMemGetInfo; every process's use counts). */
  deviceMemory?: { freeBytes: number; totalBytes: number };
  /** GPU engines created with numPages 0: how finalize() sized the pool. */
  kvSizing?: KvSizing;
  /**
   * GPU engines: whether they decode ahead (ForwardBatch.continues; off in tensor-parallel groups and with
   * TPSERVE_DECODE_AHEAD=0), and the steps decoded ahead that the next call took (hits) and did not (misses: GPU
   * time lost).
   */
  decodeAhead?: { enabled: boolean; hits: number; misses: number };
}

export interface KvSizing {
  fraction: number;
  /** The device's memory. */
  totalBytes: number;
  /** In use when the pool was sized (weights, workspaces, CUDA context, other processes). */
  usedBytes: number;
  /** Held back for what the forward pass allocates later (attention workspace, CUDA graphs, ...). */
  reserveBytes: number;
  /** Device bytes per page (K and V of every layer, and its rows of the RoPE tables). */
  pageBytes: number;
}

export interface ProfileEntry {
  ms: number;
  calls: number;
}

export interface Engine {
  setTensor(name: TensorName, tensor: WeightTensor): void;
  /** Checks that every tensor is present with the right shape; forward() refuses to run before. */
  finalize(): void;
  /** Runs off the main thread. Resolves to (rows, vocab) float32 logits, or (T, hidden) states for "hidden". */
  forward(batch: ForwardBatch): Promise<Float32Array>;
  /**
   * Like forward, but resolves to the argmax token id of each logits row (ties: lowest id): greedy sampling done
   * where the logits are, so that only ids cross to JavaScript (on a GPU, (rows, vocab) floats never leave it).
   */
  forwardArgmax(batch: ForwardBatch): Promise<Int32Array>;
  /**
   * GPU engines only: samples one id per logits row where the logits are, with the semantics of
   * services/worker/sampler.ts (`position` = index of the generated token; the draw is a function of seed and it).
   */
  forwardSample(batch: ForwardBatch, sampling: RowSampling[]): Promise<Int32Array>;
  /** Same as forward, on the calling thread (benchmarks and tests). */
  forwardSync(batch: ForwardBatch): Float32Array;
  info(): EngineInfo;
  /**
   * Calibration (CPU engines): runs the batch up to decoder layer `layer` and returns the inputs of its linear
   * layers, (T, 2*hidden + heads*headDim + inter) float32 per token: [q/k/v input | o input | gate/up input |
   * down input]. Writes K/V pages of layers up to `layer` like forward().
   */
  captureSync?(batch: ForwardBatch, layer: number): Float32Array;
  /**
   * Turns the per-op wall-clock profiler on or off (off by default; costs one branch per op when off). Times
   * accumulate over forward passes until resetProfile().
   */
  setProfiling?(on: boolean): void;
  /**
   * Accumulated wall time and call count per op kind, only kinds with calls > 0: embed, rmsnorm, qkv_matmul,
   * rope, kv_write, attention, o_matmul, residual, mlp_gate_up, silu_mul, mlp_down, final_norm, lm_head,
   * int4_prep (activation reorder for int4 matmuls), forward (whole passes), tp_comm (a TP group's all-reduces
   * and logits gather inside the pass; the step plan's broadcast comes before it and is not counted). pool_wait is the time the calling
   * thread waited for pool workers to finish their parts; it is already included in the ops above.
   */
  profile?(): Record<string, ProfileEntry>;
  resetProfile?(): void;
  /**
   * Followers (rank > 0) of a TP group: waits for the leader's next forward (as long as the leader lives), runs this
   * rank's shard of it and resolves true; false once the leader closed. The leader's forward* calls hand each batch
   * to the followers themselves. Rejects with a NATIVE_TP_* code when the group fails.
   */
  follow?(): Promise<boolean>;
  /**
   * Followers: follow() until the leader closes the group, without a return to JavaScript between steps (each
   * return costs a thread hop that the leader's next step would wait for). Resolves to the number of steps run;
   * rejects with a NATIVE_TP_* code when the group fails.
   */
  followLoop?(): Promise<number>;
  /**
   * After finalize(): lowers the pages block tables may use to n (2..info().numPages), e.g. so that every rank of a
   * tensor-parallel group accepts the same pages. The pool itself keeps its memory.
   */
  limitPages(n: number): void;
  /** Releases weights and the KV pool; the engine is unusable afterwards. A follower also fails its group. */
  close(): void;
}

/** Single kernels, exposed for tests against the TypeScript references and for benchmarks. Synchronous. */
export interface Kernels {
  /** y (rows, cols) = x / rms(x) * weight. */
  rmsNorm(x: Float32Array, weight: Float32Array, rows: number, eps: number): Float32Array;
  /** y (m, out) = x (m, in) W^T. */
  matmul(x: Float32Array, m: number, w: WeightTensor): Float32Array;
  /** In place on x (tokens, heads, headDim): rotary embedding, Hugging Face "rotate half" convention. */
  rope(x: Float32Array, positions: Int32Array, numHeads: number, headDim: number, theta: number): Float32Array;
  /** y = silu(gate) * up, elementwise. */
  siluMul(gate: Float32Array, up: Float32Array): Float32Array;
  /**
   * Decode/prefill attention for one sequence over a paged cache.
   * q (qLen, numHeads, headDim); kCache/vCache (numPages, blockSize, numKvHeads, headDim); the queries sit at
   * positions contextLen-qLen .. contextLen-1 and attend causally. Returns (qLen, numHeads, headDim).
   */
  pagedAttention(args: {
    q: Float32Array;
    qLen: number;
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    kCache: Float32Array;
    vCache: Float32Array;
    blockSize: number;
    blockTable: Int32Array;
    contextLen: number;
  }): Float32Array;
}

export interface NativeAddon {
  Engine: new (options: EngineOptions) => Engine;
  TpGroup: new (options: TpGroupOptions) => TpGroup;
  kernels: Kernels;
  /** What the build compiled: CPU SIMD level seen at run time, whether CUDA sources were compiled in. */
  buildInfo(): { simd: string; cuda: boolean; cudaDevices: number; version: string };
}

/** Error thrown by the addon: `code` is one of the NATIVE_* codes, the message says what to change. */
export interface NativeError extends Error {
  code: string;
}

function findAddon(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, "native", "build", "Release", "tpserve_native.node");
    if (existsSync(candidate)) return candidate;
    const sibling = join(dir, "build", "Release", "tpserve_native.node");
    if (existsSync(sibling)) return sibling;
    dir = dirname(dir);
  }
  throw Object.assign(
    new Error("native addon not built: run `npm run build:native` (needs cmake and a C++17 compiler)"),
    { code: "NATIVE_NOT_BUILT" },
  );
}

/** The addon's polled-step methods (engine_binding.cc), used only by the wrappers below. */
interface PolledSteps {
  startStep(
    mode: number,
    batch: ForwardBatch,
    sampling?: RowSampling[],
  ): [Int32Array | Float32Array, Int32Array] | undefined;
  finishStep(): void;
}

type StepMethod = (this: Engine & PolledSteps, batch: ForwardBatch, sampling?: RowSampling[]) => Promise<unknown>;

const nextTurn = () => new Promise<void>((resolve) => setImmediate(resolve));

/**
 * Defines forward, forwardArgmax and forwardSample: first the engine's polled path (EngineOptions.pollSteps), where
 * the step runs on the engine's thread while this loop keeps serving I/O between looks at the flag; without
 * polling, or with a step of this engine already in flight, the addon's *OnPool methods (the libuv pool).
 */
function installPolledSteps(proto: Record<string, unknown>): void {
  const modes: [string, number][] = [
    ["forward", 0],
    ["forwardArgmax", 1],
    ["forwardSample", 2],
  ];
  for (const [name, mode] of modes) {
    const viaPool = proto[`${name}OnPool`] as StepMethod;
    const polled: StepMethod = async function (batch, sampling) {
      const started = this.startStep(mode, batch, sampling);
      if (!started) return viaPool.call(this, batch, sampling);
      const [out, flag] = started;
      while (Atomics.load(flag, 0) === 0) await nextTurn();
      this.finishStep();
      return out;
    };
    proto[name] = polled;
  }
}

let cached: NativeAddon | undefined;

/** Loads the addon once. */
export function loadNative(): NativeAddon {
  if (!cached) {
    const require = createRequire(import.meta.url);
    const addon = require(findAddon()) as NativeAddon;
    installPolledSteps(addon.Engine.prototype as unknown as Record<string, unknown>);
    cached = addon;
  }
  return cached;
}
