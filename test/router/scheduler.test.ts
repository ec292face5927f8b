// The scheduler alone, with no process: plans are checked against a simulated worker whose "model" is a pure
// function of the token prefix, so a preempted and recomputed sequence must produce the same tokens.
import { describe, expect, it } from "vitest";
import { createScheduler, type StepPlanData } from "../../services/router/scheduler.js";

/** A deterministic "next token" of a prefix (stands in for greedy decoding). */
function nextToken(prefix: readonly number[]): number {
  let h = 2166136261;
  for (const t of prefix) h = Math.imul(h ^ t, 16777619) >>> 0;
  return h % 1000;
}

interface SimSeq {
  tokens: number[];
  computed: number;
  pages: number[];
  generated: number;
  maxNew: number;
}

/** Plays the worker's part: keeps per-sequence state, checks plans, returns sampled tokens per sub-step. */
class SimWorker {
  readonly seqs = new Map<number, SimSeq>();
  constructor(private readonly blockSize: number) {}

  run(plan: StepPlanData): { seqId: number; token: number; finished: boolean }[][] {
    for (const id of plan.drop) this.seqs.delete(id);
    for (const n of plan.newSequences) {
      expect(this.seqs.has(n.seqId)).toBe(false);
      this.seqs.set(n.seqId, {
        tokens: [...n.tokens],
        computed: 0,
        pages: [],
        generated: n.numGenerated,
        maxNew: n.maxNewTokens,
      });
    }
    const results: { seqId: number; token: number; finished: boolean }[][] = [];
    let counts = plan.scheduled.map((s) => s.numTokens);
    for (const s of plan.scheduled) this.seqs.get(s.seqId)!.pages.push(...s.newPages);
    for (let sub = 0; sub < plan.decodeSteps; sub++) {
      const out: { seqId: number; token: number; finished: boolean }[] = [];
      plan.scheduled.forEach((sch, i) => {
        const s = this.seqs.get(sch.seqId);
        const n = counts[i]!;
        if (!s || n === 0) return;
        if (s.computed + n > s.pages.length * this.blockSize) {
          expect(sub).toBeGreaterThan(0); // the first sub-step always has its pages
          return;
        }
        s.computed += n;
        if (s.computed === s.tokens.length) {
          const t = nextToken(s.tokens);
          s.tokens.push(t);
          s.generated++;
          const finished = s.generated >= s.maxNew;
          if (finished) this.seqs.delete(sch.seqId);
          out.push({ seqId: sch.seqId, token: t, finished });
        }
      });
      results.push(out);
      counts = plan.scheduled.map((sch) => (this.seqs.has(sch.seqId) ? 1 : 0));
      if (!plan.scheduled.some((sch) => this.seqs.has(sch.seqId))) break;
    }
    return results;
  }
}

function expected(prompt: number[], n: number): number[] {
  const toks = [...prompt];
  for (let i = 0; i < n; i++) toks.push(nextToken(toks));
  return toks.slice(prompt.length);
}

function prompt(len: number, seed: number): number[] {
  return Array.from({ length: len }, (_, i) => (seed * 31 + i * 7) % 1000);
}

describe("scheduler", () => {
  it("prefills a long prompt in chunks of the token budget while a running sequence keeps decoding", () => {
    const s = createScheduler({ numPages: 64, blockSize: 16, maxBatchTokens: 32, maxRunning: 8, decodeSteps: 1 });
    const w = new SimWorker(16);
    s.add({ id: 1, promptTokens: prompt(4, 1), maxNewTokens: 20 });
    const run = (plan: StepPlanData) => {
      const res = w.run(plan);
      res.forEach((sub, i) => {
        const sampled = new Map(sub.map((r) => [r.seqId, r]));
        if (i === 0)
          for (const sch of plan.scheduled) s.onComputed(sch.seqId, sch.numTokens, sampled.get(sch.seqId)?.token);
        else for (const r of sub) s.onComputed(r.seqId, 1, r.token);
        for (const r of sub) if (r.finished) s.finish(r.seqId, true);
      });
    };
    run(s.schedule()!); // seq 1 prefill + first token
    s.add({ id: 2, promptTokens: prompt(100, 2), maxNewTokens: 5 });
    const chunks: number[] = [];
    for (let i = 0; i < 4; i++) {
      const plan = s.schedule()!;
      const one = plan.scheduled.find((x) => x.seqId === 1);
      const two = plan.scheduled.find((x) => x.seqId === 2);
      expect(one?.numTokens).toBe(1); // the decode is never stalled by the long prefill
      chunks.push(two?.numTokens ?? 0);
      expect(plan.scheduled.reduce((a, x) => a + x.numTokens, 0)).toBeLessThanOrEqual(32);
      run(plan);
      expect(s.checkInvariants()).toBeNull();
    }
    expect(chunks).toEqual([31, 31, 31, 7]);
  });

  it("takes a sequence with tokens generated elsewhere: computes them with the prompt and goes on from there", () => {
    // A request moved from a failed group (Router.retryElsewhere): 7 of its 12 tokens were streamed already.
    const s = createScheduler({ numPages: 32, blockSize: 4, maxBatchTokens: 64, maxRunning: 4, decodeSteps: 1 });
    const w = new SimWorker(4);
    const p = prompt(9, 5);
    const all = expected(p, 12);
    s.add({ id: 1, promptTokens: p, generatedTokens: all.slice(0, 7), maxNewTokens: 12 });
    const first = s.schedule()!;
    expect(first.newSequences).toEqual([
      { seqId: 1, tokens: [...p, ...all.slice(0, 7)], numGenerated: 7, maxNewTokens: 12, numComputed: 0 },
    ]);
    expect(first.scheduled[0]!.numTokens).toBe(16); // prompt and generated tokens in one chunk
    const got: number[] = [];
    let plan: StepPlanData | null = first;
    for (let i = 0; plan && i < 20; i++, plan = s.schedule()) {
      for (const sub of w.run(plan)) {
        for (const r of sub) {
          s.onComputed(r.seqId, plan.scheduled.find((x) => x.seqId === r.seqId)!.numTokens, r.token);
          got.push(r.token);
          if (r.finished) s.finish(r.seqId, true);
        }
      }
      expect(s.checkInvariants()).toBeNull();
    }
    expect(got).toEqual(all.slice(7)); // the 5 tokens left, as if it had never moved
  });

  it("runs many sequences through a small pool with preemption: same tokens as alone, pages never shared", () => {
    // The last setting has the adaptive lookahead at its cap of 12 steps (1 ms steps, 20 ms aimed for).
    for (const [decodeSteps, adaptive] of [
      [1, false],
      [4, false],
      [2, true],
    ] as const) {
      const blockSize = 4;
      const s = createScheduler({
        numPages: 14,
        blockSize,
        maxBatchTokens: 24,
        maxRunning: 6,
        decodeSteps,
        ...(adaptive ? { decodeLookaheadMs: 20, decodeStepsMax: 12 } : {}),
      });
      if (adaptive) s.noteDecodeStep(1);
      const w = new SimWorker(blockSize);
      const specs = Array.from({ length: 14 }, (_, i) => ({
        id: i + 1,
        p: prompt(3 + ((i * 5) % 17), i),
        n: 5 + ((i * 7) % 23),
      }));
      const got = new Map<number, number[]>();
      let added = 0;
      let steps = 0;
      let preempted = 0;
      while (steps < 5000) {
        if (added < specs.length) {
          const sp = specs[added++]!;
          s.add({ id: sp.id, promptTokens: sp.p, maxNewTokens: sp.n });
          got.set(sp.id, []);
        }
        const plan = s.schedule();
        if (!plan) {
          if (added === specs.length) break;
          steps++;
          continue;
        }
        preempted += plan.preempted.length;
        // A preempted sequence restarts with its generated tokens as part of the prompt.
        for (const n of plan.newSequences) got.set(n.seqId, got.get(n.seqId)!.slice(0, n.numGenerated));
        const res = w.run(plan);
        res.forEach((sub, i) => {
          const sampled = new Map(sub.map((r) => [r.seqId, r]));
          if (i === 0)
            for (const sch of plan.scheduled) s.onComputed(sch.seqId, sch.numTokens, sampled.get(sch.seqId)?.token);
          else for (const r of sub) s.onComputed(r.seqId, 1, r.token);
          for (const r of sub) {
            got.get(r.seqId)!.push(r.token);
            if (r.finished) s.finish(r.seqId, true);
          }
        });
        const bad = s.checkInvariants();
        expect(bad).toBeNull();
        steps++;
      }
      expect(preempted).toBeGreaterThan(0);
      for (const sp of specs)
        expect(got.get(sp.id), `seq ${sp.id} decodeSteps ${decodeSteps} ${adaptive}`).toEqual(expected(sp.p, sp.n));
      expect(s.stats().pagesFree).toBe(13);
      expect(s.stats().running + s.stats().waiting).toBe(0);
    }
  });

  it("raises the decode lookahead toward decodeLookaheadMs of fast steps, within its bounds and the free pages", () => {
    const mk = (numPages: number) =>
      createScheduler({
        numPages,
        blockSize: 4,
        maxBatchTokens: 64,
        maxRunning: 4,
        decodeSteps: 4,
        decodeLookaheadMs: 20,
        decodeStepsMax: 16,
      });
    const s = mk(64);
    expect(s.lookaheadSteps()).toBe(4); // no step measured yet
    s.noteDecodeStep(2);
    expect(s.lookaheadSteps()).toBe(10);
    s.noteDecodeStep(Number.NaN); // ignored
    s.noteDecodeStep(-1);
    expect(s.lookaheadSteps()).toBe(10);
    for (let i = 0; i < 40; i++) s.noteDecodeStep(0.5);
    expect(s.lookaheadSteps()).toBe(16); // capped
    for (let i = 0; i < 40; i++) s.noteDecodeStep(30);
    expect(s.lookaheadSteps()).toBe(4); // never below decodeSteps
    for (let i = 0; i < 40; i++) s.noteDecodeStep(1);
    s.add({ id: 1, promptTokens: prompt(4, 1), maxNewTokens: 100 });
    const first = s.schedule()!;
    s.onComputed(1, first.scheduled[0]!.numTokens, 5);
    const plan = s.schedule()!;
    expect(plan.decodeSteps).toBe(16);
    expect(plan.scheduled[0]!.newPages.length).toBe(4); // tokens 5..20 on pages 2..5
    // Without pages for 16 steps the plan falls back to decodeSteps.
    const t = mk(4);
    for (let i = 0; i < 40; i++) t.noteDecodeStep(1);
    t.add({ id: 1, promptTokens: prompt(4, 1), maxNewTokens: 100 });
    const f = t.schedule()!;
    t.onComputed(1, f.scheduled[0]!.numTokens, 5);
    expect(t.schedule()!.decodeSteps).toBe(4);
  });

  it("frees a cancelled sequence's pages at once and tells the worker in the next plan", () => {
    const s = createScheduler({ numPages: 16, blockSize: 4, maxBatchTokens: 64, maxRunning: 4, decodeSteps: 1 });
    s.add({ id: 7, promptTokens: prompt(10, 7), maxNewTokens: 50 });
    const plan = s.schedule()!;
    s.onComputed(7, plan.scheduled[0]!.numTokens, 1);
    expect(s.stats().pagesFree).toBe(15 - 3);
    s.finish(7);
    expect(s.stats().pagesFree).toBe(15);
    const next = s.schedule()!;
    expect(next.drop).toEqual([7]);
    expect(next.scheduled).toEqual([]);
    expect(s.schedule()).toBeNull();
  });

  it("never hands out page 0 and admits no sequence whose first chunk does not fit", () => {
    const s = createScheduler({ numPages: 3, blockSize: 4, maxBatchTokens: 64, maxRunning: 4, decodeSteps: 1 });
    s.add({ id: 1, promptTokens: prompt(8, 1), maxNewTokens: 1 });
    s.add({ id: 2, promptTokens: prompt(4, 2), maxNewTokens: 1 });
    const plan = s.schedule()!;
    expect(plan.scheduled.map((x) => x.seqId)).toEqual([1]);
    expect(plan.scheduled[0]!.newPages.sort()).toEqual([1, 2]);
    expect(s.stats().waiting).toBe(1);
  });
});
