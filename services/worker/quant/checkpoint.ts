// Quantized checkpoints: which format a model folder holds (quantization_config in config.json, or
// quantize_config.json / quant_config.json beside it), and reading one linear layer's packed tensors into a
// QLinear with every tensor's dtype and shape checked. Layouts: formats/gptq-format.ts, formats/awq-format.ts and
// docs/quantization.md.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { ModelLoadError } from "../../common/errors.js";
import type { Checkpoint } from "../../common/model/safetensors.js";
import { unpackAwq } from "./formats/awq-format.js";
import { unpackGptq } from "./formats/gptq-format.js";
import { asFloat, asInt32 } from "./formats/packing.js";
import type { QLinear } from "./qlinear.js";

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

function need(ckpt: Checkpoint, name: string, dtypes: string[], shape: number[], why: string): Uint8Array {
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
  return ckpt.readRaw(name).data;
}

const FLOATS = ["F16", "BF16", "F32"];

/** Reads `${prefix}.{qweight,qzeros,scales[,g_idx]}` of a linear with `out` outputs and `inF` inputs. */
export function readQuantLinear(ckpt: Checkpoint, prefix: string, out: number, inF: number, qc: QuantConfig): QLinear {
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
  if (qc.method === "gptq") {
    const why = `GPTQ 4-bit, group ${G}, ${out} outputs x ${inF} inputs`;
    const qweight = asInt32(need(ckpt, `${prefix}.qweight`, ["I32"], [inF / 8, out], why));
    const qzeros = asInt32(need(ckpt, `${prefix}.qzeros`, ["I32"], [groups, out / 8], why));
    const sInfo = ckpt.info(`${prefix}.scales`);
    const scales = asFloat(
      `${prefix}.scales`,
      sInfo?.dtype ?? "F16",
      need(ckpt, `${prefix}.scales`, FLOATS, scaleShape, why),
    );
    let gIdx: Int32Array;
    if (ckpt.info(`${prefix}.g_idx`)) {
      gIdx = asInt32(need(ckpt, `${prefix}.g_idx`, ["I32"], [inF], why));
    } else if (qc.descAct) {
      throw new ModelLoadError(
        `quantized checkpoint is missing tensor "${prefix}.g_idx" (expected I32 [${inF}]; desc_act is true)`,
      );
    } else {
      gIdx = Int32Array.from({ length: inF }, (_, i) => Math.floor(i / G));
    }
    return unpackGptq({ qweight, qzeros, scales, gIdx }, out, inF, G, qc.v2);
  }
  const why = `AWQ gemm 4-bit, group ${G}, ${out} outputs x ${inF} inputs`;
  const qweight = asInt32(need(ckpt, `${prefix}.qweight`, ["I32"], [inF, out / 8], why));
  const qzeros = asInt32(need(ckpt, `${prefix}.qzeros`, ["I32"], [groups, out / 8], why));
  const sInfo = ckpt.info(`${prefix}.scales`);
  const scales = asFloat(
    `${prefix}.scales`,
    sInfo?.dtype ?? "F16",
    need(ckpt, `${prefix}.scales`, FLOATS, scaleShape, why),
  );
  return unpackAwq({ qweight, qzeros, scales }, out, inF, G);
}
