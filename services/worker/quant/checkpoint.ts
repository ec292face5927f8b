// Quantized checkpoints: which format a model folder holds (quantization_config in config.json, or
// quantize_config.json / quant_config.json beside it), and reading one linear layer's packed tensors into a
// QLinear with every tensor's dtype and shape checked. Layouts: formats/gptq-format.ts, formats/awq-format.ts and
// docs/quantization.md.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import type { Int4Tensor } from "../../../native/index.js";
import { ModelLoadError } from "../../common/errors.js";
import type { Checkpoint } from "../../common/model/safetensors.js";
import { unpackAwq } from "./formats/awq-format.js";
import { unpackGptq } from "./formats/gptq-format.js";
import { asFloat, asInt32 } from "./formats/packing.js";
import { isTrivialGIdx, type QLinear, toInt4Tensor, trivialGIdx } from "./qlinear.js";

export interface QuantConfig {
  method: "gptq" | "awq";
  bits: 4;
  /** -1 in a file means one group per row: resolved per layer to its input size. */
  groupSize: number;
  /** GPTQ desc_act (act-order). */
  descAct: boolean;
  /** GPTQ sym (informational: zeros are read from qzeros either way). */
  sym: boolean;
  /** GPTQ zeros stored without the -1 (GPTQModel checkpoint_format "gptq_v2"). */
  v2: boolean;
  /** Where the config was found. */
  source: string;
}

type Obj = Record<string, unknown>;
const isObj = (v: unknown): v is Obj => typeof v === "object" && v !== null && !Array.isArray(v);

function parse(o: Obj, src: string): QuantConfig {
  const method = String(o["quant_method"] ?? (src.endsWith("quantize_config.json") ? "gptq" : "")).toLowerCase();
  if (method !== "gptq" && method !== "awq") {
    throw new ModelLoadError(
      `${src}: quant_method ${JSON.stringify(o["quant_method"])} is not supported, expected "gptq" or "awq"`,
    );
  }
  const bits = o["bits"] ?? o["w_bit"];
  if (bits !== 4) {
    throw new ModelLoadError(
      `${src}: bits ${JSON.stringify(bits)} is not supported, expected 4 (only 4-bit ${method} checkpoints load)`,
    );
  }
  const g = o["group_size"] ?? o["q_group_size"];
  if (typeof g !== "number" || !Number.isInteger(g) || (g <= 0 && g !== -1)) {
    throw new ModelLoadError(`${src}: group_size ${JSON.stringify(g)} must be a positive integer or -1`);
  }
  if (method === "awq") {
    const version = String(o["version"] ?? "gemm").toLowerCase();
    if (version !== "gemm") {
      throw new ModelLoadError(
        `${src}: AWQ version "${version}" is not supported, expected "gemm" (the packing tpserve reads)`,
      );
    }
    if (o["zero_point"] === false) {
      throw new ModelLoadError(`${src}: AWQ zero_point false is not supported, expected true`);
    }
  }
  const fmt = String(o["checkpoint_format"] ?? "gptq");
  if (method === "gptq" && fmt !== "gptq" && fmt !== "gptq_v2") {
    throw new ModelLoadError(`${src}: checkpoint_format "${fmt}" is not supported, expected "gptq" or "gptq_v2"`);
  }
  return {
    method,
    bits: 4,
    groupSize: g,
    descAct: o["desc_act"] === true,
    sym: o["sym"] !== false,
    v2: fmt === "gptq_v2",
    source: src,
  };
}

/** The quantization a model folder holds, or undefined for a plain (unquantized) checkpoint. */
export function readQuantConfig(dir: string): QuantConfig | undefined {
  const cfgPath = join(dir, "config.json");
  if (existsSync(cfgPath)) {
    const cfg: unknown = JSON.parse(readFileSync(cfgPath, "utf8"));
    if (isObj(cfg) && isObj(cfg["quantization_config"])) {
      return parse(cfg["quantization_config"], `${cfgPath} quantization_config`);
    }
  }
  for (const f of ["quantize_config.json", "quant_config.json"]) {
    const p = join(dir, f);
    if (existsSync(p)) {
      const o: unknown = JSON.parse(readFileSync(p, "utf8"));
      if (!isObj(o)) throw new ModelLoadError(`${p}: not a JSON object`);
      return parse(o, p);
    }
  }
  return undefined;
}

const fmt = (s: number[]): string => `[${s.join(", ")}]`;

/** Part of a stored tensor to read (Checkpoint.readRawSlice): dim 0 rows, dim 1 columns, [begin, end). */
type Part = { dim: 0 | 1; begin: number; end: number } | undefined;

function need(ckpt: Checkpoint, name: string, dtypes: string[], shape: number[], why: string, part?: Part): Uint8Array {
  const info = ckpt.info(name);
  if (!info)
    throw new ModelLoadError(
      `quantized checkpoint is missing tensor "${name}" (expected ${dtypes[0]} ${fmt(shape)}, ${why})`,
    );
  if (!dtypes.includes(info.dtype)) {
    throw new ModelLoadError(`tensor "${name}" has dtype ${info.dtype}, expected ${dtypes.join(" or ")} (${why})`);
  }
  const same = info.shape.length === shape.length && info.shape.every((d, i) => d === shape[i]);
  if (!same) throw new ModelLoadError(`tensor "${name}" has shape ${fmt(info.shape)}, expected ${fmt(shape)} (${why})`);
  return part ? ckpt.readRawSlice(name, part.dim, part.begin, part.end).data : ckpt.readRaw(name).data;
}

const FLOATS = ["F16", "BF16", "F32"];

function readScales(ckpt: Checkpoint, prefix: string, shape: number[], why: string, part: Part): Float32Array {
  const name = `${prefix}.scales`;
  return asFloat(name, ckpt.info(name)?.dtype ?? "F16", need(ckpt, name, FLOATS, shape, why, part));
}

/**
 * A tensor-parallel rank's share of a linear, in the engine's terms: dim 0 slices the outputs (column-parallel
 * q, k, v, gate, up), dim 1 the inputs (row-parallel o, down). `world` only names --tp in messages.
 */
export interface QuantShard {
  dim: 0 | 1;
  begin: number;
  end: number;
  world: number;
}

/** Packed-tensor parts of a shard (the stored tensors are [in-ish, out-ish]: outputs are columns). */
function parts(sh: QuantShard | undefined, G: number, method: "gptq" | "awq", prefix: string) {
  if (!sh) return { qweight: undefined, qzeros: undefined, scales: undefined };
  const { begin: b, end: e } = sh;
  const words = b % 8 === 0 && e % 8 === 0;
  const aligned = sh.dim === 0 ? words : b % G === 0 && e % G === 0 && (method === "awq" || words);
  if (!aligned) {
    throw new ModelLoadError(
      `${prefix}: the ${sh.dim === 0 ? "outputs" : "inputs"} [${b}, ${e}) of this rank at --tp ${sh.world} do not ` +
        `fall on ${sh.dim === 0 ? "8-output packed words" : `whole groups of ${G}`}; use a smaller --tp`,
    );
  }
  if (sh.dim === 0) {
    const cols = { dim: 1 as const, begin: b, end: e };
    const packed = { dim: 1 as const, begin: b / 8, end: e / 8 };
    return { qweight: method === "gptq" ? cols : packed, qzeros: packed, scales: cols };
  }
  const groups = { dim: 0 as const, begin: b / G, end: e / G };
  const rows =
    method === "gptq" ? { dim: 0 as const, begin: b / 8, end: e / 8 } : { dim: 0 as const, begin: b, end: e };
  return { qweight: rows, qzeros: groups, scales: groups };
}

/**
 * readQuantLinear in the engine's int4 layout. A row-parallel (o, down) shard of an act-order GPTQ layer is the
 * rank's range of whole groups in the stored (group-sorted) order: its columns come from anywhere in the input, so
 * its perm indexes the whole input (permCols) and the engine gathers the input from every rank first. Each rank
 * then holds 1 / tp of the layer, and the partial sums add up as for any row-parallel layer.
 */
export function readQuantInt4(
  ckpt: Checkpoint,
  prefix: string,
  out: number,
  inF: number,
  qc: QuantConfig,
  shard?: QuantShard,
): Int4Tensor {
  const t = readQuantLinear(ckpt, prefix, out, inF, qc, shard);
  const keep = shard?.dim === 1 && shard.world > 1 && t.cols === inF && shard.end - shard.begin < inF;
  return toInt4Tensor(t, prefix, keep ? { begin: shard.begin, end: shard.end } : undefined);
}

/**
 * Reads `${prefix}.{qweight,qzeros,scales[,g_idx]}` of a linear with `out` outputs and `inF` inputs, or only the
 * bytes of one tensor-parallel shard of it (ranged reads; g_idx is read whole, it is one int32 per input). A
 * row-parallel shard of an act-order layer is read whole (readQuantInt4 keeps the rank's range).
 */
export function readQuantLinear(
  ckpt: Checkpoint,
  prefix: string,
  out: number,
  inF: number,
  qc: QuantConfig,
  shard?: QuantShard,
): QLinear {
  const G = qc.groupSize === -1 ? inF : qc.groupSize;
  if (inF % G !== 0 || G % 2 !== 0) {
    throw new ModelLoadError(
      `${prefix}: group_size ${G} (${qc.source}) does not divide the input size ${inF}; the layer cannot be read`,
    );
  }
  if (out % 8 !== 0 || inF % 8 !== 0) {
    throw new ModelLoadError(
      `${prefix}: ${out}x${inF} is not a multiple of 8 in both dimensions, which 4-bit packing needs`,
    );
  }
  const groups = inF / G;
  const scaleShape = [groups, out];
  const p = parts(shard, G, qc.method, prefix);
  // The shard's own sizes: the unpacking below sees a smaller layer of the same layout.
  const outS = shard?.dim === 0 ? shard.end - shard.begin : out;
  const inS = shard?.dim === 1 ? shard.end - shard.begin : inF;
  if (qc.method === "gptq") {
    const why = `GPTQ 4-bit, group ${G}, ${out} outputs x ${inF} inputs`;
    let gIdx: Int32Array;
    if (ckpt.info(`${prefix}.g_idx`)) {
      gIdx = asInt32(need(ckpt, `${prefix}.g_idx`, ["I32"], [inF], why));
    } else if (qc.descAct) {
      throw new ModelLoadError(
        `quantized checkpoint is missing tensor "${prefix}.g_idx" (expected I32 [${inF}]; desc_act is true)`,
      );
    } else {
      gIdx = trivialGIdx(inF, G);
    }
    // Row-parallel act-order (a permuted g_idx): a group's columns are spread over the whole input, so the rank's
    // share is a range of whole groups in the stored order instead (toInt4Tensor's keep, readQuantInt4), and the
    // layer is read whole.
    const wholeRows = shard?.dim === 1 && !isTrivialGIdx(gIdx, G);
    const pr = wholeRows ? { qweight: undefined, qzeros: undefined, scales: undefined } : p;
    const qweight = asInt32(need(ckpt, `${prefix}.qweight`, ["I32"], [inF / 8, out], why, pr.qweight));
    const qzeros = asInt32(need(ckpt, `${prefix}.qzeros`, ["I32"], [groups, out / 8], why, pr.qzeros));
    const scales = readScales(ckpt, prefix, scaleShape, why, pr.scales);
    if (wholeRows) return unpackGptq({ qweight, qzeros, scales, gIdx }, outS, inF, G, qc.v2);
    if (shard?.dim === 1) gIdx = trivialGIdx(inS, G); // whole groups of the rank's own columns
    return unpackGptq({ qweight, qzeros, scales, gIdx }, outS, inS, G, qc.v2);
  }
  const why = `AWQ gemm 4-bit, group ${G}, ${out} outputs x ${inF} inputs`;
  const qweight = asInt32(need(ckpt, `${prefix}.qweight`, ["I32"], [inF, out / 8], why, p.qweight));
  const qzeros = asInt32(need(ckpt, `${prefix}.qzeros`, ["I32"], [groups, out / 8], why, p.qzeros));
  const scales = readScales(ckpt, prefix, scaleShape, why, p.scales);
  return unpackAwq({ qweight, qzeros, scales }, outS, inS, G);
}
