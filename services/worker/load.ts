// Loads a model's weights into the native engine: Hugging Face tensor names -> engine names, optional RTN int4
// quantization of the decoder-layer linears, or seeded random ("dummy") weights for benchmarks.
import type { DType, Engine, Int4Tensor, WeightTensor } from "../../native/index.js";
import { ConfigError, ModelLoadError } from "../common/errors.js";
import type { ModelConfig } from "../common/model/config.js";
import { type Checkpoint, fromFloat32, openCheckpoint, type StDType, toFloat32 } from "../common/model/safetensors.js";
import { type QuantConfig, readQuantConfig, readQuantInt4 } from "./quant/checkpoint.js";
import { nf4Bytes, quantizeNf4 } from "./quant/nf4.js";
import { checkGroupSize, quantizeRtn } from "./quant/rtn.js";
import {
  checkCheckpointShards,
  checkShardGroups,
  checkTpShape,
  type Slice,
  shardSlice,
  sliceShape,
  type TpRank,
} from "./shard.js";

export interface LoadOptions {
  dir?: string;
  config: ModelConfig;
  /** "nf4": bitsandbytes-style NF4 (block 64, double-quantized absmax) at load. */
  quantization: "none" | "int4" | "nf4";
  groupSize: 32 | 64 | 128;
  symmetric: boolean;
  loadFormat: "safetensors" | "dummy";
  seed?: number;
  /** Dummy int4 weights only (benchmarks): the decoder layers' linears get an act-order input permutation. */
  dummyActOrder?: boolean;
  /** Tensor parallelism: load only this rank's shard of every tensor (ranged reads of the checkpoint). */
  tp?: TpRank;
  onProgress?: (done: number, total: number, name: string) => void;
}

export interface LoadSummary {
  tensors: number;
  /** Bytes handed to the engine (dense data, or qweight + scales + zeros). */
  bytes: number;
  /** "int4": RTN at load; "gptq" / "awq": read from a quantized checkpoint (quantization_config). */
  quantization: "none" | "int4" | "nf4" | "gptq" | "awq";
  /** Tensor bytes read from the checkpoint files (0 for dummy weights). */
  bytesRead: number;
  ms: number;
}

export interface TensorSpec {
  /** Engine name. */
  name: string;
  /** Hugging Face checkpoint name. */
  hf: string;
  shape: number[];
  /** Linear layer inside a decoder layer (quantized under int4). */
  linear: boolean;
}

/** Every tensor the engine takes for this config, in load order. */
export function tensorSpecs(cfg: ModelConfig): TensorSpec[] {
  const h = cfg.hiddenSize;
  const qDim = cfg.numHeads * cfg.headDim;
  const kvDim = cfg.numKvHeads * cfg.headDim;
  const inter = cfg.intermediateSize;
  const specs: TensorSpec[] = [
    { name: "embed", hf: "model.embed_tokens.weight", shape: [cfg.vocabSize, h], linear: false },
  ];
  for (let i = 0; i < cfg.numLayers; i++) {
    const p = `model.layers.${i}`;
    const l = `layers.${i}`;
    const lin = (name: string, hf: string, shape: number[]): TensorSpec => ({
      name: `${l}.${name}`,
      hf: `${p}.${hf}.weight`,
      shape,
      linear: true,
    });
    specs.push(
      { name: `${l}.attn_norm`, hf: `${p}.input_layernorm.weight`, shape: [h], linear: false },
      lin("q", "self_attn.q_proj", [qDim, h]),
      lin("k", "self_attn.k_proj", [kvDim, h]),
      lin("v", "self_attn.v_proj", [kvDim, h]),
      lin("o", "self_attn.o_proj", [h, qDim]),
      { name: `${l}.mlp_norm`, hf: `${p}.post_attention_layernorm.weight`, shape: [h], linear: false },
      lin("gate", "mlp.gate_proj", [inter, h]),
      lin("up", "mlp.up_proj", [inter, h]),
      lin("down", "mlp.down_proj", [h, inter]),
    );
  }
  specs.push({ name: "final_norm", hf: "model.norm.weight", shape: [h], linear: false });
  // Tied models reuse `embed` in the engine; a stored lm_head.weight (a copy of it) is skipped.
  if (!cfg.tieWordEmbeddings) {
    specs.push({ name: "lm_head", hf: "lm_head.weight", shape: [cfg.vocabSize, h], linear: false });
  }
  return specs;
}

const NATIVE_DTYPE: Record<StDType, DType> = { BF16: "bf16", F16: "f16", F32: "f32" };

function tensorBytes(t: WeightTensor): number {
  if (t.kind === "dense") return t.data.byteLength;
  if (t.kind === "nf4") return nf4Bytes(t);
  return t.qweight.byteLength + t.scales.byteLength + (t.zeros?.byteLength ?? 0) + (t.perm?.byteLength ?? 0);
}

const fmtShape = (s: number[]): string => `[${s.join(", ")}]`;

/** xorshift128-style 32-bit generator (fast, seeded, not cryptographic). */
function makeRng(seed: number): () => number {
  let a = seed >>> 0 || 0x9e3779b9;
  let b = 0x243f6a88;
  let c = 0xb7e15162;
  let d = 0x85a308d3;
  return () => {
    const t = a ^ (a << 11);
    a = b;
    b = c;
    c = d;
    d = (d ^ (d >>> 19) ^ (t ^ (t >>> 8))) >>> 0;
    return d;
  };
}

const POOL = 1 << 20;
const CHUNK = 4096;
const DUMMY_STD = 0.02;

/** Seeded random source for dummy weights: pools of random values, copied out in chunks at random offsets (fast). */
class DummySource {
  private readonly rng: () => number;
  private readonly normals = new Float32Array(POOL);
  private readonly bytes = new Uint8Array(POOL);
  constructor(seed: number) {
    this.rng = makeRng(seed);
    // Approximately normal (Irwin-Hall of four random bytes), mean 0, standard deviation DUMMY_STD.
    const k = DUMMY_STD / Math.sqrt((4 * (256 * 256 - 1)) / 12);
    for (let i = 0; i < POOL; i++) {
      const x = this.rng();
      this.normals[i] = ((x & 255) + ((x >>> 8) & 255) + ((x >>> 16) & 255) + (x >>> 24) - 510) * k;
      this.bytes[i] = this.rng() & 255;
    }
  }
  private fill<T extends Float32Array | Uint8Array>(out: T, pool: T): T {
    for (let i = 0; i < out.length; i += CHUNK) {
      const n = Math.min(CHUNK, out.length - i);
      const at = this.rng() % (POOL - CHUNK);
      out.set(pool.subarray(at, at + n), i);
    }
    return out;
  }
  normal(n: number): Float32Array {
    return this.fill(new Float32Array(n), this.normals);
  }
  randomBytes(n: number): Uint8Array {
    return this.fill(new Uint8Array(n), this.bytes);
  }
}

/**
 * Random int4 weights. actOrder: the fixed permutation of dummyPerm; for a row-parallel shard (`inputs`, at tp > 1)
 * its range of the whole layer's permutation, which picks from the whole input (permCols), as an act-order
 * checkpoint's o and down shards load (quant/checkpoint.ts, readQuantInt4).
 */
function dummyInt4(
  rows: number,
  cols: number,
  opts: LoadOptions,
  src: DummySource,
  actOrder = false,
  inputs?: { begin: number; end: number; whole: number },
): Int4Tensor {
  const qweight = src.randomBytes((rows * cols) / 2);
  const groups = (rows * cols) / opts.groupSize;
  const scales = new Float32Array(groups);
  const jitter = src.randomBytes(groups);
  for (let i = 0; i < groups; i++) scales[i] = (DUMMY_STD / 7) * (0.9 + (jitter[i]! / 255) * 0.2);
  const t: Int4Tensor = { kind: "int4", rows, cols, groupSize: opts.groupSize, qweight, scales };
  if (!opts.symmetric) t.zeros = new Uint8Array(groups).fill(8);
  if (actOrder && inputs && inputs.whole > cols) {
    t.perm = dummyPerm(inputs.whole).slice(inputs.begin, inputs.end);
    t.permCols = inputs.whole;
  } else if (actOrder) {
    t.perm = dummyPerm(cols);
  }
  return t;
}

/** A fixed pseudo-random permutation of 0..n-1, the same for every matrix of n inputs (q/k/v and gate/up share it). */
function dummyPerm(n: number): Int32Array {
  const perm = Int32Array.from({ length: n }, (_, i) => i);
  let s = 0x9e3779b9 ^ n;
  for (let i = n - 1; i > 0; i--) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    const j = s % (i + 1);
    const t = perm[i]!;
    perm[i] = perm[j]!;
    perm[j] = t;
  }
  return perm;
}

function fromCheckpoint(
  ckpt: Checkpoint,
  spec: TensorSpec,
  opts: LoadOptions,
  slice?: Slice,
  qc?: QuantConfig,
): WeightTensor {
  if (qc && spec.linear) {
    const [rows, cols] = spec.shape as [number, number];
    const prefix = spec.hf.replace(/\.weight$/, "");
    const shard = slice && { ...slice, world: opts.tp?.world ?? 1 };
    return readQuantInt4(ckpt, prefix, rows, cols, qc, shard);
  }
  const info = ckpt.info(spec.hf);
  if (!info) {
    throw new ModelLoadError(
      `checkpoint ${opts.dir} is missing tensor "${spec.hf}" (expected shape ${fmtShape(spec.shape)})`,
    );
  }
  const same = info.shape.length === spec.shape.length && info.shape.every((d, i) => d === spec.shape[i]);
  if (!same) {
    throw new ModelLoadError(
      `tensor "${spec.hf}" has shape ${fmtShape(info.shape)} but config.json implies ${fmtShape(spec.shape)}`,
    );
  }
  const raw = slice ? ckpt.readSlice(spec.hf, slice.dim, slice.begin, slice.end) : ckpt.read(spec.hf);
  if (spec.linear && opts.quantization === "nf4") {
    const [rows, cols] = raw.shape as [number, number];
    return quantizeNf4(toFloat32(raw.data, raw.dtype), rows, cols, { blockSize: 64, doubleQuant: true, name: spec.hf });
  }
  if (spec.linear && opts.quantization === "int4") {
    const [rows, cols] = raw.shape as [number, number];
    return quantizeRtn(toFloat32(raw.data, raw.dtype), rows, cols, {
      groupSize: opts.groupSize,
      symmetric: opts.symmetric,
      name: spec.hf,
    });
  }
  return { kind: "dense", dtype: NATIVE_DTYPE[raw.dtype], shape: raw.shape, data: raw.data };
}

function dummy(spec: TensorSpec, opts: LoadOptions, src: DummySource, shape: number[], slice?: Slice): WeightTensor {
  const n = shape.reduce((a, b) => a * b, 1);
  if (spec.linear && opts.quantization === "nf4") {
    const [rows, cols] = shape as [number, number];
    return quantizeNf4(src.normal(n), rows, cols, { blockSize: 64, doubleQuant: true, name: spec.hf });
  }
  if (spec.linear && opts.quantization === "int4") {
    const [rows, cols] = shape as [number, number];
    const inputs = slice?.dim === 1 ? { begin: slice.begin, end: slice.end, whole: spec.shape[1]! } : undefined;
    return dummyInt4(rows, cols, opts, src, opts.dummyActOrder === true && spec.name.startsWith("layers."), inputs);
  }
  // Stored as bf16, like the checkpoints dummy weights stand in for (and half the bytes to hand over).
  const values = shape.length === 1 ? new Float32Array(n).fill(1) : src.normal(n);
  return { kind: "dense", dtype: "bf16", shape: [...shape], data: fromFloat32(values, "BF16") };
}

/** Loads all weights into `engine` and finalizes it. */
export function loadWeights(engine: Engine, opts: LoadOptions): LoadSummary {
  const start = performance.now();
  const cfg = opts.config;
  const specs = tensorSpecs(cfg);
  const tp = opts.tp ?? { rank: 0, world: 1 };
  checkTpShape(cfg, tp.world);
  if (opts.quantization === "int4") {
    for (const s of specs) if (s.linear) checkGroupSize(s.name, s.shape[1]!, opts.groupSize);
    checkShardGroups(cfg, tp.world, opts.groupSize);
  }
  let ckpt: Checkpoint | undefined;
  let qc: QuantConfig | undefined;
  if (opts.loadFormat === "safetensors") {
    if (!opts.dir) throw new ConfigError("loadFormat safetensors needs a model directory");
    qc = readQuantConfig(opts.dir);
    if (qc && opts.quantization !== "none") {
      throw new ConfigError(
        `${opts.dir} is already quantized (${qc.method}, ${qc.source}); drop --quantization ${opts.quantization} to load it as is`,
      );
    }
    if (qc) checkCheckpointShards(cfg, tp.world, qc.groupSize, qc.source);
    ckpt = openCheckpoint(opts.dir);
  }
  const src = ckpt ? undefined : new DummySource(opts.seed ?? 0);
  let tensors = 0;
  let bytes = 0;
  let bytesRead = 0;
  try {
    for (let i = 0; i < specs.length; i++) {
      const spec = specs[i]!;
      const slice = shardSlice(spec, cfg, tp);
      const t = ckpt
        ? fromCheckpoint(ckpt, spec, opts, slice, qc)
        : dummy(spec, opts, src!, sliceShape(spec, slice), slice);
      engine.setTensor(spec.name, t);
      tensors++;
      bytes += tensorBytes(t);
      opts.onProgress?.(i + 1, specs.length, spec.name);
    }
  } finally {
    bytesRead = ckpt?.bytesRead() ?? 0;
    ckpt?.close();
  }
  engine.finalize();
  return {
    tensors,
    bytes,
    quantization: qc ? qc.method : opts.quantization,
    bytesRead,
    ms: performance.now() - start,
  };
}
