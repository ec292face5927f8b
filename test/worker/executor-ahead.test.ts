// The executor's decode-ahead hints (ForwardBatch.continues): a batch says it continues exactly when the plan has
// a later sub-step that will run, so a GPU engine that starts that step early wastes none; a cut that arrives
// while a step decoded ahead is on the GPU ends the plan after that step. The engine is a fake that records the
// batches (the GPU engine's side is checked on the GPU by bench/decode-ahead.ts).
import { describe, expect, it } from "vitest";
import type { Engine, ForwardBatch } from "../../native/index.js";
import type { StepPlan__Output } from "../../services/common/generated/tpserve/worker/v1/StepPlan.js";
import type { StepResult } from "../../services/common/generated/tpserve/worker/v1/StepResult.js";
import { StepExecutor } from "../../services/worker/executor.js";

const VOCAB = 100;

/** Records each batch's `continues`; the id of every row is its last token + 1. onStep runs before it returns. */
function fakeEngine(ahead: boolean, onStep?: (n: number) => void) {
  const continues: (boolean | undefined)[] = [];
  const step = async (b: ForwardBatch) => {
    continues.push(b.continues);
    onStep?.(continues.length);
    const ids = new Int32Array(b.seqLens.length);
    let t = 0;
    for (let i = 0; i < b.seqLens.length; i++) {
      t += b.seqLens[i]!;
      ids[i] = (b.tokens[t - 1]! + 1) % VOCAB;
    }
    return ids;
  };
  const engine = {
    info: () => ({
      threads: 1,
      simd: "cuda",
      weightBytes: 0,
      kvBytes: 0,
      device: "fake GPU",
      numPages: 64,
      decodeAhead: { enabled: ahead, hits: 0, misses: 0 },
    }),
    forwardArgmax: step,
    forwardSample: step,
  } as unknown as Engine;
  return { engine, continues };
}

function plan(stepId: number, decodeSteps: number, maxNewTokens: number, pages: number[]): StepPlan__Output {
  return {
    stepId,
    epoch: 0,
    drop: [],
    preempted: [],
    newSequences: [
      {
        seqId: stepId,
        requestId: `r${stepId}`,
        tokens: [1, 2, 3, 4, 5],
        numComputed: 0,
        numGenerated: 0,
        maxNewTokens,
        ignoreEos: true,
        sampling: null,
      },
    ],
    scheduled: [{ seqId: stepId, numTokens: 5, newPages: pages }],
    decodeSteps,
  } as unknown as StepPlan__Output;
}

const opts = {
  vocabSize: VOCAB,
  eosTokenIds: [0],
  blockSize: 16,
  maxBlocksPerSeq: 8,
  maxBatchTokens: 64,
  numPages: 64,
  epoch: 0,
};

async function run(ex: StepExecutor, p: StepPlan__Output): Promise<StepResult[]> {
  const results: StepResult[] = [];
  await ex.execute(p, (r) => results.push(r));
  return results;
}

describe("decode-ahead hints", () => {
  it("every step but the last says it continues; none does when the sequence ends by its token limit", async () => {
    const { engine, continues } = fakeEngine(true);
    const results = await run(new StepExecutor(engine, opts), plan(1, 6, 4, [1]));
    expect(results.map((r) => r.last)).toEqual([false, false, false, true]);
    expect(continues).toEqual([true, true, true, false]);
  });

  it("the plan's last sub-step and a sequence without a page for its next token do not continue", async () => {
    const a = fakeEngine(true);
    await run(new StepExecutor(a.engine, opts), plan(1, 3, 100, [1]));
    expect(a.continues).toEqual([true, true, false]);
    // One page of 16 slots: the prompt's 5 tokens and 11 more; the step that fills the last slot does not continue.
    const b = fakeEngine(true);
    const results = await run(new StepExecutor(b.engine, opts), plan(2, 20, 100, [1]));
    expect(results.length).toBe(12);
    expect(b.continues.slice(-2)).toEqual([true, false]);
  });

  it("a cut ends the plan one step later when that step was decoded ahead, at once when not", async () => {
    for (const ahead of [true, false]) {
      let ex: StepExecutor | undefined;
      const { engine, continues } = fakeEngine(ahead, (n) => {
        if (n === 3) ex!.cut(1); // during the third forward pass (sub-step 2)
      });
      ex = new StepExecutor(engine, opts);
      const results = await run(ex, plan(1, 10, 100, [1]));
      expect(results.length).toBe(ahead ? 4 : 3);
      expect(results.at(-1)!.last).toBe(true);
      expect(continues).toEqual(ahead ? [true, true, true, false] : [false, false, false]);
    }
  });
});
