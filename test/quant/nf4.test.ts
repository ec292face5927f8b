// NF4 (bitsandbytes-style): levels, double quantization of the absmax values, the engine's NF4 matmul against
// the TypeScript dequantization, and the bundled model loaded with --quantization nf4.
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { loadModelConfig, toModelShape } from "../../services/common/model/config.js";
import { loadWeights } from "../../services/worker/load.js";
import { dense } from "../../services/worker/quant/hessian.js";
import { dequantizeNf4, dynamicMap, NF4_LEVELS, quantizeNf4 } from "../../services/worker/quant/nf4.js";
import { asStored } from "../helpers/load-options.js";

const { kernels, Engine } = loadNative();

describe("NF4", () => {
  it("the dynamic map has 256 sorted values from -1 to 1 with an exact 0", () => {
    const m = dynamicMap();
    expect(m.length).toBe(256);
    expect(m[0]).toBeCloseTo(-0.9931, 3);
    expect(m[255]).toBe(1);
    expect(Array.from(m)).toContain(0);
    for (let i = 1; i < 256; i++) expect(m[i]!).toBeGreaterThanOrEqual(m[i - 1]!);
  });

  it("values on the NF4 grid of their block's absmax come back exactly; codes pack high nibble first", () => {
    const B = 16;
    const w = new Float32Array(2 * B);
    for (let i = 0; i < B; i++) w[i] = Math.fround(NF4_LEVELS[i]! * 0.5); // block 0: every level, absmax 0.5
    for (let i = 0; i < B; i++) w[B + i] = Math.fround(NF4_LEVELS[15 - i]! * 2); // block 1: reversed, absmax 2
    const t = quantizeNf4(w, 1, 2 * B, { blockSize: B, doubleQuant: false });
    expect(Array.from(t.absmax!)).toEqual([0.5, 2]);
    expect(t.qweight[0]).toBe(0x01);
    expect(t.qweight[B / 2]).toBe(0xfe);
    expect(Array.from(dequantizeNf4(t))).toEqual(Array.from(w));
  });

  it("double quantization keeps every absmax within 1% and the engine's matmul matches the reference", () => {
    let s = 1;
    const r = (): number => {
      s = (s * 16807) % 2147483647;
      return s / 2147483647 - 0.5;
    };
    const rows = 96;
    const cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => r() * (1 + 3 * r() ** 2));
    const single = quantizeNf4(w, rows, cols, { blockSize: 64, doubleQuant: false });
    const dq = quantizeNf4(w, rows, cols, { blockSize: 64, doubleQuant: true });
    expect(dq.absmaxCodes!.length).toBe((rows * cols) / 64);
    expect(dq.absmaxScales!.length).toBe(2);
    const a = dequantizeNf4(single);
    const b = dequantizeNf4(dq);
    for (let i = 0; i < a.length; i += 64) {
      const amax = single.absmax![i / 64]!;
      for (let j = i; j < i + 64; j++) expect(Math.abs(a[j]! - b[j]!)).toBeLessThanOrEqual(0.01 * amax + 1e-7);
    }
    const x = Float32Array.from({ length: 3 * cols }, r);
    for (const t of [single, dq]) {
      const got = kernels.matmul(x, 3, t);
      const want = kernels.matmul(x, 3, dense(dequantizeNf4(t), [rows, cols]));
      for (let i = 0; i < want.length; i++) expect(got[i]).toBeCloseTo(want[i]!, 4);
    }
    expect(() => kernels.matmul(x, 3, { ...dq, absmaxScales: new Float32Array(1) })).toThrow(
      /absmaxScales has 1 floats, expected 2 \(one per 256 blocks\)/,
    );
  });

  it("the bundled model loads with nf4 and stays close to the unquantized logits", () => {
    const dir = join(import.meta.dirname, "../../models/tinyllama-brown");
    const cfg = loadModelConfig(dir);
    const mk = (quantization: "none" | "nf4") => {
      const e = new Engine({ shape: toModelShape(cfg), numPages: 4, blockSize: 16, maxBatchTokens: 32, threads: 1 });
      const sum = loadWeights(e, asStored(cfg, { dir, quantization }));
      return { e, sum };
    };
    const ref = mk("none");
    const nf4 = mk("nf4");
    expect(nf4.sum.quantization).toBe("nf4");
    expect(nf4.e.info().weightBytes).toBeLessThan(0.6 * ref.e.info().weightBytes);
    const batch = {
      tokens: Int32Array.from([1, 450, 3000, 12, 99, 7, 1234, 600]),
      seqLens: Int32Array.of(8),
      contextLens: Int32Array.of(8),
      blockTables: Int32Array.of(1),
      maxBlocksPerSeq: 1,
      logits: "all" as const,
    };
    const la = ref.e.forwardSync(batch);
    const lb = nf4.e.forwardSync(batch);
    let diff = 0;
    let norm = 0;
    for (let i = 0; i < la.length; i++) {
      diff += (la[i]! - lb[i]!) ** 2;
      norm += la[i]! ** 2;
    }
    const rel = Math.sqrt(diff / norm);
    expect(rel).toBeGreaterThan(0);
    expect(rel).toBeLessThan(0.1);
    ref.e.close();
    nf4.e.close();
  });
});
