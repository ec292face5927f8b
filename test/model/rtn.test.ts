import { describe, expect, it } from "vitest";
import { ConfigError } from "../../services/common/errors.js";
import { dequantizeInt4, quantizeRtn, roundHalfEven } from "../../services/worker/quant/rtn.js";

const F = (v: number[]) => Float32Array.from(v);

describe("roundHalfEven", () => {
  it("rounds ties to even", () => {
    expect([0.5, 1.5, 2.5, -0.5, -1.5, -2.5, 2.4999, 2.5001].map(roundHalfEven)).toEqual([0, 2, 2, 0, -2, -2, 2, 3]);
  });
});

describe("RTN int4", () => {
  it("symmetric: hand-worked groups, ties and an all-zero group", () => {
    // G=4. Group 0: absmax 1.75 -> scale 0.25; w/scale = 7, -3.5 (-> -4), 1, 0.5 (-> 0); stored q+8 = 15, 4, 9, 8.
    // Group 1: scale 0.25; 2.5 (-> 2), -7, -0.5 (-> 0), 1.5 (-> 2) -> 10, 1, 8, 10. Group 2: all zero -> scale 1, 8s.
    const w = F([1.75, -0.875, 0.25, 0.125, 0.625, -1.75, -0.125, 0.375, 0, 0, 0, 0]);
    const t = quantizeRtn(w, 1, 12, { groupSize: 4, symmetric: true });
    expect(t).toMatchObject({ kind: "int4", rows: 1, cols: 12, groupSize: 4 });
    expect(t.zeros).toBeUndefined();
    expect(Array.from(t.scales)).toEqual([0.25, 0.25, 1]);
    expect(Array.from(t.qweight)).toEqual([0x4f, 0x89, 0x1a, 0xa8, 0x88, 0x88]);
    expect(Array.from(dequantizeInt4(t))).toEqual([1.75, -1, 0.25, 0, 0.5, -1.75, 0, 0.5, 0, 0, 0, 0]);
  });

  it("symmetric: scale is absmax * fl(1/7) and w/scale a float32 division, as PyTorch on CUDA computes them", () => {
    // 0.5265221 * fl(1/7) is one ulp away from fl(0.5265221 / 7): the golden references used the former.
    const amax = Math.fround(0.5265220999717712);
    const scale = Math.fround(amax * Math.fround(1 / 7));
    expect(scale).not.toBe(Math.fround(amax / 7));
    const w1 = Math.fround(2.5 * scale); // exactly a tie in float32 -> rounds to even 2
    const w = F([amax, w1, 0, 0]);
    const t = quantizeRtn(w, 1, 4, { groupSize: 4, symmetric: true });
    expect(t.scales[0]).toBe(scale);
    expect(Math.fround(w1 / scale)).toBe(2.5);
    expect(t.qweight[0]! >> 4).toBe(2 + 8);
    expect(t.qweight[0]! & 15).toBe(7 + 8);
  });

  it("asymmetric: hand-worked groups, zero-point tie and an all-zero group", () => {
    // Group 0: min -1, max 0.875 -> scale 0.125, zero 8; w/scale = -8, 7, 0.5 (-> 0), 1.5 (-> 2); +8 -> 0, 15, 8, 10.
    // Group 1: min -0.3125, max 1.5625 -> scale 0.125, -min/scale = 2.5 -> zero 2;
    //   w/scale = -2.5 (-> -2), 12.5 (-> 12), 0, 3.5 (-> 4); +2 -> 0, 14, 2, 6.
    // Group 2: all zero -> scale 1, zero 0, q 0.
    const w = F([-1, 0.875, 0.0625, 0.1875, -0.3125, 1.5625, 0, 0.4375, 0, 0, 0, 0]);
    const t = quantizeRtn(w, 1, 12, { groupSize: 4, symmetric: false });
    expect(Array.from(t.scales)).toEqual([0.125, 0.125, 1]);
    expect(Array.from(t.zeros ?? [])).toEqual([8, 2, 0]);
    expect(Array.from(t.qweight)).toEqual([0xf0, 0xa8, 0xe0, 0x62, 0x00, 0x00]);
    expect(Array.from(dequantizeInt4(t))).toEqual([-1, 0.875, 0, 0.25, -0.25, 1.5, 0, 0.5, 0, 0, 0, 0]);
  });

  it("asymmetric: a group that does not straddle zero keeps its zero point in 0..15", () => {
    const t = quantizeRtn(F([0.5, 1, 0.75, 0.25]), 1, 4, { groupSize: 4, symmetric: false });
    expect(t.zeros?.[0]).toBe(0);
    expect(t.scales[0]).toBe(Math.fround(1 / 15));
    const d = dequantizeInt4(t);
    for (let i = 0; i < 4; i++)
      expect(Math.abs(d[i]! - [0.5, 1, 0.75, 0.25][i]!)).toBeLessThanOrEqual(t.scales[0]! / 2);
  });

  it("dequantized error is at most scale/2 on random data", () => {
    let s = 12345;
    const rnd = () => {
      s = (Math.imul(s, 1103515245) + 12345) >>> 0;
      return s / 2 ** 32;
    };
    const rows = 16;
    const cols = 256;
    const w = Float32Array.from({ length: rows * cols }, () => (rnd() - 0.5) * 0.1 * (1 + 10 * rnd()));
    for (const symmetric of [true, false]) {
      for (const groupSize of [32, 64, 128]) {
        const t = quantizeRtn(w, rows, cols, { groupSize, symmetric });
        expect(t.qweight.length).toBe((rows * cols) / 2);
        expect(t.scales.length).toBe((rows * cols) / groupSize);
        const d = dequantizeInt4(t);
        for (let i = 0; i < w.length; i++) {
          const scale = t.scales[Math.floor(i / groupSize)]!;
          expect(Math.abs(w[i]! - d[i]!)).toBeLessThanOrEqual(scale / 2 + 1e-7);
        }
      }
    }
  });

  it("refuses a group size that does not divide the input dimension", () => {
    const w = new Float32Array(2 * 96);
    expect(() => quantizeRtn(w, 2, 96, { groupSize: 64, symmetric: true, name: "layers.0.down" })).toThrow(ConfigError);
    expect(() => quantizeRtn(w, 2, 96, { groupSize: 64, symmetric: true, name: "layers.0.down" })).toThrow(
      "int4 group size 64 does not divide the input dimension 96 of layer layers.0.down; group sizes that would work: 32",
    );
    expect(() => quantizeRtn(new Float32Array(40), 1, 40, { groupSize: 32, symmetric: true })).toThrow(
      /none of 32, 64, 128 divides it/,
    );
  });
});
