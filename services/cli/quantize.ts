// `tpserve quantize --method gptq|awq|rtn --bits 4 --group-size N [--sym|--asym] [--act-order] --calib FILE
// --out DIR`: quantizes a model folder and writes a GPTQ- or AWQ-format checkpoint, with progress on stderr and a
// per-layer error summary (also written to DIR/quantize_report.json).
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "../common/errors.js";
import type { Flags } from "../common/flags.js";
import { loadTokenizer } from "../common/model/tokenizer.js";
import { bundledModelDir } from "../common/paths.js";
import { type LinearReport, type QuantMethod, quantizeModel } from "../worker/quant/quantize-model.js";
import { writeQuantizedModel } from "../worker/quant/write.js";
import { readText } from "./eval.js";
import { progressBar } from "./progress.js";

export const QUANTIZE_HELP = `  tpserve quantize --method gptq|awq|rtn --bits 4 --group-size N [--sym|--asym] [--act-order] [--static-groups]
                   --calib FILE --out DIR [--model DIR] [--nsamples 64] [--seq-len 512] [--damp 0.01]
                   [--format gptq|awq] [--threads N] [--awq-grid 40] [--awq-loss linear|block]
                   [--awq-block-windows 16] [--awq-clip-passes 1] [--awq-clip-split]
                   [--awq-clip all|skip-qk]
                                          quantize a model into a GPTQ (gptq, rtn) or AWQ (awq) checkpoint`;

const pct = (v: number | null): string => (v === null ? "-" : `${(100 * v).toFixed(3)}%`);

export function formatReport(report: LinearReport[]): string {
  const lines = ["layer  linear  rel. output error  (RTN same groups)  note"];
  for (const r of report) {
    lines.push(
      `${String(r.layer).padStart(5)}  ${r.name.padEnd(6)}  ${pct(r.relError).padStart(17)}  ${pct(r.rtnRelError).padStart(17)}  ${r.note}`,
    );
  }
  const withErr = report.filter((r) => r.relError !== null && r.rtnRelError !== null);
  if (withErr.length > 0) {
    const mean = (f: (r: LinearReport) => number): number => withErr.reduce((a, r) => a + f(r), 0) / withErr.length;
    lines.push(
      `mean           ${pct(mean((r) => r.relError!)).padStart(17)}  ${pct(mean((r) => r.rtnRelError!)).padStart(17)}`,
    );
  }
  return lines.join("\n");
}

export async function quantizeCommand(f: Flags): Promise<number> {
  const method = f.choice("method", ["gptq", "awq", "rtn"] as const, "gptq") as QuantMethod;
  const bits = f.int("bits", 4, 1, 16);
  if (bits !== 4) throw new ConfigError(`--bits ${bits} is not supported: tpserve quantizes to 4 bits only (--bits 4)`);
  const groupSize = f.int("group-size", 128, 2, 1 << 16);
  if (f.bool("sym") && f.bool("asym")) throw new ConfigError("--sym and --asym exclude each other: pass one");
  const symmetric = f.bool("asym") ? false : f.bool("sym") ? true : method !== "awq";
  const actOrder = f.bool("act-order");
  const staticGroups = f.bool("static-groups");
  const format = f.choice("format", ["gptq", "awq"] as const, method === "awq" ? "awq" : "gptq");
  const calib = f.string("calib");
  const out = f.string("out");
  const model = f.string("model", bundledModelDir());
  const nsamples = f.int("nsamples", 64, 1, 4096);
  const seqLen = f.int("seq-len", 512, 16, 8192);
  const dampPercent = f.float("damp", 0.01, 0, 1);
  const threads = f.has("threads") ? f.int("threads", 0, 0, 1024) : undefined;
  const awqGrid = f.int("awq-grid", 40, 2, 1000);
  const awqLoss = f.choice("awq-loss", ["linear", "block"] as const, "linear");
  const awqBlockWindows = f.int("awq-block-windows", 16, 1, 4096);
  const awqClipPasses = f.int("awq-clip-passes", 1, 1, 100);
  const awqClipSplit = f.bool("awq-clip-split");
  const awqClipQk = f.choice("awq-clip", ["all", "skip-qk"] as const, "all") === "all";
  f.rejectUnknown();
  if (!out) throw new ConfigError("--out DIR is required: the folder to write the quantized model to");
  if (method !== "rtn" && !calib) {
    throw new ConfigError(
      `--method ${method} needs calibration text: pass --calib FILE (e.g. data/brown/brown.train.txt)`,
    );
  }
  if (format === "awq" && actOrder) throw new ConfigError("--act-order needs --format gptq: AWQ files have no g_idx");
  if ((actOrder || staticGroups) && method !== "gptq") {
    throw new ConfigError("--act-order and --static-groups apply to --method gptq only");
  }
  const bars = new Map<string, (d: number, t: number, s: string) => void>();
  const result = await quantizeModel({
    modelDir: model,
    method,
    format,
    groupSize,
    symmetric,
    actOrder,
    staticGroups,
    dampPercent,
    ...(calib ? { calibText: readText(calib) } : {}),
    tokenizer: loadTokenizer(model),
    nsamples,
    seqLen,
    awqGrid,
    awqLoss,
    awqBlockWindows,
    awqClipPasses,
    awqClipSplit,
    awqClipQk,
    ...(threads !== undefined ? { threads } : {}),
    onProgress: (stage, done, total, detail) => {
      let bar = bars.get(stage);
      if (!bar) {
        bar = progressBar(stage);
        bars.set(stage, bar);
      }
      bar(done, total, detail);
    },
  });
  const quantConfig: Record<string, unknown> =
    format === "gptq"
      ? {
          quant_method: "gptq",
          bits: 4,
          group_size: groupSize,
          desc_act: actOrder && !staticGroups,
          static_groups: staticGroups,
          sym: symmetric,
          damp_percent: dampPercent,
          true_sequential: false,
          checkpoint_format: "gptq",
          quantizer: `tpserve ${method}`,
        }
      : {
          quant_method: "awq",
          bits: 4,
          group_size: groupSize,
          zero_point: true,
          version: "gemm",
          quantizer: `tpserve ${method}`,
        };
  const written = writeQuantizedModel({
    srcDir: model,
    outDir: out,
    format,
    linears: result.linears,
    replaced: result.replaced,
    quantConfig,
  });
  const summary = formatReport(result.report);
  process.stderr.write(`${summary}\n`);
  writeFileSync(
    join(out, "quantize_report.json"),
    `${JSON.stringify({ method, format, groupSize, symmetric, actOrder, staticGroups, calib, nsamples, seqLen, seconds: result.seconds, layers: result.report }, null, 2)}\n`,
  );
  console.log(
    JSON.stringify({
      out,
      method,
      format,
      group_size: groupSize,
      sym: symmetric,
      act_order: actOrder,
      bytes: written.bytes,
      seconds: result.seconds,
    }),
  );
  return 0;
}
