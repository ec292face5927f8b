// Hugging Face config.json -> typed, validated ModelConfig, and the native ModelShape derived from it.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import type { DType, ModelShape } from "../../../native/index.js";
import { ModelLoadError } from "../errors.js";

export interface ModelConfig {
  modelType: string;
  architectures: string[];
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  ropeTheta: number;
  rmsNormEps: number;
  tieWordEmbeddings: boolean;
  bosTokenId: number | undefined;
  /** All end-of-sequence ids (config.json may give one id or a list). */
  eosTokenIds: number[];
  maxPositionEmbeddings: number;
  /** Checkpoint dtype from `torch_dtype` / `dtype` ("f32" when absent). */
  dtype: DType;
}

const SUPPORTED_TYPES = new Set(["llama", "mistral"]);

type Obj = Record<string, unknown>;

function isObj(v: unknown): v is Obj {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function fail(src: string, msg: string): never {
  throw new ModelLoadError(`${src}: ${msg}`);
}

function posInt(o: Obj, key: string, src: string, fallback?: number): number {
  const v = o[key];
  if (v === undefined || v === null) {
    if (fallback !== undefined) return fallback;
    fail(src, `missing required field "${key}"`);
  }
  if (typeof v !== "number" || !Number.isInteger(v) || v <= 0) {
    fail(src, `field "${key}" must be a positive integer, got ${JSON.stringify(v)}`);
  }
  return v;
}

function posNum(v: unknown, key: string, src: string): number {
  if (typeof v !== "number" || !Number.isFinite(v) || v <= 0) {
    fail(src, `field "${key}" must be a positive number, got ${JSON.stringify(v)}`);
  }
  return v;
}

function tokenIds(v: unknown, key: string, src: string): number[] {
  if (v === undefined || v === null) return [];
  const list = Array.isArray(v) ? v : [v];
  for (const x of list) {
    if (typeof x !== "number" || !Number.isInteger(x) || x < 0) {
      fail(src, `field "${key}" must be a token id or a list of token ids, got ${JSON.stringify(v)}`);
    }
  }
  return list as number[];
}

function parseDType(o: Obj, src: string): DType {
  const v = o["torch_dtype"] ?? o["dtype"];
  if (v === undefined || v === null) return "f32";
  switch (v) {
    case "bfloat16":
      return "bf16";
    case "float16":
    case "half":
      return "f16";
    case "float32":
    case "float":
      return "f32";
    default:
      fail(src, `field "torch_dtype" = ${JSON.stringify(v)} is not supported (bfloat16, float16 or float32)`);
  }
}

function checkRopeType(rope: Obj, where: string, src: string): void {
  const type = rope["rope_type"] ?? rope["type"] ?? "default";
  if (type !== "default") {
    fail(
      src,
      `${where}.rope_type = ${JSON.stringify(type)} is not supported; only "default" RoPE (no scaling) is implemented`,
    );
  }
}

function parseRopeTheta(o: Obj, src: string): number {
  const params = o["rope_parameters"];
  if (params !== undefined && params !== null) {
    if (!isObj(params)) fail(src, `field "rope_parameters" must be an object`);
    checkRopeType(params, "rope_parameters", src);
    if (params["rope_theta"] !== undefined) return posNum(params["rope_theta"], "rope_parameters.rope_theta", src);
  }
  const scaling = o["rope_scaling"];
  if (scaling !== undefined && scaling !== null) {
    if (!isObj(scaling)) fail(src, `field "rope_scaling" must be an object or null`);
    checkRopeType(scaling, "rope_scaling", src);
  }
  if (o["rope_theta"] === undefined) return 10000;
  return posNum(o["rope_theta"], "rope_theta", src);
}

/** Builds a ModelConfig from a parsed config.json object (also used for dummy configs in tests and benchmarks). */
export function modelConfigFromJson(obj: unknown, src = "config.json"): ModelConfig {
  if (!isObj(obj)) fail(src, "must be a JSON object");
  const modelType = obj["model_type"] ?? "llama";
  if (typeof modelType !== "string" || !SUPPORTED_TYPES.has(modelType)) {
    fail(
      src,
      `model_type ${JSON.stringify(modelType)} is not supported (supported: ${[...SUPPORTED_TYPES].join(", ")})`,
    );
  }
  const act = obj["hidden_act"] ?? "silu";
  if (act !== "silu") fail(src, `hidden_act ${JSON.stringify(act)} is not supported (only "silu")`);
  for (const key of ["attention_bias", "mlp_bias"]) {
    if (obj[key] === true) fail(src, `${key} = true is not supported (the engine has no bias tensors)`);
  }
  const archRaw = obj["architectures"];
  const architectures = Array.isArray(archRaw) ? archRaw.filter((a): a is string => typeof a === "string") : [];

  const hiddenSize = posInt(obj, "hidden_size", src);
  const numHeads = posInt(obj, "num_attention_heads", src);
  const numKvHeads = posInt(obj, "num_key_value_heads", src, numHeads);
  if (obj["head_dim"] === undefined && hiddenSize % numHeads !== 0) {
    fail(src, `hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads}; set "head_dim"`);
  }
  const headDim = posInt(obj, "head_dim", src, hiddenSize / numHeads);
  if (numHeads % numKvHeads !== 0) {
    fail(src, `num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  }
  if (headDim % 2 !== 0) fail(src, `head_dim ${headDim} must be even for RoPE`);
  const tie = obj["tie_word_embeddings"] ?? false;
  if (typeof tie !== "boolean") fail(src, `field "tie_word_embeddings" must be a boolean`);

  const bos = tokenIds(obj["bos_token_id"], "bos_token_id", src);
  return {
    modelType,
    architectures,
    vocabSize: posInt(obj, "vocab_size", src),
    hiddenSize,
    intermediateSize: posInt(obj, "intermediate_size", src),
    numLayers: posInt(obj, "num_hidden_layers", src),
    numHeads,
    numKvHeads,
    headDim,
    ropeTheta: parseRopeTheta(obj, src),
    rmsNormEps: obj["rms_norm_eps"] === undefined ? 1e-6 : posNum(obj["rms_norm_eps"], "rms_norm_eps", src),
    tieWordEmbeddings: tie,
    bosTokenId: bos[0],
    eosTokenIds: tokenIds(obj["eos_token_id"], "eos_token_id", src),
    maxPositionEmbeddings: posInt(obj, "max_position_embeddings", src, 2048),
    dtype: parseDType(obj, src),
  };
}

/** Reads and validates `dir/config.json`. */
export function loadModelConfig(dir: string): ModelConfig {
  const path = join(dir, "config.json");
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (e) {
    throw new ModelLoadError(`cannot read ${path}: ${(e as Error).message}`);
  }
  let obj: unknown;
  try {
    obj = JSON.parse(text);
  } catch (e) {
    throw new ModelLoadError(`${path} is not valid JSON: ${(e as Error).message}`);
  }
  return modelConfigFromJson(obj, path);
}

/** The hyper-parameters the native engine takes. */
export function toModelShape(cfg: ModelConfig): ModelShape {
  return {
    vocabSize: cfg.vocabSize,
    hiddenSize: cfg.hiddenSize,
    intermediateSize: cfg.intermediateSize,
    numLayers: cfg.numLayers,
    numHeads: cfg.numHeads,
    numKvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    ropeTheta: cfg.ropeTheta,
    rmsNormEps: cfg.rmsNormEps,
    tieWordEmbeddings: cfg.tieWordEmbeddings,
  };
}
