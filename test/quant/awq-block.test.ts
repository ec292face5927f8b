// AWQ's block-output loss: the attention and MLP blocks computed from captured calibration inputs with the kernels
// reproduce what the engine's forward pass computes (checked against the next capture site of the same pass), the
// samples kept by the capture are the captured rows, and the block losses are zero for the fp weights only.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { loadModelConfig, toModelShape } from "../../services/common/model/config.js";
import { openCheckpoint, toFloat32 } from "../../services/common/model/safetensors.js";
import { loadTokenizer } from "../../services/common/model/tokenizer.js";
import { loadWeights } from "../../services/worker/load.js";
import { type Linear, rtnQLinear } from "../../services/worker/quant/awq.js";
import { attentionBlock, mlpBlock, squaredError } from "../../services/worker/quant/awq-block.js";
import { blockLosses } from "../../services/worker/quant/awq-layer.js";
import {
  calibrationWindows,
  captureLayerStats,
  SiteSamples,
  siteWidths,
  spreadWindows,
} from "../../services/worker/quant/calibrate.js";
import { dense } from "../../services/worker/quant/hessian.js";
import { dequantQLinear } from "../../services/worker/quant/qlinear.js";
import { asStored } from "../helpers/load-options.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");
const cfg = loadModelConfig(MODEL);
const native = loadNative();
const k = native.kernels;
const T = 48;
const LAYER = 1;
const TEXT = [
  "The jury said it did find that many of the voters were not informed about the new law and its costs.",
  "It was a quiet morning in the city, and the people walked slowly along the river towards the old bridge.",
  "The committee reported that the school would need more teachers and a larger building next year.",
].join("\n\n");

function capture(): { samples: SiteSamples; windows: number } {
  const e = new native.Engine({ shape: toModelShape(cfg), numPages: 8, blockSize: 16, maxBatchTokens: T, threads: 1 });
  loadWeights(e, asStored(cfg, { dir: MODEL }));
  const wins = calibrationWindows(TEXT, loadTokenizer(MODEL), { nsamples: 3, seqLen: T, eos: 2 });
  const samples = new SiteSamples([0, 1, 2, 3], [0, 2], T, siteWidths(cfg));
  captureLayerStats(e, k, cfg, LAYER, wins, 16, undefined, samples);
  e.close();
  expect(samples.complete).toBe(true);
  return { samples, windows: 2 };
}

function linears(): Linear[] {
  const ck = openCheckpoint(MODEL);
  const names = [
    ["q", "self_attn.q_proj"],
    ["k", "self_attn.k_proj"],
    ["v", "self_attn.v_proj"],
    ["o", "self_attn.o_proj"],
    ["gate", "mlp.gate_proj"],
    ["up", "mlp.up_proj"],
    ["down", "mlp.down_proj"],
  ] as const;
  const out = names.map(([name, hf]) => {
    const raw = ck.read(`model.layers.${LAYER}.${hf}.weight`);
    return { name, w: toFloat32(raw.data, raw.dtype), rows: raw.shape[0]!, cols: raw.shape[1]! };
  });
  ck.close();
  return out;
}

const relDiff = (a: Float32Array, b: Float32Array): number => {
  let n = 0;
  for (const v of b) n += v * v;
  return Math.sqrt(squaredError(a, b) / n);
};

describe("AWQ block outputs", () => {
  const { samples, windows } = capture();
  const lin = linears();
  const w = (n: string): Float32Array => lin.find((l) => l.name === n)!.w;
  const H = cfg.hiddenSize;
  const qd = cfg.numHeads * cfg.headDim;

  it("squaredError sums squared differences and refuses mismatched lengths", () => {
    expect(squaredError(Float32Array.of(1, 2, 3), Float32Array.of(1, 0, 6))).toBe(13);
    expect(() => squaredError(Float32Array.of(1), Float32Array.of(1, 2))).toThrow(/lengths differ/);
  });

  it("the attention block on captured attn_norm outputs equals o_proj of the captured attention output", () => {
    const got = attentionBlock(
      k,
      samples.rows.get(0)!,
      windows,
      T,
      { q: w("q"), k: w("k"), v: w("v"), o: w("o") },
      { hidden: H, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, theta: cfg.ropeTheta },
    );
    const want = k.matmul(samples.rows.get(1)!, windows * T, dense(w("o"), [H, qd]));
    expect(got.length).toBe(windows * T * H);
    expect(relDiff(got, want)).toBeLessThan(1e-5);
    // Windows are independent sequences: running the second window alone gives its rows.
    const second = attentionBlock(
      k,
      samples.rows.get(0)!.subarray(T * H),
      1,
      T,
      { q: w("q"), k: w("k"), v: w("v"), o: w("o") },
      { hidden: H, heads: cfg.numHeads, kvHeads: cfg.numKvHeads, headDim: cfg.headDim, theta: cfg.ropeTheta },
    );
    expect(relDiff(second, got.subarray(T * H))).toBeLessThan(1e-6);
  });

  it("the MLP block on captured mlp_norm outputs equals down_proj of the captured silu(gate)*up", () => {
    const I = cfg.intermediateSize;
    const got = mlpBlock(k, samples.rows.get(2)!, windows * T, H, I, {
      gate: w("gate"),
      up: w("up"),
      down: w("down"),
    });
    const want = k.matmul(samples.rows.get(3)!, windows * T, dense(w("down"), [H, I]));
    expect(relDiff(got, want)).toBeLessThan(1e-5);
  });

  it("block losses are zero for the fp weights and grow with quantization error", () => {
    const losses = blockLosses(k, cfg, lin, samples);
    const deq = (n: string, G: number): Float32Array => {
      const l = lin.find((x) => x.name === n)!;
      return dequantQLinear(rtnQLinear(l.w, l.rows, l.cols, G, { symmetric: false, half: true }));
    };
    expect(losses.qkv([w("q"), w("k"), w("v")])).toBe(0);
    expect(losses.gateUp([w("gate"), w("up")])).toBe(0);
    const qkv128 = losses.qkv([deq("q", 128), deq("k", 128), deq("v", 128)]);
    const qkv32 = losses.qkv([deq("q", 32), deq("k", 32), deq("v", 32)]);
    expect(qkv128).toBeGreaterThan(qkv32);
    expect(qkv32).toBeGreaterThan(0);
    const mlp128 = losses.gateUp([deq("gate", 128), deq("up", 128)]);
    expect(mlp128).toBeGreaterThan(losses.gateUp([deq("gate", 32), deq("up", 32)]));
    // Only the quantized linears count: fp q/k with quantized v still has an error.
    expect(losses.qkv([w("q"), w("k"), deq("v", 128)])).toBeGreaterThan(0);
  });

  it("spreadWindows picks distinct windows spread over the set", () => {
    expect(spreadWindows(64, 16)).toEqual(Array.from({ length: 16 }, (_, i) => 4 * i));
    expect(spreadWindows(3, 16)).toEqual([0, 1, 2]);
  });
});
