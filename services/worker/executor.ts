// Carries out step plans on one engine. The worker keeps the batch state (each sequence's tokens, progress and
// block table); the router refers to sequences by id and sends only what changed.
import { type Logger, pino } from "pino";
import type { Engine, ForwardBatch } from "../../native/index.js";
import type { SampledToken } from "../common/generated/tpserve/worker/v1/SampledToken.js";
import type { StepPlan__Output } from "../common/generated/tpserve/worker/v1/StepPlan.js";
import type { StepResult } from "../common/generated/tpserve/worker/v1/StepResult.js";
import type { WorkerMetrics } from "./metrics.js";
import { type SamplingOptions, sampleToken } from "./sampler.js";
import { isTpFailure } from "./tp.js";

export interface ExecutorOptions {
  vocabSize: number;
  eosTokenIds: readonly number[];
  blockSize: number;
  /** Pages one sequence may hold (max context / block size, rounded up). */
  maxBlocksPerSeq: number;
  maxBatchTokens: number;
  numPages: number;
  /** The group's epoch (it changes when the group re-registers in the cluster ledger). */
  epoch: number | (() => number);
}

interface WorkerSequence {
  requestId: string;
  tokens: number[];
  computed: number;
  pages: number[];
  sampling: SamplingOptions;
  numGenerated: number;
  maxNewTokens: number;
  ignoreEos: boolean;
}

/** A plan the worker cannot carry out; the router fails the plan's sequences with it. */
export class PlanError extends Error {
  readonly code: string;
  constructor(code: string, message: string) {
    super(message);
    this.code = code;
  }
}

export interface ExecutorStats {
  sequences: number;
  steps: number;
  forwardMsTotal: number;
  tokensComputed: number;
}

export class StepExecutor {
  private readonly seqs = new Map<number, WorkerSequence>();
  private readonly eos: Set<number>;
  private steps = 0;
  private forwardMsTotal = 0;
  private tokensComputed = 0;
  /** The plan the router asked to end early (cut), -1 for none. */
  private cutStepId = -1;

  constructor(
    private readonly engine: Engine,
    private readonly opts: ExecutorOptions,
    private readonly log: Logger = pino({ level: "silent" }),
    private readonly metrics?: WorkerMetrics,
  ) {
    this.eos = new Set(opts.eosTokenIds);
    const info = engine.info();
    this.onGpu = info.device !== "cpu";
    this.decodeAhead = info.decodeAhead?.enabled === true;
  }

  /** The engine decodes ahead when a batch says it continues (ForwardBatch.continues). */
  private readonly decodeAhead: boolean;

  /** GPU engines sample where the logits are; on the CPU the logits come to JavaScript (sampler.ts). */
  private readonly onGpu: boolean;

  stats(): ExecutorStats {
    return {
      sequences: this.seqs.size,
      steps: this.steps,
      forwardMsTotal: this.forwardMsTotal,
      tokensComputed: this.tokensComputed,
    };
  }

  /**
   * Ends multi-step plan `stepId` after the decode step in progress: its result becomes the plan's last. Takes
   * effect at once, also while that plan runs (the router has new work for the worker).
   */
  cut(stepId: number): void {
    this.cutStepId = stepId;
  }

  /** Runs one plan; `emit` receives one result per executed step (several for a multi-step decode plan). */
  async execute(plan: StepPlan__Output, emit: (r: StepResult) => void): Promise<void> {
    try {
      this.applyPlan(plan);
      const ids = plan.scheduled.map((s) => s.seqId);
      const counts = plan.scheduled.map((s) => s.numTokens);
      const maxSteps = Math.max(1, plan.decodeSteps);
      let step = this.runStep(ids, counts, true, maxSteps > 1 && this.cutStepId !== plan.stepId);
      for (let sub = 0; sub < maxSteps; sub++) {
        const { tokens, forwardMs, continues } = await step;
        const cut = this.cutStepId === plan.stepId;
        // A step the engine decodes ahead (continues) is on the GPU already: a cut ends the plan after it.
        const last = sub + 1 >= maxSteps || !this.canContinue(ids) || (cut && !continues);
        if (!last) {
          // Later sub-steps decode one token of every sequence still alive. The next forward pass is queued
          // before this step's results are sent, so their serialization overlaps it on the device.
          for (let i = 0; i < ids.length; i++) counts[i] = this.seqs.has(ids[i]!) ? 1 : 0;
          step = this.runStep(ids, counts, false, sub + 2 < maxSteps && !cut);
        }
        emit({ stepId: plan.stepId, subStep: sub, last, tokens, forwardMs });
        if (last) break;
      }
    } catch (err) {
      const e = err as { code?: string; message?: string };
      this.log.error(
        {
          step_id: plan.stepId,
          code: e.code,
          request_ids: plan.scheduled.map((s) => this.seqs.get(s.seqId)?.requestId ?? null),
        },
        `step failed: ${e.message ?? String(err)}`,
      );
      for (const s of plan.scheduled) this.seqs.delete(s.seqId);
      emit({
        stepId: plan.stepId,
        subStep: 0,
        last: true,
        tokens: [],
        // A failed tensor-parallel group is an unavailable worker, not a bad request.
        errorCode: isTpFailure(e.code) ? "UNAVAILABLE" : (e.code ?? "WORKER_INTERNAL"),
        errorMessage: isTpFailure(e.code) ? `${e.code}: ${e.message}` : (e.message ?? String(err)),
      });
    }
  }

  private applyPlan(plan: StepPlan__Output): void {
    const epoch = typeof this.opts.epoch === "function" ? this.opts.epoch() : this.opts.epoch;
    if (plan.epoch !== epoch) {
      throw new PlanError("WORKER_STALE_EPOCH", `plan epoch ${plan.epoch} does not match worker epoch ${epoch}`);
    }
    for (const id of plan.drop) this.seqs.delete(id);
    for (const n of plan.newSequences) {
      if (n.tokens.length === 0) throw new PlanError("WORKER_BAD_PLAN", `new sequence ${n.seqId} has no tokens`);
      for (const t of n.tokens) {
        if (t >= this.opts.vocabSize) {
          throw new PlanError("WORKER_BAD_PLAN", `token ${t} of sequence ${n.seqId} >= vocab ${this.opts.vocabSize}`);
        }
      }
      if (n.numComputed >= n.tokens.length || n.numComputed % this.opts.blockSize !== 0) {
        throw new PlanError(
          "WORKER_BAD_PLAN",
          `new sequence ${n.seqId}: num_computed ${n.numComputed} must be a multiple of the block size ` +
            `${this.opts.blockSize} below its ${n.tokens.length} tokens`,
        );
      }
      const s = n.sampling;
      this.seqs.set(n.seqId, {
        requestId: n.requestId,
        tokens: [...n.tokens],
        computed: n.numComputed,
        pages: [],
        sampling: {
          temperature: s?.temperature ?? 0,
          topK: s?.topK ?? 0,
          topP: s?.topP || 1,
          minP: s?.minP ?? 0,
          seed: s?.seed ?? 0,
        },
        numGenerated: n.numGenerated,
        maxNewTokens: n.maxNewTokens,
        ignoreEos: n.ignoreEos,
      });
    }
    let total = 0;
    for (const sch of plan.scheduled) {
      const s = this.seqs.get(sch.seqId);
      if (!s) throw new PlanError("WORKER_BAD_PLAN", `plan schedules unknown sequence ${sch.seqId}`);
      for (const p of sch.newPages) {
        if (p <= 0 || p >= this.opts.numPages) {
          throw new PlanError(
            "WORKER_BAD_PLAN",
            `page ${p} of sequence ${sch.seqId} outside 1..${this.opts.numPages - 1}`,
          );
        }
      }
      s.pages.push(...sch.newPages);
      if (s.pages.length > this.opts.maxBlocksPerSeq) {
        throw new PlanError(
          "WORKER_BAD_PLAN",
          `sequence ${sch.seqId} holds ${s.pages.length} pages, limit ${this.opts.maxBlocksPerSeq}`,
        );
      }
      if (sch.numTokens < 1 || s.computed + sch.numTokens > s.tokens.length) {
        throw new PlanError(
          "WORKER_BAD_PLAN",
          `sequence ${sch.seqId}: ${sch.numTokens} tokens asked, ${s.tokens.length - s.computed} uncomputed`,
        );
      }
      total += sch.numTokens;
    }
    if (total > this.opts.maxBatchTokens) {
      throw new PlanError(
        "WORKER_BAD_PLAN",
        `plan has ${total} tokens, worker limit --max-batch-tokens ${this.opts.maxBatchTokens}`,
      );
    }
  }

  private canContinue(ids: number[]): boolean {
    for (const id of ids) {
      const s = this.seqs.get(id);
      if (s && s.computed + 1 <= s.pages.length * this.opts.blockSize) return true;
    }
    return false;
  }

  /**
   * One forward pass of the sequences `ids` (`counts` tokens each). mayContinue: the plan has a later sub-step,
   * so the engine is told to decode ahead (ForwardBatch.continues) when some sequence will still run after this
   * step and every one has a page for its next token.
   */
  private async runStep(
    ids: number[],
    counts: number[],
    strict: boolean,
    mayContinue: boolean,
  ): Promise<{ tokens: SampledToken[]; forwardMs: number; continues: boolean }> {
    const active: { id: number; s: WorkerSequence; n: number }[] = [];
    for (let i = 0; i < ids.length; i++) {
      const n = counts[i]!;
      const s = this.seqs.get(ids[i]!);
      if (!s || n === 0) continue;
      if (s.computed + n > s.pages.length * this.opts.blockSize) {
        if (strict) {
          throw new PlanError(
            "WORKER_BAD_PLAN",
            `sequence ${ids[i]} needs ${s.computed + n} token slots, its ${s.pages.length} pages hold ${s.pages.length * this.opts.blockSize}`,
          );
        }
        continue; // multi-step decode past the pages the router reserved: it sits out the remaining sub-steps
      }
      active.push({ id: ids[i]!, s, n });
    }
    if (active.length === 0) return { tokens: [], forwardMs: 0, continues: false };
    const batch = this.buildBatch(active);
    const bs = this.opts.blockSize;
    batch.continues =
      this.decodeAhead &&
      mayContinue &&
      active.every((a) => a.s.computed + a.n + 1 <= a.s.pages.length * bs) &&
      active.some((a) => a.s.computed + a.n === a.s.tokens.length && a.s.numGenerated + 1 < a.s.maxNewTokens);
    // Greedy steps take the argmax where the logits are; only ids cross into JavaScript.
    const greedy = active.every((a) => a.s.sampling.temperature === 0 || a.s.sampling.topK === 1);
    const t0 = performance.now();
    let argmax: Int32Array | undefined;
    let logits: Float32Array | undefined;
    if (greedy) argmax = await this.engine.forwardArgmax(batch);
    else if (this.onGpu) {
      const rows = active.map((a) => ({ ...a.s.sampling, position: a.s.numGenerated }));
      argmax = await this.engine.forwardSample(batch, rows);
    } else logits = await this.engine.forward(batch);
    const forwardMs = performance.now() - t0;
    this.steps++;
    this.forwardMsTotal += forwardMs;
    if (this.metrics) {
      const prefill = active.some((a) => a.n > 1);
      this.metrics.forward.observe({ phase: prefill ? "prefill" : "decode" }, forwardMs / 1000);
      this.metrics.tokens.inc(batch.tokens.length);
    }
    this.tokensComputed += batch.tokens.length;

    const out: SampledToken[] = [];
    const vocab = this.opts.vocabSize;
    for (let row = 0; row < active.length; row++) {
      const { id, s, n } = active[row]!;
      s.computed += n;
      if (s.computed !== s.tokens.length) continue; // a prefill chunk that is not the last one
      const token = argmax ? argmax[row]! : sampleToken(logits!, row * vocab, vocab, s.sampling, s.numGenerated);
      s.tokens.push(token);
      s.numGenerated++;
      const eos = !s.ignoreEos && this.eos.has(token);
      const finished = eos || s.numGenerated >= s.maxNewTokens;
      if (finished) {
        this.seqs.delete(id);
        this.log.debug(
          { request_id: s.requestId, seq_id: id, generated: s.numGenerated, eos, computed: s.computed },
          "sequence finished",
        );
      }
      out.push({ seqId: id, token, finished, eos });
    }
    return { tokens: out, forwardMs, continues: batch.continues };
  }

  private buildBatch(active: { s: WorkerSequence; n: number }[]): ForwardBatch {
    let total = 0;
    let maxBlocks = 1;
    for (const a of active) {
      total += a.n;
      maxBlocks = Math.max(maxBlocks, a.s.pages.length);
    }
    const tokens = new Int32Array(total);
    const seqLens = new Int32Array(active.length);
    const contextLens = new Int32Array(active.length);
    const blockTables = new Int32Array(active.length * maxBlocks);
    let t = 0;
    for (let i = 0; i < active.length; i++) {
      const { s, n } = active[i]!;
      for (let j = 0; j < n; j++) tokens[t++] = s.tokens[s.computed + j]!;
      seqLens[i] = n;
      contextLens[i] = s.computed + n;
      blockTables.set(s.pages, i * maxBlocks);
    }
    return { tokens, seqLens, contextLens, blockTables, maxBlocksPerSeq: maxBlocks, logits: "last" };
  }
}
