// Writes a quantized model folder: config.json with quantization_config (and quantize_config.json for GPTQ, as
// AutoGPTQ does), the tokenizer files, and model.safetensors where each quantized linear's `.weight` is replaced
// by its packed tensors (formats/) and every other tensor is copied as stored (or as float32 when AWQ changed it).
import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { fromFloat32, openCheckpoint, type WriteTensor, writeSafetensors } from "../../common/model/safetensors.js";
import { packAwq } from "./formats/awq-format.js";
import { packGptq } from "./formats/gptq-format.js";
import type { QLinear } from "./qlinear.js";

export interface WriteOptions {
  srcDir: string;
  outDir: string;
  format: "gptq" | "awq";
  linears: Map<string, QLinear>;
  replaced: Map<string, Float32Array>;
  /** Written as quantization_config (and quantize_config.json for GPTQ). */
  quantConfig: Record<string, unknown>;
}

const COPY = ["tokenizer.json", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"];

export function writeQuantizedModel(o: WriteOptions): { bytes: number; file: string } {
  mkdirSync(o.outDir, { recursive: true });
  const cfg = JSON.parse(readFileSync(join(o.srcDir, "config.json"), "utf8")) as Record<string, unknown>;
  cfg["quantization_config"] = o.quantConfig;
  writeFileSync(join(o.outDir, "config.json"), `${JSON.stringify(cfg, null, 2)}\n`);
  if (o.format === "gptq")
    writeFileSync(join(o.outDir, "quantize_config.json"), `${JSON.stringify(o.quantConfig, null, 2)}\n`);
  for (const f of COPY) if (existsSync(join(o.srcDir, f))) copyFileSync(join(o.srcDir, f), join(o.outDir, f));
  const ckpt = openCheckpoint(o.srcDir);
  const tensors: Record<string, WriteTensor> = {};
  try {
    for (const name of ckpt.names()) {
      const prefix = name.replace(/\.weight$/, "");
      const q = name.endsWith(".weight") ? o.linears.get(prefix) : undefined;
      if (q) {
        const packed = o.format === "gptq" ? packGptq(q) : packAwq(q);
        for (const [k, t] of Object.entries(packed)) tensors[`${prefix}.${k}`] = t;
        continue;
      }
      const r = o.replaced.get(name);
      if (r) {
        tensors[name] = { dtype: "F32", shape: [r.length], data: fromFloat32(r, "F32") };
        continue;
      }
      const raw = ckpt.read(name);
      tensors[name] = { dtype: raw.dtype, shape: raw.shape, data: raw.data };
    }
  } finally {
    ckpt.close();
  }
  const file = join(o.outDir, "model.safetensors");
  writeSafetensors(file, tensors, { format: "pt", quantized_by: "tpserve" });
  return { bytes: readFileSync(file).byteLength, file };
}
