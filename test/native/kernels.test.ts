// Each native kernel against the float64 TypeScript reference, on seeded random data. Tolerance: max |err| <=
// 1e-4 * max(1, |ref|) (2e-4 for long reductions). simd.test.ts reruns this file under every SIMD level.
import { describe, expect, it } from "vitest";
import { loadNative, type WeightTensor } from "../../native/index.js";
import {
  attentionRef,
  dequantInt4,
  f32Tensor,
  matmulRef,
  maxRelErr,
  randn,
  randomInt4,
  rmsNormRef,
  rng,
  ropeRef,
  siluMulRef,
} from "./reference.js";

const native = loadNative();
const k = native.kernels;
const simd = native.buildInfo().simd;

describe(`kernels (simd=${simd})`, () => {
  it("reports the SIMD level requested through TPSERVE_SIMD", () => {
    const want = process.env["TPSERVE_SIMD"];
    if (want) expect(simd).toBe(want);
    expect(["scalar", "avx2", "avx512"]).toContain(simd);
  });

  it("rmsNorm", () => {
    const r = rng(1);
    for (const [rows, cols] of [
      [1, 64],
      [3, 256],
      [5, 37],
    ] as const) {
      const x = randn(rows * cols, r, 3);
      const w = randn(cols, r);
      expect(maxRelErr(k.rmsNorm(x, w, rows, 1e-5), rmsNormRef(x, w, rows, 1e-5))).toBeLessThan(1e-5);
    }
  });

  for (const m of [1, 3, 4, 17]) {
    for (const [out, inn] of [
      [8, 16],
      [67, 64],
      [130, 257],
      [256, 768],
    ] as const) {
      it(`matmul f32 m=${m} (${out}x${inn})`, () => {
        const r = rng(m * 1000 + out);
        const x = randn(m * inn, r);
        const w = randn(out * inn, r, 0.1);
        expect(maxRelErr(k.matmul(x, m, f32Tensor(w, [out, inn])), matmulRef(x, m, w, out, inn))).toBeLessThan(1e-4);
      });
    }
  }

  it("matmul bf16 and f16 weights (f16 subnormals included)", () => {
    const r = rng(7);
    const out = 19;
    const inn = 40;
    const m = 3;
    const x = randn(m * inn, r);
    const bits = new Uint16Array(out * inn);
    const wb = new Float64Array(out * inn);
    const f = new Float32Array(1);
    const u = new Uint32Array(f.buffer);
    for (let i = 0; i < bits.length; i++) {
      f[0] = r.normal() * 0.1;
      bits[i] = u[0]! >>> 16;
      u[0] = bits[i]! << 16;
      wb[i] = f[0]!;
    }
    const bf: WeightTensor = { kind: "dense", dtype: "bf16", shape: [out, inn], data: new Uint8Array(bits.buffer) };
    expect(maxRelErr(k.matmul(x, m, bf), matmulRef(x, m, wb, out, inn))).toBeLessThan(1e-4);
    const hbits = new Uint16Array(out * inn);
    const wh = new Float64Array(out * inn);
    for (let i = 0; i < hbits.length; i++) {
      const e = i % 5 === 0 ? 0 : 1 + Math.floor(r.uniform() * 17);
      const man = Math.floor(r.uniform() * 1024);
      const sign = r.uniform() < 0.5 ? 1 : -1;
      hbits[i] = (sign < 0 ? 0x8000 : 0) | (e << 10) | man;
      wh[i] = sign * (e === 0 ? man * 2 ** -24 : (1 + man / 1024) * 2 ** (e - 15));
    }
    const hf: WeightTensor = { kind: "dense", dtype: "f16", shape: [out, inn], data: new Uint8Array(hbits.buffer) };
    expect(maxRelErr(k.matmul(x, m, hf), matmulRef(x, m, wh, out, inn))).toBeLessThan(1e-4);
  });

  for (const group of [32, 64, 128]) {
    for (const m of [1, 3, 17]) {
      for (const asym of [false, true]) {
        it(`matmul int4 g${group} m=${m} ${asym ? "asym" : "sym"}`, () => {
          const out = 70;
          const inn = group * 3;
          const t = randomInt4(out, inn, group, group + m * 7 + (asym ? 1 : 0), asym);
          const x = randn(m * inn, rng(m));
          const ref = matmulRef(x, m, dequantInt4(t), out, inn);
          expect(maxRelErr(k.matmul(x, m, t), ref)).toBeLessThan(1e-4);
        });
      }
    }
  }

  it("matmul int4 with a group size narrower than the SIMD chunk (g16, g2)", () => {
    for (const group of [16, 2]) {
      const t = randomInt4(9, 64, group, 99, true);
      const x = randn(2 * 64, rng(3));
      expect(maxRelErr(k.matmul(x, 2, t), matmulRef(x, 2, dequantInt4(t), 9, 64))).toBeLessThan(1e-4);
    }
  });

  it("rope (rotate half), in place", () => {
    const r = rng(11);
    const pos = Int32Array.from([0, 1, 7, 100, 1023]);
    const x = randn(pos.length * 3 * 64, r);
    const ref = ropeRef(x, pos, 3, 64, 10000);
    const y = k.rope(x, pos, 3, 64, 10000);
    expect(y).toBe(x);
    expect(maxRelErr(y, ref)).toBeLessThan(2e-4);
  });

  it("siluMul", () => {
    const r = rng(12);
    const g = randn(1000, r, 4);
    const u = randn(1000, r);
    expect(maxRelErr(k.siluMul(g, u), siluMulRef(g, u))).toBeLessThan(1e-5);
  });

  for (const [qLen, ctx, bs] of [
    [1, 1, 4],
    [1, 37, 4],
    [5, 37, 16],
    [8, 8, 3],
    [3, 100, 16],
  ] as const) {
    it(`pagedAttention GQA qLen=${qLen} ctx=${ctx} blockSize=${bs}, shuffled pages`, () => {
      const r = rng(qLen * 100 + ctx);
      const heads = 4;
      const kvh = 2;
      const hd = 24;
      const blocks = Math.ceil(ctx / bs);
      const numPages = blocks + 3;
      const pages = Array.from({ length: numPages - 1 }, (_, i) => i + 1);
      for (let i = pages.length - 1; i > 0; i--) {
        const j = Math.floor(r.uniform() * (i + 1));
        [pages[i], pages[j]] = [pages[j]!, pages[i]!];
      }
      const table = Int32Array.from([...pages.slice(0, blocks), 0, 0]);
      const kCache = randn(numPages * bs * kvh * hd, r);
      const vCache = randn(numPages * bs * kvh * hd, r);
      const kd = new Float64Array(ctx * kvh * hd);
      const vd = new Float64Array(ctx * kvh * hd);
      for (let j = 0; j < ctx; j++) {
        const off = (table[Math.floor(j / bs)]! * bs + (j % bs)) * kvh * hd;
        kd.set(kCache.subarray(off, off + kvh * hd), j * kvh * hd);
        vd.set(vCache.subarray(off, off + kvh * hd), j * kvh * hd);
      }
      const q = randn(qLen * heads * hd, r);
      const out = k.pagedAttention({
        q,
        qLen,
        numHeads: heads,
        numKvHeads: kvh,
        headDim: hd,
        kCache,
        vCache,
        blockSize: bs,
        blockTable: table,
        contextLen: ctx,
      });
      expect(maxRelErr(out, attentionRef(q, kd, vd, qLen, ctx, heads, kvh, hd))).toBeLessThan(1e-4);
    });
  }

  it("kernel argument errors carry codes", () => {
    const x = new Float32Array(10);
    const codeOf = (f: () => unknown) => {
      try {
        f();
      } catch (e) {
        return (e as { code?: string }).code;
      }
      return "none";
    };
    expect(codeOf(() => k.rmsNorm(x, new Float32Array(3), 2, 1e-5))).toBe("NATIVE_SHAPE");
    expect(codeOf(() => k.matmul(x, 2, f32Tensor(new Float32Array(12), [3, 4])))).toBe("NATIVE_SHAPE");
    expect(codeOf(() => k.matmul(x, 1, randomInt4(4, 10, 3, 1, false)))).toBe("NATIVE_SHAPE");
    expect(codeOf(() => k.siluMul(x, new Float32Array(3)))).toBe("NATIVE_SHAPE");
    expect(codeOf(() => k.rmsNorm([] as unknown as Float32Array, x, 1, 0))).toBe("NATIVE_INVALID_ARG");
    const args = {
      q: new Float32Array(8),
      qLen: 1,
      numHeads: 1,
      numKvHeads: 1,
      headDim: 8,
      kCache: new Float32Array(32),
      vCache: new Float32Array(32),
      blockSize: 2,
      blockTable: Int32Array.from([0]),
      contextLen: 2,
    };
    expect(codeOf(() => k.pagedAttention(args))).toBe("NATIVE_PAGE_RANGE");
    expect(codeOf(() => k.pagedAttention({ ...args, blockTable: Int32Array.from([1]), contextLen: 3 }))).toBe(
      "NATIVE_PAGE_RANGE",
    );
  });
});
