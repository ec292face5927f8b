// Engine forward against the TypeScript reference forward on a tiny random Llama, paged-KV consistency,
// batching, errors with codes, async behaviour. simd.test.ts reruns this file under every SIMD level.
import { describe, expect, it } from "vitest";
import { type Engine, type ForwardBatch, loadNative, type ModelShape } from "../../native/index.js";
import { countTurns } from "../helpers/turns.js";
import { forwardRef, maxRelErr, type RefModel, TINY_SHAPE, tinyModel } from "./reference.js";

const native = loadNative();
const shape = TINY_SHAPE;
const BS = 4;
const MAXB = 16;

function makeEngine(m: RefModel, threads = 2, maxBatchTokens = 64): Engine {
  const e = new native.Engine({ shape: m.shape, numPages: 40, blockSize: BS, maxBatchTokens, threads });
  for (const [name, t] of m.tensors) e.setTensor(name, t);
  e.finalize();
  return e;
}

function batch(seqs: { tokens: number[]; ctx: number; pages: number[] }[], logits: "last" | "all"): ForwardBatch {
  const bt = new Int32Array(seqs.length * MAXB);
  for (const [i, s] of seqs.entries()) bt.set(s.pages, i * MAXB);
  return {
    tokens: Int32Array.from(seqs.flatMap((s) => s.tokens)),
    seqLens: Int32Array.from(seqs.map((s) => s.tokens.length)),
    contextLens: Int32Array.from(seqs.map((s) => s.ctx)),
    blockTables: bt,
    maxBlocksPerSeq: MAXB,
    logits,
  };
}

const prompt = [3, 14, 15, 92, 65, 35, 89, 79, 32, 38, 46, 26, 43];
const pagesA = [7, 2, 19, 5, 11];
const pagesB = [3, 30, 8, 21];
const rows = (a: Float32Array, from: number, n: number) =>
  a.subarray(from * shape.vocabSize, (from + n) * shape.vocabSize);

async function codeOf(f: () => unknown): Promise<string> {
  try {
    await f();
  } catch (e) {
    return (e as { code?: string }).code ?? "no code";
  }
  return "no error";
}

describe(`engine (simd=${native.buildInfo().simd})`, () => {
  for (const [label, group, tie] of [
    ["f32 tied", 0, true],
    ["f32 lm_head", 0, false],
    ["int4 g32", 32, true],
  ] as const) {
    it(`prefill matches the reference forward (${label})`, () => {
      const m = tinyModel({ ...shape, tieWordEmbeddings: tie }, 5, group);
      const ref = forwardRef(m, prompt);
      for (const threads of [1, 2]) {
        const e = makeEngine(m, threads);
        expect(e.info().simd).toBe(native.buildInfo().simd);
        const all = e.forwardSync(batch([{ tokens: prompt, ctx: prompt.length, pages: pagesA }], "all"));
        expect(maxRelErr(all, ref)).toBeLessThan(1e-4);
        const last = e.forwardSync(batch([{ tokens: prompt, ctx: prompt.length, pages: pagesA }], "last"));
        expect(maxRelErr(last, ref.subarray((prompt.length - 1) * shape.vocabSize))).toBeLessThan(1e-4);
        e.close();
      }
    });
  }

  it("token-by-token decode and chunked prefill equal prefill-all-at-once", () => {
    const m = tinyModel(shape, 6, 0);
    const ref = forwardRef(m, prompt);
    const e = makeEngine(m);
    for (let i = 0; i < prompt.length; i++) {
      const lg = e.forwardSync(batch([{ tokens: [prompt[i]!], ctx: i + 1, pages: pagesB.concat([9]) }], "last"));
      expect(maxRelErr(lg, rows(Float32Array.from(ref), i, 1))).toBeLessThan(1e-4);
    }
    for (const chunk of [3, 5]) {
      for (let s = 0; s < prompt.length; s += chunk) {
        const toks = prompt.slice(s, s + chunk);
        const lg = e.forwardSync(batch([{ tokens: toks, ctx: s + toks.length, pages: pagesA }], "all"));
        expect(
          maxRelErr(lg, Float32Array.from(ref).subarray(s * shape.vocabSize, (s + toks.length) * 97)),
        ).toBeLessThan(1e-4);
      }
    }
    e.close();
  });

  it("two sequences in one batch equal each alone (mixed prefill + decode)", async () => {
    const m = tinyModel(shape, 7, 32);
    const e = makeEngine(m);
    const other = [5, 6, 7, 8, 9, 10];
    const alone1 = e.forwardSync(batch([{ tokens: prompt, ctx: prompt.length, pages: pagesA }], "all"));
    e.forwardSync(batch([{ tokens: other.slice(0, 5), ctx: 5, pages: pagesB }], "last"));
    const alone2 = e.forwardSync(batch([{ tokens: [other[5]!], ctx: 6, pages: pagesB }], "last"));
    const both = await e.forward(
      batch(
        [
          { tokens: prompt, ctx: prompt.length, pages: pagesA },
          { tokens: [other[5]!], ctx: 6, pages: pagesB },
        ],
        "all",
      ),
    );
    expect(both).toBeInstanceOf(Float32Array);
    expect(both.length).toBe((prompt.length + 1) * shape.vocabSize);
    expect(maxRelErr(rows(both, 0, prompt.length), alone1)).toBeLessThan(1e-5);
    expect(maxRelErr(rows(both, prompt.length, 1), alone2)).toBeLessThan(1e-5);
    e.close();
  });

  it("errors come back with codes and the engine keeps working", async () => {
    const m = tinyModel(shape, 8, 0);
    const e0 = new native.Engine({ shape, numPages: 40, blockSize: BS, maxBatchTokens: 8, threads: 1 });
    const ok = batch([{ tokens: [1, 2], ctx: 2, pages: [1] }], "last");
    expect(await codeOf(() => e0.forwardSync(ok))).toBe("NATIVE_NOT_FINALIZED");
    expect(await codeOf(() => e0.forward(ok))).toBe("NATIVE_NOT_FINALIZED");
    expect(await codeOf(() => e0.finalize())).toBe("NATIVE_MISSING_TENSOR");
    expect(await codeOf(() => e0.setTensor("layers.9.q", m.tensors.get("layers.0.q")!))).toBe("NATIVE_INVALID_ARG");
    expect(await codeOf(() => e0.setTensor("bogus", m.tensors.get("layers.0.q")!))).toBe("NATIVE_INVALID_ARG");
    expect(await codeOf(() => e0.setTensor("layers.0.k", m.tensors.get("layers.0.q")!))).toBe("NATIVE_SHAPE");
    for (const [name, t] of m.tensors) e0.setTensor(name, t);
    e0.finalize();
    const good = e0.forwardSync(ok);
    const bad: [string, ForwardBatch][] = [
      ["NATIVE_PAGE_RANGE", batch([{ tokens: [1, 2], ctx: 2, pages: [0] }], "last")],
      ["NATIVE_PAGE_RANGE", batch([{ tokens: [1, 2], ctx: 2, pages: [40] }], "last")],
      ["NATIVE_PAGE_RANGE", batch([{ tokens: [1], ctx: 5, pages: [1] }], "last")],
      ["NATIVE_INVALID_ARG", batch([{ tokens: [1, 97], ctx: 2, pages: [1] }], "last")],
      ["NATIVE_INVALID_ARG", batch([{ tokens: [1, -1], ctx: 2, pages: [1] }], "last")],
      ["NATIVE_INVALID_ARG", batch([{ tokens: Array(9).fill(1), ctx: 9, pages: [1, 2, 3] }], "last")],
      ["NATIVE_INVALID_ARG", batch([{ tokens: [1, 2], ctx: 1, pages: [1] }], "last")],
      ["NATIVE_SHAPE", { ...ok, seqLens: Int32Array.of(1) }],
      ["NATIVE_SHAPE", { ...ok, contextLens: Int32Array.of(2, 2) }],
      ["NATIVE_SHAPE", { ...ok, blockTables: Int32Array.of(1) }],
      ["NATIVE_INVALID_ARG", { ...ok, tokens: [1, 2] as unknown as Int32Array }],
      ["NATIVE_INVALID_ARG", { ...ok, logits: "some" as "all" }],
      ["NATIVE_INVALID_ARG", { ...ok, continues: 1 as unknown as boolean }],
      ["NATIVE_PAGE_RANGE", { ...ok, contextLens: Int32Array.of(40 * BS) }],
    ];
    for (const [code, b] of bad) {
      expect(await codeOf(() => e0.forwardSync(b))).toBe(code);
      expect(await codeOf(() => e0.forward(b))).toBe(code);
    }
    try {
      e0.forwardSync(bad[0]![1]);
    } catch (err) {
      expect(err).toBeInstanceOf(Error);
      expect((err as Error).message).toMatch(/blockTables\[0\]\[0\] = 0/);
    }
    expect(maxRelErr(await e0.forward(ok), good)).toBe(0);
    // A CPU engine takes the decode-ahead hint and does nothing with it.
    expect(maxRelErr(await e0.forward({ ...ok, continues: true }), good)).toBe(0);
    expect(e0.info().decodeAhead).toBeUndefined();
    e0.close();
    expect(await codeOf(() => e0.forwardSync(ok))).toBe("NATIVE_CLOSED");
    expect(await codeOf(() => e0.forward(ok))).toBe("NATIVE_CLOSED");
    expect(await codeOf(() => e0.info())).toBe("NATIVE_CLOSED");
    expect(
      await codeOf(
        () => new native.Engine({ shape: { ...shape, numKvHeads: 3 }, numPages: 4, blockSize: 4, maxBatchTokens: 4 }),
      ),
    ).toBe("NATIVE_INVALID_ARG");
    expect(await codeOf(() => new native.Engine({ shape, numPages: 1e9, blockSize: 1024, maxBatchTokens: 4 }))).toBe(
      "NATIVE_OOM",
    );
  });

  it("forward() is async: the event loop runs while it computes, and overlapping calls serialize", async () => {
    const big: ModelShape = { ...shape, hiddenSize: 256, intermediateSize: 768, numLayers: 4, vocabSize: 512 };
    const m = tinyModel(big, 9, 0);
    const e = new native.Engine({ shape: big, numPages: 70, blockSize: 16, maxBatchTokens: 1024, threads: 1 });
    for (const [name, t] of m.tensors) e.setTensor(name, t);
    e.finalize();
    const toks = Array.from({ length: 1024 }, (_, i) => (i * 7) % 512);
    const pages = Array.from({ length: 64 }, (_, i) => i + 1);
    const bt = Int32Array.from(pages);
    const b: ForwardBatch = {
      tokens: Int32Array.from(toks),
      seqLens: Int32Array.of(1024),
      contextLens: Int32Array.of(1024),
      blockTables: bt,
      maxBlocksPerSeq: 64,
      logits: "last",
    };
    const turns = countTurns();
    const p1 = e.forward(b);
    const p2 = e.forward(b);
    expect(p1).toBeInstanceOf(Promise);
    const [a1, a2] = await Promise.all([p1, p2]);
    expect(turns.stop()).toBeGreaterThan(2);
    expect(maxRelErr(a1, a2)).toBe(0);
    e.close();
  });
});

describe("engine profiling", () => {
  it("reports every op kind with calls > 0 when on, nothing when off", () => {
    const m = tinyModel(shape, 9, 32);
    const e = makeEngine(m, 2);
    const b = batch([{ tokens: prompt, ctx: prompt.length, pages: pagesA }], "last");
    e.forwardSync(b);
    expect(e.profile?.()).toEqual({});
    e.setProfiling?.(true);
    e.forwardSync(b);
    const p = e.profile?.() ?? {};
    for (const op of [
      "embed",
      "rmsnorm",
      "qkv_matmul",
      "rope",
      "kv_write",
      "attention",
      "o_matmul",
      "residual",
      "mlp_gate_up",
      "silu_mul",
      "mlp_down",
      "final_norm",
      "lm_head",
      "int4_prep",
      "forward",
    ]) {
      expect(p[op]?.calls, op).toBeGreaterThan(0);
      expect(p[op]?.ms, op).toBeGreaterThanOrEqual(0);
    }
    expect(p.qkv_matmul?.calls).toBe(shape.numLayers);
    expect(p.forward?.calls).toBe(1);
    e.resetProfile?.();
    expect(e.profile?.()).toEqual({});
    e.setProfiling?.(false);
    e.forwardSync(b);
    expect(e.profile?.()).toEqual({});
    e.close();
  });
});
