// Quick GPTQ / AWQ checkpoints of the bundled model for tests: every decoder linear round-to-nearest quantized
// (asymmetric, float16 scales, as the real quantizers store them) and written by the project's own writer
// (services/worker/quant/write.ts). Optionally some layers get an act-order g_idx.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadModelConfig } from "../../services/common/model/config.js";
import { openCheckpoint, toFloat32 } from "../../services/common/model/safetensors.js";
import { bundledModelDir } from "../../services/common/paths.js";
import { tensorSpecs } from "../../services/worker/load.js";
import { rtnQLinear } from "../../services/worker/quant/awq.js";
import type { QLinear } from "../../services/worker/quant/qlinear.js";
import { writeQuantizedModel } from "../../services/worker/quant/write.js";

export interface QuantCheckpointOptions {
  format: "gptq" | "awq";
  groupSize: number;
  /**
   * GPTQ only: Hugging Face prefixes (model.layers.0.self_attn.o_proj) whose g_idx becomes an act-order one: the
   * first column of every pair of neighbouring groups trades group with the other's (each group keeps G columns).
   */
  actOrder?: string[];
}

function permuteGroups(q: QLinear): QLinear {
  const gIdx = q.gIdx.slice();
  const G = q.groupSize;
  for (let g = 0; g + 1 < q.cols / G; g += 2) {
    gIdx[g * G] = g + 1;
    gIdx[(g + 1) * G] = g;
  }
  return { ...q, gIdx };
}

/** Writes the checkpoint into a new temporary folder and returns the folder. */
export function writeQuantCheckpoint(o: QuantCheckpointOptions): string {
  const src = bundledModelDir();
  const cfg = loadModelConfig(src);
  const ckpt = openCheckpoint(src);
  const linears = new Map<string, QLinear>();
  const grid = { symmetric: false, half: true, ...(o.format === "gptq" ? { zeroMin: 1 } : {}) };
  try {
    for (const s of tensorSpecs(cfg)) {
      if (!s.linear) continue;
      const raw = ckpt.read(s.hf);
      const [rows, cols] = s.shape as [number, number];
      const prefix = s.hf.replace(/\.weight$/, "");
      const q = rtnQLinear(toFloat32(raw.data, raw.dtype), rows, cols, o.groupSize, grid);
      linears.set(prefix, o.actOrder?.includes(prefix) ? permuteGroups(q) : q);
    }
  } finally {
    ckpt.close();
  }
  const outDir = mkdtempSync(join(tmpdir(), `tpserve-${o.format}-g${o.groupSize}-`));
  const quantConfig: Record<string, unknown> =
    o.format === "gptq"
      ? {
          quant_method: "gptq",
          bits: 4,
          group_size: o.groupSize,
          desc_act: (o.actOrder?.length ?? 0) > 0,
          sym: false,
          checkpoint_format: "gptq",
        }
      : { quant_method: "awq", bits: 4, group_size: o.groupSize, zero_point: true, version: "gemm" };
  writeQuantizedModel({ srcDir: src, outDir, format: o.format, linears, replaced: new Map(), quantConfig });
  return outDir;
}
