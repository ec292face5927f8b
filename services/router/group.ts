// One worker group as the router sees it: the scheduler of its page pool, the long-lived Steps stream to its
// leader, and the loop that turns plans into results. Plans go out one at a time; a decode-only plan may ask the
// worker for several steps back to back, each answered with its own result as soon as it is computed.
import type * as grpc from "@grpc/grpc-js";
import type { StepPlan } from "../common/generated/tpserve/worker/v1/StepPlan.js";
import type { StepResult__Output } from "../common/generated/tpserve/worker/v1/StepResult.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import type { LedgerPages } from "./leased-pages.js";
import type { Scheduler, StepPlanData } from "./scheduler.js";
import type { NormalizedSampling } from "./validate.js";

/** What the group needs of a request to put it on the worker. */
export interface SequenceParams {
  sampling: NormalizedSampling;
  ignoreEos: boolean;
  /** The public request id; it travels to the worker for its logs. */
  requestId: string;
}

export interface GroupEvents {
  /** A token was sampled for a live sequence. `finished` means the worker ended it (EOS or token limit). */
  onToken(seqId: number, token: number, finished: boolean, eos: boolean): void;
  /** The step failed for these sequences (they are already removed from the scheduler). */
  onFailure(seqIds: number[], code: string, message: string): void;
  /** The sequence was preempted (its pages freed; it will be recomputed). */
  onPreempt(seqId: number): void;
  /** The sequence entered the worker in this plan (first time, or again after a preemption). */
  onJoin(seqId: number): void;
  /** One step result arrived: the step's batch, whether it computed prompt tokens, wall and forward time (ms). */
  onStep(batch: number, prefill: boolean, wallMs: number, forwardMs: number): void;
}

export interface StepLogEntry {
  stepId: number;
  /** Sequences that entered the worker in this step (new or re-admitted after preemption). */
  joined: number[];
  /** Sequences dropped from the worker before this step (finished, cancelled, preempted). */
  left: number[];
  preempted: number[];
  scheduled: number;
  tokens: number;
  decodeSteps: number;
  /** Results received: decodeSteps, or fewer when the worker ended the plan early (sequences done, or a cut). */
  subSteps: number;
  /** The router asked the worker to end this plan early (new work arrived while it ran). */
  cut: boolean;
  forwardMs: number;
}

const STEP_LOG_SIZE = 2000;

export class WorkerGroup {
  readonly stepLog: StepLogEntry[] = [];
  /** The group is draining (a NATS drain notice, or grpc.health.v1 NOT_SERVING): no new requests go to it; those
   * in flight finish. */
  draining = false;
  /** Sequences the whole group holds (all routers), from its last heartbeat; 0 when unknown. */
  remoteLoad = 0;
  private stream: grpc.ClientDuplexStream<StepPlan, StepResult__Output> | undefined;
  private pending: ((r: StepResult__Output) => void) | undefined;
  private looping = false;
  private failed: string | undefined;
  /** The multi-step plan the worker is running, for cuts; undefined between plans. */
  private inFlight: { entry: StepLogEntry; seqIds: number[] } | undefined;
  private closed = false;

  constructor(
    readonly name: string,
    private readonly client: WorkerClient,
    readonly scheduler: Scheduler,
    private readonly params: Map<number, SequenceParams>,
    private readonly events: GroupEvents,
    readonly epoch: number,
    private readonly logSteps = false,
    /** Where the scheduler's pages come from when they are leased from the cluster ledger (else: the whole pool). */
    readonly ledgerPages?: LedgerPages,
  ) {}

  /** Opens the Steps stream. */
  connect(): void {
    const stream = this.client.Steps();
    stream.on("data", (r: StepResult__Output) => {
      const p = this.pending;
      if (p) p(r);
    });
    stream.on("error", (err: Error) => this.fail(`worker ${this.name} stream failed: ${err.message}`));
    stream.on("end", () => this.fail(`worker ${this.name} closed the step stream`));
    this.stream = stream;
  }

  get healthy(): boolean {
    return this.failed === undefined;
  }

  /**
   * Starts the step loop if it is idle. While a multi-step decode plan runs, asks the worker to end it after the
   * step in progress when the next plan has something new to do: a request waits to join, or every sequence of
   * the plan has ended at the router (stop string, cancel). So a long lookahead does not delay new requests.
   */
  kick(): void {
    if (this.looping) this.maybeCut();
    if (this.looping || this.failed) return;
    this.looping = true;
    void this.loop().finally(() => {
      this.looping = false;
      if (this.scheduler.hasWork() && !this.failed && !this.closed) this.kick();
    });
  }

  /** The worker's embedding of `tokens` (mean-pooled final hidden state, L2-normalized). */
  embed(tokens: number[], requestId: string): Promise<number[]> {
    return new Promise((resolve, reject) => {
      this.client.Embed({ tokens, requestId }, (err, res) => (err || !res ? reject(err) : resolve(res.values)));
    });
  }

  close(): void {
    this.closed = true;
    this.stream?.end();
  }

  /** Takes the group out of service: its sequences fail with UNAVAILABLE and `message`, the stream closes. */
  retire(message: string): void {
    this.fail(message);
    this.close();
  }

  private async loop(): Promise<void> {
    while (!this.failed && !this.closed) {
      // Let request handlers that are ready run first, so that requests arriving together share a step.
      await new Promise<void>((resolve) => setImmediate(resolve));
      const lp = this.ledgerPages;
      if (lp) await lp.prepare(this.scheduler);
      if (this.failed || this.closed) return;
      const plan = this.scheduler.schedule();
      if (!plan) {
        if (!lp || !this.scheduler.hasWork()) {
          lp?.trim(this.scheduler);
          return;
        }
        // Waiting for pages the ledger could not give yet: retry shortly, fail the waiters after a while.
        const starved = lp.starved(this.scheduler);
        if (starved.length > 0) {
          for (const id of starved) this.scheduler.finish(id, true);
          this.events.onFailure(starved, "UNAVAILABLE", `no KV pages could be claimed: ${lp.lastError ?? "none free"}`);
        }
        await new Promise((r) => setTimeout(r, 20));
        continue;
      }
      await this.runPlan(plan);
      lp?.trim(this.scheduler);
    }
  }

  private maybeCut(): void {
    const f = this.inFlight;
    if (!f || f.entry.cut || !this.stream || this.failed || this.closed) return;
    if (f.entry.subSteps >= f.entry.decodeSteps - 1) return; // its last step is running already
    const waiting = this.scheduler.stats().waiting > 0;
    if (!waiting && f.seqIds.some((id) => this.scheduler.get(id) !== undefined)) return;
    f.entry.cut = true;
    this.stream.write({ cutStepId: f.entry.stepId });
  }

  private runPlan(plan: StepPlanData): Promise<void> {
    const stream = this.stream;
    if (!stream) throw new Error("WorkerGroup.connect() was not called");
    const entry: StepLogEntry = {
      stepId: plan.stepId,
      joined: plan.newSequences.map((s) => s.seqId),
      left: plan.drop,
      preempted: plan.preempted,
      scheduled: plan.scheduled.length,
      tokens: plan.scheduled.reduce((a, s) => a + s.numTokens, 0),
      decodeSteps: plan.decodeSteps,
      subSteps: 0,
      cut: false,
      forwardMs: 0,
    };
    this.stepLog.push(entry);
    for (const id of plan.preempted) this.events.onPreempt(id);
    for (const s of plan.newSequences) this.events.onJoin(s.seqId);
    if (this.stepLog.length > STEP_LOG_SIZE) this.stepLog.splice(0, this.stepLog.length - STEP_LOG_SIZE);
    if (plan.scheduled.length === 0) {
      // Drops only: nothing to wait for.
      stream.write(this.toWire(plan));
      return Promise.resolve();
    }
    let mark = performance.now();
    if (plan.decodeSteps > 1) this.inFlight = { entry, seqIds: plan.scheduled.map((s) => s.seqId) };
    return new Promise<void>((resolve) => {
      this.pending = (r) => {
        if (r.stepId !== plan.stepId) return;
        entry.forwardMs += r.forwardMs;
        entry.subSteps++;
        const now = performance.now();
        const prefill = r.subStep === 0 && entry.tokens > entry.scheduled;
        this.events.onStep(r.subStep === 0 ? entry.scheduled : r.tokens.length, prefill, now - mark, r.forwardMs);
        if (r.subStep > 0) this.scheduler.noteDecodeStep(now - mark);
        mark = now;
        if (r.errorCode === "UNAVAILABLE") {
          // The worker reports that the group itself failed (a tensor-parallel rank died or hung: its leader ends
          // the stream next). Out of service first, so that its requests can run on in another group.
          this.fail(r.errorMessage);
          return;
        }
        if (r.errorCode) {
          const ids = plan.scheduled.map((s) => s.seqId);
          for (const id of ids) this.scheduler.finish(id, true);
          this.events.onFailure(ids, r.errorCode, r.errorMessage);
        } else {
          this.applyResult(plan, r);
        }
        if (r.last) {
          if (this.logSteps) {
            console.error(
              `[step ${entry.stepId}] seqs ${entry.scheduled} tokens ${entry.tokens} x${entry.decodeSteps} ` +
                `(ran ${entry.subSteps}${entry.cut ? ", cut" : ""}) ` +
                `joined [${entry.joined}] left [${entry.left}] preempted [${entry.preempted}] ` +
                `forward ${entry.forwardMs.toFixed(2)} ms`,
            );
          }
          this.pending = undefined;
          this.inFlight = undefined;
          resolve();
        }
      };
      this.failWaiter = () => {
        this.pending = undefined;
        this.inFlight = undefined;
        resolve();
      };
      stream.write(this.toWire(plan));
    });
  }

  private failWaiter: (() => void) | undefined;

  private applyResult(plan: StepPlanData, r: StepResult__Output): void {
    const sampled = new Map<number, { token: number; finished: boolean; eos: boolean }>();
    for (const t of r.tokens) sampled.set(t.seqId, t);
    if (r.subStep === 0) {
      for (const s of plan.scheduled) {
        const t = sampled.get(s.seqId);
        this.scheduler.onComputed(s.seqId, s.numTokens, t?.token);
      }
    } else {
      for (const t of r.tokens) this.scheduler.onComputed(t.seqId, 1, t.token);
    }
    for (const t of r.tokens) {
      if (!this.scheduler.get(t.seqId)) continue; // ended by the router meanwhile (stop string, cancel)
      if (t.finished) this.scheduler.finish(t.seqId, true);
      this.events.onToken(t.seqId, t.token, t.finished, t.eos);
    }
  }

  private toWire(plan: StepPlanData): StepPlan {
    return {
      stepId: plan.stepId,
      epoch: this.epoch,
      drop: plan.drop,
      decodeSteps: plan.decodeSteps,
      newSequences: plan.newSequences.map((n) => {
        const p = this.params.get(n.seqId);
        return {
          seqId: n.seqId,
          tokens: n.tokens,
          numGenerated: n.numGenerated,
          maxNewTokens: n.maxNewTokens,
          numComputed: n.numComputed,
          ignoreEos: p?.ignoreEos ?? false,
          requestId: p?.requestId ?? "",
          sampling: p?.sampling ?? { temperature: 0, topK: 0, topP: 1, minP: 0, seed: 0 },
        };
      }),
      scheduled: plan.scheduled.map((s) => ({ seqId: s.seqId, numTokens: s.numTokens, newPages: s.newPages })),
    };
  }

  private fail(message: string): void {
    if (this.failed || this.closed) return;
    this.failed = message;
    const ids: number[] = [];
    for (const id of this.params.keys()) {
      if (this.scheduler.get(id)) {
        this.scheduler.finish(id, true);
        ids.push(id);
      }
    }
    this.events.onFailure(ids, "UNAVAILABLE", message);
    this.failWaiter?.();
  }
}
