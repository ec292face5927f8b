// Continuous-batching scheduler: pure, synchronous, no I/O. It turns the waiting queue, the running set and the
// free pages into one step plan (plain data). Progress is `numComputed` against `tokens.length`; there is no
// separate prefill and decode phase: a sequence with many uncomputed tokens gets a chunk of the step's token
// budget, one with a single uncomputed token (its last sampled one) decodes.
//
// Pages: the scheduler owns the page ids of one group's KV pool. Page 0 is reserved. A sequence holds
// ceil(numComputedAfterStep / blockSize) pages. When a running sequence cannot get the page it needs, the newest
// running sequence is preempted by recompute: its pages are freed, the worker is told to drop it, and it goes back
// to the front of the queue with its prompt plus the tokens generated so far.
import { PagePool, type PagePoolLike } from "./pages.js";
import { PrefixCachingPool } from "./prefix-cache.js";
import { PrefixTracker } from "./scheduler-prefix.js";

export interface SchedulerOptions {
  /** KV pool size in pages, including the reserved page 0. */
  numPages: number;
  /** Tokens per page. */
  blockSize: number;
  /** Token budget of one step (prefill chunks plus decodes). */
  maxBatchTokens: number;
  /** Most sequences in one step. */
  maxRunning: number;
  /** Decode steps the worker may run back to back for a decode-only plan (1 = every step is planned). */
  decodeSteps: number;
  /**
   * Adaptive lookahead: a decode-only plan gets enough steps to last about this long at the measured step time
   * (noteDecodeStep), at least decodeSteps and at most decodeStepsMax. 0 or unset: always decodeSteps.
   */
  decodeLookaheadMs?: number;
  decodeStepsMax?: number;
  /** The pages this scheduler hands out (default: every page of the pool, 1..numPages-1). */
  pool?: PagePoolLike;
  /**
   * Prefix caching: the root of the block-hash chain (rootHash(model, blockSize)); the pool must then be a
   * PrefixCachingPool. Unset: no caching.
   */
  prefixRoot?: Buffer;
  /** Called at a sequence's first admission with its prompt tokens and how many of them were cached. */
  onPrefixLookup?: (promptTokens: number, cachedTokens: number) => void;
}

export interface SequenceSpec {
  id: number;
  promptTokens: readonly number[];
  /**
   * Tokens already generated elsewhere (a request moved from a failed group): computed again with the prompt, as
   * after a preemption, and counted against maxNewTokens.
   */
  generatedTokens?: readonly number[];
  /** The worker stops the sequence after this many generated tokens. */
  maxNewTokens: number;
}

export type SeqStatus = "waiting" | "running" | "finished";

export interface SequenceState {
  readonly id: number;
  readonly numPrompt: number;
  /** Prompt followed by every generated token. */
  readonly tokens: number[];
  /** Tokens whose K/V are in the cache. */
  numComputed: number;
  pages: number[];
  status: SeqStatus;
  /** Whether the worker currently holds this sequence (it must be told to drop it). */
  onWorker: boolean;
  maxNewTokens: number;
  preemptions: number;
  /** Monotonic admission order; the newest running sequence is preempted first. */
  admittedAt: number;
  /** Chained hashes of the sequence's full blocks computed so far (prefix caching). */
  blockHashes: Buffer[];
  /** Leading blocks whose pages are in the prefix cache (acquired from it or registered by this sequence). */
  cachedBlocks: number;
  /** Tokens found in the prefix cache at the first admission (-1 before it). */
  cachedAtAdmission: number;
}

export interface PlannedNewSequence {
  seqId: number;
  tokens: number[];
  numGenerated: number;
  maxNewTokens: number;
  /** Leading tokens whose K/V are already on the sequence's first pages (prefix cache hits). */
  numComputed: number;
}

export interface PlannedSequence {
  seqId: number;
  numTokens: number;
  newPages: number[];
  /** Whether this step ends with a sampled token for the sequence. */
  samples: boolean;
}

export interface StepPlanData {
  stepId: number;
  newSequences: PlannedNewSequence[];
  scheduled: PlannedSequence[];
  drop: number[];
  decodeSteps: number;
  /** Sequences preempted while building this plan (for logs and stats). */
  preempted: number[];
}

export interface SchedulerStats {
  running: number;
  waiting: number;
  pagesTotal: number;
  pagesFree: number;
  steps: number;
  preemptions: number;
}

export class Scheduler {
  private readonly opts: SchedulerOptions;
  private readonly pool: PagePoolLike;
  private readonly prefix: PrefixTracker | undefined;
  private readonly seqs = new Map<number, SequenceState>();
  private waiting: number[] = [];
  private running: number[] = [];
  private pendingDrops: number[] = [];
  private stepCounter = 0;
  private admitCounter = 0;
  private preemptionCount = 0;
  /** Moving average of the wall time of one decode sub-step (ms), for the adaptive lookahead; 0 = none yet. */
  private decodeStepMs = 0;

  constructor(opts: SchedulerOptions) {
    if (opts.numPages < 2) throw new RangeError(`numPages must be >= 2 (page 0 is reserved), got ${opts.numPages}`);
    if (opts.blockSize < 1) throw new RangeError(`blockSize must be >= 1, got ${opts.blockSize}`);
    if (opts.maxBatchTokens < 1) throw new RangeError(`maxBatchTokens must be >= 1, got ${opts.maxBatchTokens}`);
    this.opts = { ...opts, decodeSteps: Math.max(1, opts.decodeSteps) };
    this.pool = opts.pool ?? new PagePool(opts.numPages);
    if (opts.prefixRoot) {
      if (!(this.pool instanceof PrefixCachingPool)) throw new TypeError("prefix caching needs a PrefixCachingPool");
      this.prefix = new PrefixTracker(this.pool, opts.prefixRoot, opts.blockSize);
    }
  }

  get blockSize(): number {
    return this.opts.blockSize;
  }

  /** Largest context one sequence can ever hold in this pool. */
  get capacityTokens(): number {
    return (this.opts.numPages - 1) * this.opts.blockSize;
  }

  add(spec: SequenceSpec): void {
    if (this.seqs.has(spec.id)) throw new Error(`sequence ${spec.id} already exists`);
    if (spec.promptTokens.length === 0) throw new RangeError("a sequence needs at least one prompt token");
    this.seqs.set(spec.id, {
      id: spec.id,
      numPrompt: spec.promptTokens.length,
      tokens: [...spec.promptTokens, ...(spec.generatedTokens ?? [])],
      numComputed: 0,
      pages: [],
      status: "waiting",
      onWorker: false,
      maxNewTokens: spec.maxNewTokens,
      preemptions: 0,
      admittedAt: -1,
      blockHashes: [],
      cachedBlocks: 0,
      cachedAtAdmission: -1,
    });
    this.waiting.push(spec.id);
  }

  get(id: number): SequenceState | undefined {
    return this.seqs.get(id);
  }

  hasWork(): boolean {
    return this.waiting.length > 0 || this.running.length > 0 || this.pendingDrops.length > 0;
  }

  /**
   * Ends a sequence (finished, cancelled, failed): frees its pages at once. `workerDropped` says the worker has
   * already forgotten it (it ended the sequence itself); otherwise the next plan tells it to.
   */
  finish(id: number, workerDropped = false): void {
    const s = this.seqs.get(id);
    if (!s) return;
    this.pool.release(s.pages);
    s.pages = [];
    if (s.onWorker && !workerDropped) this.pendingDrops.push(id);
    s.onWorker = false;
    this.running = this.running.filter((x) => x !== id);
    this.waiting = this.waiting.filter((x) => x !== id);
    s.status = "finished";
    this.sentPages.delete(id);
    this.seqs.delete(id);
  }

  /**
   * Records that the step computed `numTokens` of the sequence and, when it sampled, appends the token.
   * Tokens for sequences that have ended meanwhile are ignored (returns false).
   */
  onComputed(id: number, numTokens: number, sampled: number | undefined): boolean {
    const s = this.seqs.get(id);
    if (s?.status !== "running") return false;
    s.numComputed += numTokens;
    if (sampled !== undefined) s.tokens.push(sampled);
    this.prefix?.registerFullBlocks(s);
    return true;
  }

  /** Builds the next step plan, or null when there is nothing to run. */
  schedule(): StepPlanData | null {
    const plan: StepPlanData = {
      stepId: ++this.stepCounter,
      newSequences: [],
      scheduled: [],
      drop: [],
      decodeSteps: 1,
      preempted: [],
    };
    let budget = this.opts.maxBatchTokens;
    const picked = new Map<number, number>(); // seq id -> tokens this step

    // 1. Running sequences, oldest first. Each needs its uncomputed tokens (1 for a decode).
    const runningByAge = [...this.running].sort((a, b) => this.seq(a).admittedAt - this.seq(b).admittedAt);
    for (const id of runningByAge) {
      if (budget === 0) break;
      const s = this.seqs.get(id);
      if (s?.status !== "running") continue; // preempted by an older sequence in this loop
      const n = Math.min(s.tokens.length - s.numComputed, budget);
      if (n <= 0) continue;
      if (!this.ensurePages(s, s.numComputed + n, plan)) continue; // s itself was preempted
      picked.set(id, n);
      budget -= n;
    }

    // 2. Waiting sequences, in order, while budget, slots and pages last. No preemption to admit.
    while (this.waiting.length > 0 && budget > 0 && this.running.length < this.opts.maxRunning) {
      const id = this.waiting[0]!;
      const s = this.seq(id);
      if (s.pages.length === 0) this.prefix?.useCachedPrefix(s);
      const n = Math.min(s.tokens.length - s.numComputed, budget);
      if (!this.pool.canAllocate(this.pagesFor(s.numComputed + n) - s.pages.length)) {
        this.prefix?.dropCachedPrefix(s);
        break;
      }
      if (s.cachedAtAdmission < 0) {
        s.cachedAtAdmission = s.numComputed;
        this.opts.onPrefixLookup?.(s.numPrompt, s.numComputed);
      }
      this.waiting.shift();
      s.status = "running";
      s.admittedAt = ++this.admitCounter;
      this.running.push(id);
      this.growPages(s, s.numComputed + n);
      picked.set(id, n);
      budget -= n;
    }

    // 3. Decode-only plans may run several steps on the worker without a round trip.
    const allDecode = picked.size > 0 && [...picked.entries()].every(([id, n]) => n === 1 && this.isDecode(id));
    if (allDecode && this.opts.decodeSteps > 1 && this.waiting.length === 0) {
      plan.decodeSteps = this.reserveLookahead(picked);
    }

    for (const [id, n] of picked) {
      const s = this.seq(id);
      if (!s.onWorker) {
        plan.newSequences.push({
          seqId: id,
          tokens: [...s.tokens],
          numGenerated: s.tokens.length - s.numPrompt,
          maxNewTokens: s.maxNewTokens,
          numComputed: s.numComputed,
        });
        s.onWorker = true;
        this.sentPages.set(id, 0);
      }
      const sent = this.sentPages.get(id) ?? 0;
      plan.scheduled.push({
        seqId: id,
        numTokens: n,
        newPages: s.pages.slice(sent),
        samples: s.numComputed + n === s.tokens.length,
      });
      this.sentPages.set(id, s.pages.length);
    }
    plan.drop = this.pendingDrops;
    this.pendingDrops = [];
    if (plan.scheduled.length === 0 && plan.drop.length === 0) {
      this.stepCounter--;
      return null;
    }
    return plan;
  }

  /** Ids of the sequences waiting for a slot or for pages. */
  waitingIds(): readonly number[] {
    return this.waiting;
  }

  /** Every page held by a sequence, page -> sequence id. */
  heldPages(): Map<number, number> {
    const out = new Map<number, number>();
    for (const s of this.seqs.values()) for (const p of s.pages) out.set(p, s.id);
    return out;
  }

  /**
   * Pages the next plan needs beyond the free ones to make progress: every running sequence's next chunk (with
   * the decode lookahead) and the chunk of the first waiting sequence. 0 when the pool has enough.
   */
  pagesShort(): number {
    let need = 0;
    let budget = this.opts.maxBatchTokens;
    for (const id of this.running) {
      const s = this.seq(id);
      const n = Math.min(Math.max(1, s.tokens.length - s.numComputed), budget);
      need += Math.max(0, this.pagesFor(s.numComputed + n + this.opts.decodeSteps - 1) - s.pages.length);
      budget = Math.max(0, budget - n);
    }
    const head = this.waiting[0];
    if (head !== undefined && budget > 0) {
      const s = this.seq(head);
      need += this.pagesFor(s.numComputed + Math.min(s.tokens.length - s.numComputed, budget)) - s.pages.length;
    }
    return Math.max(0, need - this.pool.free);
  }

  stats(): SchedulerStats {
    return {
      running: this.running.length,
      waiting: this.waiting.length,
      pagesTotal: this.pool.total,
      pagesFree: this.pool.free,
      steps: this.stepCounter,
      preemptions: this.preemptionCount,
    };
  }

  /**
   * Checks the page invariants: page 0 never used, no page held by two sequences or both held and free,
   * held + free = total. Returns a description of the first violation, or null.
   */
  checkInvariants(): string | null {
    const owner = new Map<number, number[]>();
    for (const s of this.seqs.values()) {
      for (const p of s.pages) {
        if (p === 0) return `sequence ${s.id} holds the reserved page 0`;
        if (this.pool.isFree(p)) return `page ${p} is held by sequence ${s.id} and also free`;
        const holders = owner.get(p) ?? [];
        holders.push(s.id);
        owner.set(p, holders);
      }
      if (s.status === "waiting" && s.pages.length > 0) return `waiting sequence ${s.id} holds pages`;
    }
    for (const [p, holders] of owner) {
      // Only a cached block may be shared, and then by exactly as many sequences as hold a reference on it.
      const refs = this.prefix?.cache.refCount(p) ?? 0;
      if ((holders.length > 1 || refs > 0) && refs !== holders.length) {
        return `page ${p} is held by sequences ${holders.join(" and ")} (cache references: ${refs})`;
      }
    }
    if (owner.size + this.pool.free !== this.pool.total) {
      return `held ${owner.size} + free ${this.pool.free} != ${this.pool.total} pages`;
    }
    return null;
  }

  // --- internals -------------------------------------------------------------------------------------------

  /** Pages already announced to the worker, per sequence (the plan carries only the new ones). */
  private readonly sentPages = new Map<number, number>();

  private seq(id: number): SequenceState {
    const s = this.seqs.get(id);
    if (!s) throw new Error(`unknown sequence ${id}`);
    return s;
  }

  private pagesFor(tokens: number): number {
    return Math.ceil(tokens / this.opts.blockSize);
  }

  private isDecode(id: number): boolean {
    const s = this.seq(id);
    return s.onWorker && s.numComputed === s.tokens.length - 1;
  }

  private growPages(s: SequenceState, tokens: number): void {
    const need = this.pagesFor(tokens) - s.pages.length;
    if (need > 0) s.pages.push(...this.pool.allocate(need));
  }

  /**
   * Makes sure `s` holds pages for `tokens` tokens, preempting the newest running sequences (possibly `s` itself)
   * until it does. Returns false when `s` was preempted.
   */
  private ensurePages(s: SequenceState, tokens: number, plan: StepPlanData): boolean {
    for (;;) {
      const need = this.pagesFor(tokens) - s.pages.length;
      if (this.pool.canAllocate(need)) {
        this.growPages(s, tokens);
        return true;
      }
      const victim = this.newestRunning();
      if (victim === undefined) return false;
      this.preempt(victim, plan);
      if (victim === s.id) return false;
    }
  }

  private newestRunning(): number | undefined {
    let best: SequenceState | undefined;
    for (const id of this.running) {
      const s = this.seq(id);
      if (!best || s.admittedAt > best.admittedAt) best = s;
    }
    return best?.id;
  }

  private preempt(id: number, plan: StepPlanData): void {
    const s = this.seq(id);
    this.pool.release(s.pages);
    s.pages = [];
    s.numComputed = 0;
    s.cachedBlocks = 0;
    s.status = "waiting";
    s.preemptions++;
    this.preemptionCount++;
    if (s.onWorker) this.pendingDrops.push(id);
    s.onWorker = false;
    this.sentPages.delete(id);
    this.running = this.running.filter((x) => x !== id);
    this.waiting.unshift(id);
    plan.preempted.push(id);
  }

  /** Records the wall time of one decode sub-step (between two results of a multi-step plan). */
  noteDecodeStep(ms: number): void {
    if (!(ms > 0) || !Number.isFinite(ms)) return;
    this.decodeStepMs = this.decodeStepMs === 0 ? ms : 0.8 * this.decodeStepMs + 0.2 * ms;
  }

  /** Steps a decode-only plan asks for: decodeSteps, raised toward decodeLookaheadMs of work when steps are fast. */
  lookaheadSteps(): number {
    const { decodeSteps, decodeLookaheadMs = 0, decodeStepsMax = decodeSteps } = this.opts;
    if (decodeLookaheadMs <= 0 || decodeStepsMax <= decodeSteps || this.decodeStepMs === 0) return decodeSteps;
    return Math.max(decodeSteps, Math.min(decodeStepsMax, Math.floor(decodeLookaheadMs / this.decodeStepMs)));
  }

  /**
   * Reserves pages so that every picked decode can run up to lookaheadSteps() steps (each sequence at most to its
   * own token limit, where the worker stops it). Returns the steps granted: that many, else decodeSteps, else 1
   * when pages are short.
   */
  private reserveLookahead(picked: Map<number, number>): number {
    const wanted = this.lookaheadSteps();
    for (const steps of wanted > this.opts.decodeSteps ? [wanted, this.opts.decodeSteps] : [wanted]) {
      const target = (s: SequenceState): number =>
        s.numComputed + Math.max(1, Math.min(steps, s.maxNewTokens - (s.tokens.length - s.numPrompt)));
      let extra = 0;
      for (const id of picked.keys()) {
        const s = this.seq(id);
        extra += Math.max(0, this.pagesFor(target(s)) - s.pages.length);
      }
      if (!this.pool.canAllocate(extra)) continue;
      for (const id of picked.keys()) {
        const s = this.seq(id);
        this.growPages(s, target(s));
      }
      return steps;
    }
    return 1;
  }
}

export function createScheduler(opts: SchedulerOptions): Scheduler {
  return new Scheduler(opts);
}
