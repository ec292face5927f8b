// int8 KV cache on the CPU engine: about 3.8x fewer KV bytes than float32, logits close to the float32 cache,
// prefill and decode reading the same quantized pages.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { type Engine, loadNative } from "../../native/index.js";
import { loadModelConfig, toModelShape } from "../../services/common/model/config.js";
import { loadWeights } from "../../services/worker/load.js";
import { asStored } from "../helpers/load-options.js";

const dir = join(import.meta.dirname, "../../models/tinyllama-brown");
const cfg = loadModelConfig(dir);
const { Engine: NativeEngine } = loadNative();

function make(kvCacheDtype?: "f32" | "int8"): Engine {
  const e = new NativeEngine({
    shape: toModelShape(cfg),
    numPages: 5,
    blockSize: 16,
    maxBatchTokens: 64,
    threads: 1,
    ...(kvCacheDtype ? { kvCacheDtype } : {}),
  });
  loadWeights(e, asStored(cfg, { dir }));
  return e;
}

const TOKENS = Int32Array.from({ length: 40 }, (_, i) => (i * 37 + 11) % cfg.vocabSize);
const batch = (tokens: Int32Array, ctx: number) => ({
  tokens,
  seqLens: Int32Array.of(tokens.length),
  contextLens: Int32Array.of(ctx),
  blockTables: Int32Array.of(1, 2, 3, 4),
  maxBlocksPerSeq: 4,
  logits: "last" as const,
});

describe("int8 KV cache", () => {
  it("holds (headDim + 4) / (4 headDim) of the float32 bytes and gives close logits", () => {
    const f = make();
    const q = make("int8");
    expect(q.info().kvBytes / f.info().kvBytes).toBeCloseTo((64 + 4) / (4 * 64), 6);
    const a = f.forwardSync(batch(TOKENS, TOKENS.length));
    const b = q.forwardSync(batch(TOKENS, TOKENS.length));
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < a.length; i++) {
      diff += (a[i]! - b[i]!) ** 2;
      norm += a[i]! ** 2;
    }
    const rel = Math.sqrt(diff / norm);
    expect(rel).toBeGreaterThan(0); // it really is quantized
    expect(rel).toBeLessThan(0.02);
    f.close();
    q.close();
  });

  it("decode after prefill reads the quantized pages the prefill wrote", () => {
    const whole = make("int8");
    const full = whole.forwardSync(batch(TOKENS, TOKENS.length));
    const split = make("int8");
    split.forwardSync(batch(TOKENS.subarray(0, 39), 39));
    const last = split.forwardSync(batch(TOKENS.subarray(39), 40));
    for (let i = 0; i < full.length; i++) expect(last[i]).toBeCloseTo(full[i]!, 3);
    whole.close();
    split.close();
  });

  it("rejects an unknown dtype naming the choices, and f16 on the CPU", () => {
    const engine = (kvCacheDtype: "f32" | "f16" | "int8") =>
      new NativeEngine({ shape: toModelShape(cfg), numPages: 2, blockSize: 16, maxBatchTokens: 8, kvCacheDtype });
    expect(() => engine("fp8" as "int8")).toThrow(/kvCacheDtype must be "f32", "f16" or "int8"/);
    expect(() => engine("f16")).toThrow(/"f16" runs on the GPU engine only/);
  });
});
