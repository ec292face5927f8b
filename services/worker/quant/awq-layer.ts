// AWQ's scale step for one decoder layer: for each group of linears sharing an input (q/k/v after the attention
// RMSNorm, gate/up after the MLP RMSNorm, down after up) search the channel scales, then fold them: the linears'
// input columns are multiplied by s, the producer (RMSNorm weight or up's output rows) divided by s.
import type { Kernels } from "../../../native/index.js";
import type { ModelConfig } from "../../common/model/config.js";
import { type AwqOptions, type BlockLoss, type Linear, quadLoss, searchScales } from "./awq.js";
import { attentionBlock, mlpBlock, squaredError } from "./awq-block.js";
import type { SiteSamples } from "./calibrate.js";
import type { InputStats } from "./hessian.js";

export interface AwqLayerInput {
  kernels: Kernels;
  cfg: ModelConfig;
  /** Hugging Face prefix of the layer, e.g. model.layers.3 */
  prefix: string;
  /** The layer's seven linears (q k v o gate up down); their `w` is replaced by the scaled weights. */
  linears: Linear[];
  stats: InputStats[];
  /** Raw inputs of sites 0 (attn_in) and 2 (mlp_in) for the block-output loss; without them the loss is quadLoss. */
  samples?: SiteSamples;
  opts: AwqOptions;
  /** fp weight of a Hugging Face tensor (the RMSNorm weights). */
  weight: (hf: string) => Float32Array;
  /** Called after each group's search (3 per layer) with the group's linears, e.g. "gate+up". */
  onGroup?: (done: number, names: string) => void;
}

export interface AwqLayerResult {
  /** Input site -> Hessian of the scaled input (x / s). */
  scaledH: Map<number, Float32Array>;
  /** Hugging Face tensor -> new values (RMSNorm weights divided by s). */
  replaced: Map<string, Float32Array>;
  /** Linear name -> note for the report (chosen exponent, loss used, error reduction). */
  notes: Map<string, string>;
}

/** The block losses of a layer from its captured inputs: attention output for q/k/v, MLP output for gate/up. */
export function blockLosses(
  kernels: Kernels,
  cfg: ModelConfig,
  linears: Linear[],
  samples: SiteSamples,
): { qkv: BlockLoss; gateUp: BlockLoss } {
  const w = (n: string): Float32Array => linears.find((l) => l.name === n)!.w;
  const shape = {
    hidden: cfg.hiddenSize,
    heads: cfg.numHeads,
    kvHeads: cfg.numKvHeads,
    headDim: cfg.headDim,
    theta: cfg.ropeTheta,
  };
  const nw = samples.windows.length;
  const T = samples.seqLen;
  const xa = samples.rows.get(0)!;
  const xm = samples.rows.get(2)!;
  const fpAttn = { q: w("q"), k: w("k"), v: w("v"), o: w("o") };
  const refAttn = attentionBlock(kernels, xa, nw, T, fpAttn, shape);
  const fpMlp = { gate: w("gate"), up: w("up"), down: w("down") };
  const refMlp = mlpBlock(kernels, xm, nw * T, cfg.hiddenSize, cfg.intermediateSize, fpMlp);
  return {
    qkv: (d) =>
      squaredError(attentionBlock(kernels, xa, nw, T, { ...fpAttn, q: d[0]!, k: d[1]!, v: d[2]! }, shape), refAttn),
    gateUp: (d) =>
      squaredError(
        mlpBlock(kernels, xm, nw * T, cfg.hiddenSize, cfg.intermediateSize, { ...fpMlp, gate: d[0]!, up: d[1]! }),
        refMlp,
      ),
  };
}

export function awqScaleLayer(a: AwqLayerInput): AwqLayerResult {
  const byName = (n: string): Linear => a.linears.find((x) => x.name === n)!;
  const p = a.prefix;
  const hOrig = (site: number): Float32Array => a.stats[site]!.scaled();
  const block = a.samples ? blockLosses(a.kernels, a.cfg, a.linears, a.samples) : undefined;
  const groups = [
    { names: ["q", "k", "v"], site: 0, prev: `${p}.input_layernorm.weight`, loss: block?.qkv },
    { names: ["gate", "up"], site: 2, prev: `${p}.post_attention_layernorm.weight`, loss: block?.gateUp },
    // down's block is down itself: trace(D H D^T) is its exact output error.
    { names: ["down"], site: 3, prev: "up", loss: undefined },
  ];
  // Every search sees the layer's fp weights (the gate/up block runs with fp down).
  const found = groups.map((g, i) => {
    const lin = g.names.map(byName);
    const loss = g.loss ?? quadLoss(a.kernels, lin, hOrig(g.site));
    const r = searchScales(lin, a.stats[g.site]!.meanAbs(), a.opts, loss);
    a.onGroup?.(i + 1, g.names.join("+"));
    return r;
  });
  const result: AwqLayerResult = { scaledH: new Map(), replaced: new Map(), notes: new Map() };
  for (let gi = 0; gi < groups.length; gi++) {
    const g = groups[gi]!;
    const f = found[gi]!;
    const s = f.scales;
    result.scaledH.set(g.site, a.stats[g.site]!.scaled(s));
    const gain =
      f.baseError > 0 ? ` ${g.loss ? "block" : "linear"} -${(100 * (1 - f.error / f.baseError)).toFixed(1)}%` : "";
    for (const n of g.names) {
      const L = byName(n);
      const w = new Float32Array(L.w.length);
      for (let r = 0; r < L.rows; r++)
        for (let c = 0; c < L.cols; c++) w[r * L.cols + c] = L.w[r * L.cols + c]! * s[c]!;
      L.w = w;
      result.notes.set(n, `a=${f.ratio.toFixed(2)}${f.duo ? " duo" : ""}${gain}`);
    }
    if (g.prev === "up") {
      const up = byName("up");
      const w = new Float32Array(up.w.length);
      for (let r = 0; r < up.rows; r++)
        for (let c = 0; c < up.cols; c++) w[r * up.cols + c] = up.w[r * up.cols + c]! / s[r]!;
      up.w = w;
    } else {
      const norm = a.weight(g.prev);
      for (let c = 0; c < norm.length; c++) norm[c] = norm[c]! / s[c]!;
      result.replaced.set(g.prev, norm);
    }
  }
  return result;
}
