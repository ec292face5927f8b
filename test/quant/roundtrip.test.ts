// On the bundled model: a checkpoint written by `tpserve quantize` and read back through loadWeights gives
// logits identical to the engine holding the quantizer's in-memory result (GPTQ with act-order, AWQ); the
// calibration capture hands out the layer inputs the forward pass computes.
import { mkdtempSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type Engine, loadNative } from "../../native/index.js";
import { loadModelConfig, toModelShape } from "../../services/common/model/config.js";
import { openCheckpoint, toFloat32 } from "../../services/common/model/safetensors.js";
import { loadTokenizer } from "../../services/common/model/tokenizer.js";
import { loadWeights, tensorSpecs } from "../../services/worker/load.js";
import { readQuantConfig } from "../../services/worker/quant/checkpoint.js";
import { dense } from "../../services/worker/quant/hessian.js";
import { toInt4Tensor } from "../../services/worker/quant/qlinear.js";
import { type QuantizedModel, quantizeModel } from "../../services/worker/quant/quantize-model.js";
import { writeQuantizedModel } from "../../services/worker/quant/write.js";
import { asStored } from "../helpers/load-options.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");
const cfg = loadModelConfig(MODEL);
const native = loadNative();
const TEXT =
  "The jury said it did find that many of the voters were not informed.\n\nIt was a quiet morning in the city.";
const tok = loadTokenizer(MODEL);
const IDS = Int32Array.from(
  tok.encode("The committee said that the city would not pay for the new school.", { addSpecialTokens: true }),
);

function newEngine(): Engine {
  return new native.Engine({ shape: toModelShape(cfg), numPages: 8, blockSize: 16, maxBatchTokens: 64, threads: 1 });
}

function logits(e: Engine): Float32Array {
  const n = IDS.length;
  return e.forwardSync({
    tokens: IDS,
    seqLens: Int32Array.of(n),
    contextLens: Int32Array.of(n),
    blockTables: Int32Array.of(1, 2, 3, 4),
    maxBlocksPerSeq: 4,
    logits: "all",
  });
}

/** The engine holding the quantizer's result directly (no file in between). */
function fromMemory(q: QuantizedModel): Engine {
  const e = newEngine();
  const ck = openCheckpoint(MODEL);
  for (const s of tensorSpecs(cfg)) {
    const prefix = s.hf.replace(/\.weight$/, "");
    const ql = q.linears.get(prefix);
    if (ql) {
      e.setTensor(s.name, toInt4Tensor(ql, prefix));
      continue;
    }
    const r = q.replaced.get(s.hf);
    const raw = ck.read(s.hf);
    e.setTensor(s.name, dense(r ?? toFloat32(raw.data, raw.dtype), s.shape));
  }
  ck.close();
  e.finalize();
  return e;
}

async function roundTrip(method: "gptq" | "awq", actOrder: boolean): Promise<void> {
  const q = await quantizeModel({
    modelDir: MODEL,
    method,
    format: method,
    groupSize: 64,
    symmetric: method === "gptq",
    actOrder,
    staticGroups: false,
    dampPercent: 0.01,
    calibText: TEXT,
    tokenizer: tok,
    nsamples: 2,
    seqLen: 32,
    awqGrid: 6,
    // The block-output scale search (attention / MLP outputs on captured windows) runs end to end here.
    awqLoss: "block",
    threads: 1,
  });
  expect(q.report).toHaveLength(cfg.numLayers * 7);
  for (const r of q.report) expect(r.relError).toBeGreaterThan(0);
  const out = mkdtempSync(join(tmpdir(), `tpserve-${method}-`));
  writeQuantizedModel({
    srcDir: MODEL,
    outDir: out,
    format: method,
    linears: q.linears,
    replaced: q.replaced,
    quantConfig:
      method === "gptq"
        ? { quant_method: "gptq", bits: 4, group_size: 64, desc_act: actOrder, sym: true }
        : { quant_method: "awq", bits: 4, group_size: 64, zero_point: true, version: "gemm" },
  });
  expect(readQuantConfig(out)?.method).toBe(method);
  expect(() => loadWeights(newEngine(), asStored(cfg, { dir: out, quantization: "int4", groupSize: 64 }))).toThrow(
    /already quantized .*drop --quantization int4/,
  );
  const a = fromMemory(q);
  const b = newEngine();
  const sum = loadWeights(b, asStored(cfg, { dir: out }));
  expect(sum.quantization).toBe(method);
  const la = logits(a);
  const lb = logits(b);
  expect(lb).toEqual(la);
  // And the quantized model is still the model: its logits stay close to the unquantized ones.
  const ref = newEngine();
  loadWeights(ref, asStored(cfg, { dir: MODEL }));
  const lr = logits(ref);
  let diff = 0;
  let norm = 0;
  for (let i = 0; i < lr.length; i++) {
    diff += (lr[i]! - lb[i]!) ** 2;
    norm += lr[i]! ** 2;
  }
  expect(Math.sqrt(diff / norm)).toBeLessThan(0.1);
  for (const e of [a, b, ref]) e.close();
}

describe("quantized checkpoint round trip", () => {
  it("GPTQ with act-order: written then read back gives identical logits", async () => {
    await roundTrip("gptq", true);
  }, 120_000);

  it("AWQ: written then read back gives identical logits (folded norm scales included)", async () => {
    await roundTrip("awq", false);
  }, 120_000);
});

describe("calibration capture", () => {
  it("layer 0's q/k/v input is the attention RMSNorm of the embeddings", () => {
    const e = newEngine();
    loadWeights(e, asStored(cfg, { dir: MODEL }));
    const n = IDS.length;
    const cap = e.captureSync!(
      {
        tokens: IDS,
        seqLens: Int32Array.of(n),
        contextLens: Int32Array.of(n),
        blockTables: Int32Array.of(1, 2, 3, 4),
        maxBlocksPerSeq: 4,
        logits: "hidden",
      },
      0,
    );
    const H = cfg.hiddenSize;
    const width = 2 * H + cfg.numHeads * cfg.headDim + cfg.intermediateSize;
    expect(cap.length).toBe(n * width);
    const ck = openCheckpoint(MODEL);
    const emb = ck.read("model.embed_tokens.weight");
    const norm = ck.read("model.layers.0.input_layernorm.weight");
    ck.close();
    const embF = toFloat32(emb.data, emb.dtype);
    const x = new Float32Array(n * H);
    for (let t = 0; t < n; t++) x.set(embF.subarray(IDS[t]! * H, IDS[t]! * H + H), t * H);
    const want = native.kernels.rmsNorm(x, toFloat32(norm.data, norm.dtype), n, cfg.rmsNormEps);
    for (let t = 0; t < n; t++) for (let c = 0; c < H; c++) expect(cap[t * width + c]).toBeCloseTo(want[t * H + c]!, 5);
    expect(() =>
      e.captureSync!(
        {
          tokens: IDS,
          seqLens: Int32Array.of(n),
          contextLens: Int32Array.of(n),
          blockTables: Int32Array.of(1, 2, 3, 4),
          maxBlocksPerSeq: 4,
          logits: "hidden",
        },
        99,
      ),
    ).toThrow(/captureSync layer 99 is out of range/);
    e.close();
  });
});
