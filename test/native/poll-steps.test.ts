// Polled steps (EngineOptions.pollSteps, native/src/stepper.h): the same results as steps on the libuv pool, the
// same errors with codes, a second call while a step is in flight takes the pool, and the event loop keeps running.
import { describe, expect, it } from "vitest";
import { type Engine, type ForwardBatch, loadNative } from "../../native/index.js";
import { countTurns } from "../helpers/turns.js";
import { maxRelErr, TINY_SHAPE, tinyModel } from "./reference.js";

const native = loadNative();
const shape = TINY_SHAPE;
const BS = 4;
const MAXB = 8;

function makeEngine(pollSteps: boolean, group = 0): Engine {
  const m = tinyModel(shape, 11, group);
  const e = new native.Engine({ shape, numPages: 40, blockSize: BS, maxBatchTokens: 64, threads: 1, pollSteps });
  for (const [name, t] of m.tensors) e.setTensor(name, t);
  e.finalize();
  return e;
}

function batch(tokens: number[], ctx: number, pages: number[], logits: "last" | "all" = "last"): ForwardBatch {
  const bt = new Int32Array(MAXB);
  bt.set(pages);
  return {
    tokens: Int32Array.from(tokens),
    seqLens: Int32Array.of(tokens.length),
    contextLens: Int32Array.of(ctx),
    blockTables: bt,
    maxBlocksPerSeq: MAXB,
    logits,
  };
}

/** The addon's polled-step entry (used by the forward* wrappers in native/index.ts). */
type Polled = { startStep(mode: number, b: ForwardBatch): [Int32Array, Int32Array] | undefined; finishStep(): void };

const prompt = [3, 14, 15, 92, 65, 35, 89, 79, 32];
const pages = [6, 2, 9, 4];

describe("polled steps", () => {
  for (const group of [0, 32]) {
    it(`greedy decode and logits equal the pool path (${group ? "int4 g32" : "f32"})`, async () => {
      const results: { ids: number[]; logits: Float32Array }[] = [];
      for (const poll of [false, true]) {
        const e = makeEngine(poll, group);
        const logits = await e.forward(batch(prompt, prompt.length, pages, "all"));
        const ids: number[] = [];
        let next = (await e.forwardArgmax(batch(prompt, prompt.length, pages)))[0]!;
        for (let ctx = prompt.length + 1; ctx <= prompt.length + 6; ctx++) {
          ids.push(next);
          next = (await e.forwardArgmax(batch([next], ctx, pages)))[0]!;
        }
        results.push({ ids, logits });
        e.close();
      }
      expect(results[1]!.ids).toEqual(results[0]!.ids);
      expect(maxRelErr(results[1]!.logits, results[0]!.logits)).toBe(0);
    });
  }

  it("pollSteps decides whether startStep runs the step (CPU default: off)", async () => {
    const on = makeEngine(true) as Engine & Polled;
    const b = batch(prompt, prompt.length, pages);
    const started = on.startStep(1, b);
    expect(started).toBeDefined();
    const [ids, flag] = started!;
    // A second step while the first is in flight is not started here: the wrappers then take the pool.
    expect(on.startStep(1, b)).toBeUndefined();
    while (Atomics.load(flag, 0) === 0) await new Promise((r) => setImmediate(r));
    on.finishStep();
    expect(ids[0]).toBe((await on.forwardArgmax(b))[0]);
    on.close();
    const off = makeEngine(false) as Engine & Polled;
    expect(off.startStep(1, b)).toBeUndefined();
    off.close();
    const dflt = new native.Engine({ shape, numPages: 4, blockSize: BS, maxBatchTokens: 8 }) as Engine & Polled;
    for (const [name, t] of tinyModel(shape, 1, 0).tensors) dflt.setTensor(name, t);
    dflt.finalize();
    expect(dflt.startStep(1, batch([1, 2], 2, [1]))).toBeUndefined();
    dflt.close();
    expect(
      () => new native.Engine({ shape, numPages: 4, blockSize: BS, maxBatchTokens: 8, pollSteps: 1 as never }),
    ).toThrow(/options.pollSteps must be a boolean/);
  });

  it("overlapping calls both finish with equal results, and the event loop runs meanwhile", async () => {
    const e = makeEngine(true);
    const b = batch(prompt, prompt.length, pages, "all");
    const turns = countTurns();
    const [a1, a2, a3] = await Promise.all([e.forward(b), e.forward(b), e.forward(b)]);
    expect(turns.stop()).toBeGreaterThan(0);
    expect(maxRelErr(a1, a2)).toBe(0);
    expect(maxRelErr(a1, a3)).toBe(0);
    e.close();
  });

  it("a step submitted after the stepper thread went to sleep (2 ms idle) runs and wakes it", async () => {
    const e = makeEngine(true);
    const b = batch(prompt, prompt.length, pages);
    const first = (await e.forwardArgmax(b))[0];
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setTimeout(r, 15));
      expect((await e.forwardArgmax(b))[0]).toBe(first);
    }
    e.close();
  });

  it("errors come back with their codes and the engine keeps working", async () => {
    const e = makeEngine(true);
    const ok = batch([1, 2], 2, [1]);
    const codeOf = (p: Promise<unknown>) =>
      p.then(
        () => "no error",
        (err: { code?: string }) => err.code,
      );
    expect(await codeOf(e.forwardArgmax(batch([1, 2], 2, [0])))).toBe("NATIVE_PAGE_RANGE");
    expect(await codeOf(e.forward(batch([1, 97], 2, [1])))).toBe("NATIVE_INVALID_ARG");
    expect(
      await codeOf(e.forwardSample(ok, [{ temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1, position: 0 }])),
    ).toBe("NATIVE_INVALID_ARG");
    expect((await e.forwardArgmax(ok)).length).toBe(1);
    e.close();
    expect(await codeOf(e.forwardArgmax(ok))).toBe("NATIVE_CLOSED");
  });
});
