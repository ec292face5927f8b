import { describe, expect, it } from "vitest";
import { type SamplingOptions, sampleToken, uniformAt, validateSampling } from "../../services/worker/sampler.js";

const base: SamplingOptions = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1234 };

function softmax(logits: number[], t = 1): number[] {
  const m = Math.max(...logits);
  const e = logits.map((l) => Math.exp((l - m) / t));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

function histogram(logits: Float32Array, opts: SamplingOptions, draws: number): number[] {
  const counts = new Array<number>(logits.length).fill(0);
  for (let p = 0; p < draws; p++) {
    const t = sampleToken(logits, 0, logits.length, opts, p);
    counts[t] = (counts[t] ?? 0) + 1;
  }
  return counts.map((c) => c / draws);
}

/** Deterministic pseudo-random logits. */
function randomLogits(n: number, seed: number, scale = 3): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = (uniformAt(seed, i) * 2 - 1) * scale;
  return out;
}

/** Straightforward reference: full sort, the same filters, inverse CDF over kept ids ascending. */
function reference(logits: Float32Array, o: SamplingOptions, position: number): number {
  const n = logits.length;
  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  const m = logits[order[0]!]!;
  const w = (i: number) => Math.exp((logits[i]! - m) / o.temperature);
  let kept = o.topK > 0 ? order.slice(0, o.topK) : order;
  if (o.topP < 1) {
    const z = kept.reduce((a, i) => a + w(i), 0);
    let cum = 0;
    let k = kept.length;
    for (let j = 0; j < kept.length; j++) {
      cum += w(kept[j]!);
      if (cum >= o.topP * z) {
        k = j + 1;
        break;
      }
    }
    kept = kept.slice(0, k);
  }
  if (o.minP > 0) kept = kept.filter((i) => w(i) >= o.minP);
  kept = [...kept].sort((a, b) => a - b);
  const z = kept.reduce((a, i) => a + w(i), 0);
  const target = uniformAt(o.seed, position) * z;
  let cum = 0;
  for (const i of kept) {
    cum += w(i);
    if (cum > target) return i;
  }
  return kept[kept.length - 1]!;
}

describe("validateSampling", () => {
  it("accepts valid options", () => {
    expect(validateSampling(base)).toBeNull();
    expect(validateSampling({ temperature: 0, topK: 40, topP: 0.5, minP: 0.99, seed: -3 })).toBeNull();
  });
  it("names the limit", () => {
    expect(validateSampling({ ...base, temperature: -1 })).toMatch(/temperature.*>= 0/);
    expect(validateSampling({ ...base, temperature: Number.NaN })).toMatch(/temperature/);
    expect(validateSampling({ ...base, topP: 0 })).toMatch(/top_p.*\(0, 1\]/);
    expect(validateSampling({ ...base, topP: 1.5 })).toMatch(/top_p/);
    expect(validateSampling({ ...base, minP: 1 })).toMatch(/min_p.*\[0, 1\)/);
    expect(validateSampling({ ...base, minP: -0.1 })).toMatch(/min_p/);
    expect(validateSampling({ ...base, topK: -1 })).toMatch(/top_k.*integer >= 0/);
    expect(validateSampling({ ...base, topK: 2.5 })).toMatch(/top_k/);
    expect(validateSampling({ ...base, seed: 0.5 })).toMatch(/seed/);
  });
});

describe("sampleToken", () => {
  it("greedy is argmax, ties go to the lowest id", () => {
    const l = new Float32Array([0.1, 3, -2, 3, 1]);
    expect(sampleToken(l, 0, 5, { ...base, temperature: 0 }, 0)).toBe(1);
    // offset into a batch row
    const batch = new Float32Array([9, 9, 9, 0, 1, 5, 5, 2]);
    expect(sampleToken(batch, 3, 5, { ...base, temperature: 0 }, 7)).toBe(2);
  });

  it("rejects rows outside the buffer", () => {
    expect(() => sampleToken(new Float32Array(4), 2, 4, base, 0)).toThrow(RangeError);
  });

  it("top-k = 1 equals greedy", () => {
    const l = randomLogits(5000, 7);
    const g = sampleToken(l, 0, l.length, { ...base, temperature: 0 }, 0);
    for (let p = 0; p < 50; p++) {
      expect(sampleToken(l, 0, l.length, { ...base, topK: 1, temperature: 1.3, seed: p }, p)).toBe(g);
    }
  });

  it("is a pure function of (seed, position)", () => {
    const l = randomLogits(4096, 3);
    const o = { ...base, seed: 42 };
    for (let p = 0; p < 200; p++) {
      expect(sampleToken(l, 0, l.length, o, p)).toBe(sampleToken(l, 0, l.length, o, p));
    }
    let differ = 0;
    for (let p = 0; p < 200; p++) {
      if (sampleToken(l, 0, l.length, o, p) !== sampleToken(l, 0, l.length, { ...o, seed: 43 }, p)) differ++;
    }
    expect(differ).toBeGreaterThan(100);
    // a different position draws differently too
    const seq = new Set(Array.from({ length: 100 }, (_, p) => sampleToken(l, 0, l.length, o, p)));
    expect(seq.size).toBeGreaterThan(50);
  });

  it("uniformAt is in [0, 1) and roughly uniform", () => {
    let sum = 0;
    for (let p = 0; p < 10000; p++) {
      const u = uniformAt(99, p);
      expect(u).toBeGreaterThanOrEqual(0);
      expect(u).toBeLessThan(1);
      sum += u;
    }
    expect(Math.abs(sum / 10000 - 0.5)).toBeLessThan(0.01);
  });

  it("temperature 1 matches softmax", () => {
    const raw = [1.0, 0.2, -0.5, 2.0];
    const got = histogram(new Float32Array(raw), base, 20000);
    const want = softmax(raw);
    for (let i = 0; i < 4; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(0.02);
  });

  it("temperature scaling sharpens and flattens", () => {
    const raw = [1.0, 0.2, -0.5, 2.0];
    for (const t of [0.5, 2]) {
      const got = histogram(new Float32Array(raw), { ...base, temperature: t, seed: 5 }, 20000);
      const want = softmax(raw, t);
      for (let i = 0; i < 4; i++) expect(Math.abs(got[i]! - want[i]!)).toBeLessThan(0.02);
    }
    const cold = histogram(new Float32Array(raw), { ...base, temperature: 0.5 }, 5000);
    const hot = histogram(new Float32Array(raw), { ...base, temperature: 2 }, 5000);
    expect(cold[3]!).toBeGreaterThan(hot[3]!);
    expect(cold[2]!).toBeLessThan(hot[2]!);
  });

  it("top-p keeps exactly the nucleus", () => {
    // probs ~ [0.5, 0.3, 0.15, 0.05]: top-p 0.75 keeps {0, 1}; 0.85 keeps {0, 1, 2}
    const l = new Float32Array([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    const a = histogram(l, { ...base, topP: 0.75 }, 5000);
    expect(a[2]).toBe(0);
    expect(a[3]).toBe(0);
    expect(Math.abs(a[0]! - 0.625)).toBeLessThan(0.03);
    const b = histogram(l, { ...base, topP: 0.85 }, 5000);
    expect(b[2]!).toBeGreaterThan(0);
    expect(b[3]).toBe(0);
    // tiny top-p still keeps the best token
    expect(histogram(l, { ...base, topP: 0.01 }, 200)[0]).toBe(1);
  });

  it("min-p removes low tokens", () => {
    const l = new Float32Array([Math.log(0.5), Math.log(0.3), Math.log(0.15), Math.log(0.05)]);
    // 0.35 * 0.5 = 0.175: drops 0.15 and 0.05
    const h = histogram(l, { ...base, minP: 0.35 }, 5000);
    expect(h[2]).toBe(0);
    expect(h[3]).toBe(0);
    expect(Math.abs(h[0]! - 0.625)).toBeLessThan(0.03);
  });

  it("top-k restricts to the k best", () => {
    const l = new Float32Array([0, 5, 1, 5, 4, -1]);
    const h = histogram(l, { ...base, topK: 3 }, 3000);
    expect(h[0]).toBe(0);
    expect(h[2]).toBe(0);
    expect(h[5]).toBe(0);
    expect(h[4]!).toBeGreaterThan(0);
  });

  it("fast paths agree with a full-sort reference", () => {
    const cases: Partial<SamplingOptions>[] = [
      {},
      { topK: 40 },
      { topK: 40, topP: 0.9 },
      { topK: 500, topP: 0.5, minP: 0.05 },
      { topP: 0.9 },
      { topP: 0.3, temperature: 0.7 },
      { topP: 0.95, minP: 0.1, temperature: 1.5 },
      { minP: 0.2 },
      { topK: 4000 },
    ];
    for (const [ci, c] of cases.entries()) {
      const o = { ...base, ...c, seed: 100 + ci };
      for (let r = 0; r < 5; r++) {
        const l = randomLogits(4096, 1000 * ci + r, 4);
        for (let p = 0; p < 20; p++) {
          expect(sampleToken(l, 0, l.length, o, p), JSON.stringify(c)).toBe(reference(l, o, p));
        }
      }
    }
    // flat logits: everything in one histogram bucket, ties broken by id
    const flat = new Float32Array(1000).fill(0.5);
    for (let p = 0; p < 20; p++) {
      const o = { ...base, topP: 0.1, seed: 9 };
      const t = sampleToken(flat, 0, 1000, o, p);
      expect(t).toBe(reference(flat, o, p));
      expect(t).toBeLessThan(100);
    }
  });

  it("masked logits are never drawn", () => {
    const l = new Float32Array([Number.NEGATIVE_INFINITY, 0, Number.NEGATIVE_INFINITY, 0]);
    for (const c of [{}, { topP: 0.9 }, { topK: 3 }, { minP: 0.5 }]) {
      const h = histogram(l, { ...base, ...c }, 500);
      expect(h[0]).toBe(0);
      expect(h[2]).toBe(0);
    }
  });

  it("is fast on a 128k vocabulary", () => {
    const l = randomLogits(128000, 11, 8);
    for (const c of [{ temperature: 0 }, { topK: 50 }, { topP: 0.9 }, {}, { topK: 50, topP: 0.9 }]) {
      const o = { ...base, ...c };
      sampleToken(l, 0, l.length, o, 0);
      const t0 = performance.now();
      for (let p = 0; p < 20; p++) sampleToken(l, 0, l.length, o, p);
      const ms = (performance.now() - t0) / 20;
      expect(ms, JSON.stringify(c)).toBeLessThan(50);
    }
  });
});
