// `tpserve quantize`: quantizes every linear layer of a model's decoder layers with RTN, GPTQ or AWQ, one layer
// at a time. Calibration inputs of layer l come from the engine running the model whose layers 0..l-1 are already
// quantized (their dequantized weights are swapped in), as GPTQ and AWQ do.
import { loadNative } from "../../../native/index.js";
import type { ModelConfig } from "../../common/model/config.js";
import { loadModelConfig, toModelShape } from "../../common/model/config.js";
import { openCheckpoint, toFloat32 } from "../../common/model/safetensors.js";
import type { TpTokenizer } from "../../common/model/tokenizer.js";
import { loadWeights, tensorSpecs } from "../load.js";
import { type AwqOptions, type Linear, rtnQLinear } from "./awq.js";
import { searchClip } from "./awq-clip.js";
import { awqScaleLayer } from "./awq-layer.js";
import { calibrationWindows, captureLayerStats, SiteSamples, siteWidths, spreadWindows } from "./calibrate.js";
import { gptqQuantize } from "./gptq.js";
import { dense, type InputStats, quadError } from "./hessian.js";
import { dequantQLinear, type QLinear } from "./qlinear.js";

export type QuantMethod = "rtn" | "gptq" | "awq";

export interface QuantizeOptions {
  modelDir: string;
  method: QuantMethod;
  format: "gptq" | "awq";
  groupSize: number;
  symmetric: boolean;
  actOrder: boolean;
  staticGroups: boolean;
  dampPercent: number;
  calibText?: string;
  tokenizer: TpTokenizer;
  nsamples: number;
  seqLen: number;
  /** AWQ grid points for the scale exponent and the clip factors (40; AutoAWQ uses 20). */
  awqGrid?: number;
  /**
   * AWQ scale-search loss: "linear" (default) sums the per-linear trace(D H D^T) over all calibration tokens,
   * "block" compares the attention / MLP block's output on `awqBlockWindows` captured windows (AutoAWQ's way).
   */
  awqLoss?: "block" | "linear";
  /** Calibration windows the block loss runs on (16, spread over --nsamples). */
  awqBlockWindows?: number;
  /** AWQ clip search: coordinate-descent passes (1) and separate min/max factors (false); see awq-clip.ts. */
  awqClipPasses?: number;
  awqClipSplit?: boolean;
  /** Clip q_proj and k_proj too (true; AutoAWQ does not). */
  awqClipQk?: boolean;
  threads?: number;
  onProgress?: (stage: string, done: number, total: number, detail: string) => void;
}

export interface LinearReport {
  layer: number;
  name: string;
  /** Relative output error on the calibration inputs, sum |dW x|^2 / sum |W x|^2; null without calibration. */
  relError: number | null;
  /** The same for plain round-to-nearest with these group settings, for comparison. */
  rtnRelError: number | null;
  /** GPTQ: damping used; AWQ: chosen scale exponent. */
  note: string;
}

export interface QuantizedModel {
  config: ModelConfig;
  /** Hugging Face prefix (model.layers.i.self_attn.q_proj) -> quantized layer. */
  linears: Map<string, QLinear>;
  /** Hugging Face tensor name -> replaced float32 values (AWQ folds its scales into the RMSNorm weights). */
  replaced: Map<string, Float32Array>;
  report: LinearReport[];
  seconds: number;
}

const LINEARS = [
  { name: "q", hf: "self_attn.q_proj", site: 0 },
  { name: "k", hf: "self_attn.k_proj", site: 0 },
  { name: "v", hf: "self_attn.v_proj", site: 0 },
  { name: "o", hf: "self_attn.o_proj", site: 1 },
  { name: "gate", hf: "mlp.gate_proj", site: 2 },
  { name: "up", hf: "mlp.up_proj", site: 2 },
  { name: "down", hf: "mlp.down_proj", site: 3 },
] as const;

export async function quantizeModel(opts: QuantizeOptions): Promise<QuantizedModel> {
  const t0 = performance.now();
  const cfg = loadModelConfig(opts.modelDir);
  const native = loadNative();
  const kernels = native.kernels;
  const blockSize = 16;
  const pages = Math.ceil(opts.seqLen / blockSize);
  const engine = new native.Engine({
    shape: toModelShape(cfg),
    numPages: pages + 1,
    blockSize,
    maxBatchTokens: opts.seqLen,
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
  });
  const ckpt = openCheckpoint(opts.modelDir);
  try {
    const calibrated = opts.calibText !== undefined;
    if (calibrated) {
      loadWeights(engine, {
        dir: opts.modelDir,
        config: cfg,
        quantization: "none",
        groupSize: 128,
        symmetric: true,
        loadFormat: "safetensors",
      });
    }
    const windows = calibrated
      ? calibrationWindows(opts.calibText!, opts.tokenizer, {
          nsamples: opts.nsamples,
          seqLen: opts.seqLen,
          eos: cfg.eosTokenIds[0] ?? 2,
        })
      : [];
    const grid = { symmetric: opts.symmetric, half: true, ...(opts.format === "gptq" ? { zeroMin: 1 } : {}) };
    const specs = new Map(tensorSpecs(cfg).map((s) => [s.hf, s]));
    const weight = (hf: string): Float32Array => {
      const raw = ckpt.read(hf);
      return toFloat32(raw.data, raw.dtype);
    };
    const linears = new Map<string, QLinear>();
    const replaced = new Map<string, Float32Array>();
    const report: LinearReport[] = [];
    for (let l = 0; l < cfg.numLayers; l++) {
      const p = `model.layers.${l}`;
      const samples =
        calibrated && opts.method === "awq" && opts.awqLoss === "block"
          ? new SiteSamples(
              [0, 2],
              spreadWindows(windows.length, opts.awqBlockWindows ?? 16),
              opts.seqLen,
              siteWidths(cfg),
            )
          : undefined;
      const stats: InputStats[] | undefined = calibrated
        ? captureLayerStats(
            engine,
            kernels,
            cfg,
            l,
            windows,
            blockSize,
            (i, n) => opts.onProgress?.("calibrate", l * n + i, cfg.numLayers * n, `layer ${l}`),
            samples,
          )
        : undefined;
      const lin: Linear[] = LINEARS.map((d) => {
        const s = specs.get(`${p}.${d.hf}.weight`)!;
        return { name: d.name, w: weight(s.hf), rows: s.shape[0]!, cols: s.shape[1]! };
      });
      const byName = (n: string): Linear => lin.find((x) => x.name === n)!;
      const h64 = stats?.map((s) => s.h);
      const hOrig = stats?.map((s) => s.scaled());
      // Per linear: the weight that gets quantized and the Hessian of its (possibly rescaled) input.
      const used = new Map<string, { w: Float32Array; h?: Float32Array }>();
      const notes = new Map<string, string>();
      if (opts.method === "awq" && stats && hOrig) {
        const aopts: AwqOptions = { ...grid, groupSize: opts.groupSize, grid: opts.awqGrid ?? 40 };
        const r = awqScaleLayer({
          kernels,
          cfg,
          prefix: p,
          linears: lin,
          stats,
          ...(samples ? { samples } : {}),
          opts: aopts,
          weight,
          onGroup: (i, names) => opts.onProgress?.("awq search", l * 3 + i, cfg.numLayers * 3, `layer ${l} ${names}`),
        });
        for (const [hf, v] of r.replaced) replaced.set(hf, v);
        for (const [n, note] of r.notes) notes.set(n, note);
        for (const d of LINEARS) {
          used.set(d.name, { w: byName(d.name).w, h: r.scaledH.get(d.site) ?? hOrig[d.site]! });
        }
      } else {
        for (const d of LINEARS) used.set(d.name, { w: byName(d.name).w, ...(hOrig ? { h: hOrig[d.site]! } : {}) });
      }
      for (let i = 0; i < LINEARS.length; i++) {
        const d = LINEARS[i]!;
        const L = byName(d.name);
        const u = used.get(d.name)!;
        opts.onProgress?.(
          "quantize",
          l * LINEARS.length + i + 1,
          cfg.numLayers * LINEARS.length,
          `layer ${l} ${d.name}`,
        );
        let q: QLinear;
        if (opts.method === "gptq" && h64) {
          const r = gptqQuantize(u.w, L.rows, L.cols, h64[d.site]!, {
            ...grid,
            groupSize: opts.groupSize,
            actOrder: opts.actOrder,
            staticGroups: opts.staticGroups,
            dampPercent: opts.dampPercent,
          });
          q = r.q;
          notes.set(d.name, `damp ${r.damp}`);
        } else if (opts.method === "awq" && u.h && (opts.awqClipQk !== false || (d.name !== "q" && d.name !== "k"))) {
          // AutoAWQ leaves q and k unclipped (the q k^T product is hard to clip for); the search here minimizes
          // their exact output error, which measured better on the bundled model (docs/quantization.md).
          const clip = searchClip(kernels, u.w, L.rows, L.cols, u.h, {
            ...grid,
            groupSize: opts.groupSize,
            clipGrid: opts.awqGrid ?? 40,
            clipPasses: opts.awqClipPasses ?? 1,
            clipSplit: opts.awqClipSplit ?? false,
          });
          q = rtnQLinear(u.w, L.rows, L.cols, opts.groupSize, grid, clip);
        } else {
          q = rtnQLinear(u.w, L.rows, L.cols, opts.groupSize, grid);
        }
        linears.set(`${p}.${d.hf}`, q);
        let relError: number | null = null;
        let rtnRelError: number | null = null;
        if (u.h && hOrig) {
          const deq = dequantQLinear(q);
          const base = quadError(kernels, u.w, L.rows, L.cols, u.h);
          for (let j = 0; j < deq.length; j++) deq[j] = u.w[j]! - deq[j]!;
          relError = quadError(kernels, deq, L.rows, L.cols, u.h) / base;
          const orig = weight(`${p}.${d.hf}.weight`);
          const rq = dequantQLinear(rtnQLinear(orig, L.rows, L.cols, opts.groupSize, grid));
          for (let j = 0; j < rq.length; j++) rq[j] = orig[j]! - rq[j]!;
          rtnRelError = quadError(kernels, rq, L.rows, L.cols, hOrig[d.site]!) / base;
        }
        report.push({ layer: l, name: d.name, relError, rtnRelError, note: notes.get(d.name) ?? "" });
        if (calibrated && l + 1 < cfg.numLayers) {
          engine.setTensor(`layers.${l}.${d.name}`, dense(dequantQLinear(q), [L.rows, L.cols]));
        }
      }
      if (calibrated && l + 1 < cfg.numLayers) {
        for (const [hf, values] of replaced) {
          if (!hf.startsWith(`${p}.`)) continue;
          const name = hf.endsWith("input_layernorm.weight") ? `layers.${l}.attn_norm` : `layers.${l}.mlp_norm`;
          engine.setTensor(name, dense(values, [values.length]));
        }
        engine.finalize();
      }
    }
    return { config: cfg, linears, replaced, report, seconds: (performance.now() - t0) / 1000 };
  } finally {
    ckpt.close();
    engine.close();
  }
}
