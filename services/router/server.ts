// The public gRPC server: tpserve.v1.Generation and grpc.health.v1. Requests are validated, tokenized and handed
// to a worker group's scheduler; sampled tokens come back through the group and stream out as text deltas.
import * as grpc from "@grpc/grpc-js";
import { type Logger, pino } from "pino";
import { invalidArgument, RequestError } from "../common/errors.js";
import type { FinishReason } from "../common/generated/tpserve/v1/FinishReason.js";
import type { GenerateChunk } from "../common/generated/tpserve/v1/GenerateChunk.js";
import type { GenerateRequest__Output } from "../common/generated/tpserve/v1/GenerateRequest.js";
import type { GenerationHandlers } from "../common/generated/tpserve/v1/Generation.js";
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import type { TpTokenizer } from "../common/model/tokenizer.js";
import { protos } from "../common/proto.js";
import { AUTH_HINT } from "./auth.js";
import type { RouterConfig } from "./config.js";
import { IncrementalDetokenizer } from "./detokenizer.js";
import { type GroupEvents, type SequenceParams, WorkerGroup } from "./group.js";
import { createGroupScheduler, pickGroup } from "./group-setup.js";
import { GroupWait } from "./group-wait.js";
import type { LedgerPages } from "./leased-pages.js";
import { RouterMetrics } from "./metrics.js";
import { rootHash } from "./prefix-cache.js";
import { groupKey, type KvEvent, type KvEventKind, PrefixIndex } from "./prefix-index.js";
import { type ChunkSink, RequestStream, type SubmittedRequest } from "./request-stream.js";
import { StopMatcher } from "./stop.js";
import { findInvalidUtf8, INVALID_UTF8, type Limits, validateRequest } from "./validate.js";

export interface RouterCounters {
  requestsFinished: number;
  tokensGenerated: number;
  promptTokens: number;
  /** Prompt tokens looked up in the prefix cache, and of those found cached. */
  prefixQueryTokens: number;
  prefixHitTokens: number;
  /** Requests moved to another group after theirs went out of service (retryElsewhere). */
  requestsRetried: number;
}

export class Router {
  readonly groups: WorkerGroup[] = [];
  readonly counters: RouterCounters = {
    requestsFinished: 0,
    tokensGenerated: 0,
    promptTokens: 0,
    prefixQueryTokens: 0,
    prefixHitTokens: 0,
    requestsRetried: 0,
  };
  readonly metrics: RouterMetrics;
  /** Where prefixes are cached, cluster-wide (fed by KV events); prefix-aware routing reads it. */
  readonly prefixIndex = new PrefixIndex();
  /** Where this router's KV events go besides its own index (the control bus, in a cluster). */
  kvEventSink: ((kind: KvEventKind, e: Omit<KvEvent, "router">) => void) | undefined;
  /** Groups chosen because they held the longest prefix (vs. by load alone), for tests and logs. */
  readonly routing = { byPrefix: 0, byLoad: 0 };
  private prefixRoot: Buffer | undefined;
  private readonly active = new Map<number, RequestStream>();
  private readonly params = new Map<number, SequenceParams>();
  private readonly limits: Limits;
  private nextSeqId = 1;
  private draining = false;
  /** Requests waiting for a group while none is in service (--group-wait-ms). */
  private readonly groupWait: GroupWait<RequestStream>;

  constructor(
    private readonly cfg: RouterConfig,
    private readonly tokenizer: TpTokenizer,
    private readonly info: DescribeResponse__Output,
    clients: WorkerClient[],
    descs: DescribeResponse__Output[],
    private readonly log: Logger = pino({ level: "silent" }),
  ) {
    this.metrics = new RouterMetrics(() => this.stats());
    this.groupWait = new GroupWait(
      cfg.groupWaitMs,
      cfg.maxQueue,
      {
        pickGroup: () => this.pickGroup(),
        submit: (req, sink) => this.submit(req, sink),
        move: (a, why) => this.retryElsewhere(a, why),
        fail: (a, message) => this.failRequest(a, "UNAVAILABLE", message),
        refuse: (req, sink, e) => this.refuse(req, sink, e),
      },
      log,
    );
    clients.forEach((client, i) => {
      this.addGroup(cfg.workers[i] ?? `worker-${i}`, client, descs[i]!, descs[i]!.epoch);
    });
    // The largest context one sequence can hold in the smallest pool (groups found later are assumed alike).
    const capacity = descs.length > 0 ? Math.min(...descs.map((d) => (d.numPages - 1) * d.blockSize)) : Infinity;
    this.limits = {
      vocabSize: info.vocabSize,
      maxContext: Math.min(info.maxContext, capacity),
      maxStopStrings: cfg.maxStopStrings,
      maxStopLength: 256,
    };
  }

  /**
   * Puts a worker group into service: a scheduler over its pool (or over the pages this router leases from the
   * cluster ledger) and the Steps stream to its leader. Plans carry `epoch`; the worker rejects any other.
   */
  addGroup(name: string, client: WorkerClient, d: DescribeResponse__Output, epoch: number, pages?: LedgerPages) {
    if (this.cfg.prefixCache) this.prefixRoot ??= rootHash(d.model, d.blockSize);
    const scheduler = createGroupScheduler(this.cfg, d, pages, {
      onKvEvents: (kind, hashes) => {
        this.prefixIndex.apply(kind, { group: name, epoch, hashes, router: "" });
        this.kvEventSink?.(kind, { group: name, epoch, hashes });
      },
      onPrefixLookup: (queried, hit) => {
        this.counters.prefixQueryTokens += queried;
        this.counters.prefixHitTokens += hit;
        this.metrics.prefixQueries.inc(queried);
        this.metrics.prefixHits.inc(hit);
      },
    });
    const group = new WorkerGroup(
      name,
      client,
      scheduler,
      this.params,
      this.groupEvents(),
      epoch,
      this.cfg.logSteps,
      pages,
    );
    group.connect();
    this.groups.push(group);
    this.groupWait.resume(group);
    return group;
  }

  /** Takes a group out of service (it left the cluster, restarted, or this router lost its lease). */
  removeGroup(group: WorkerGroup, message: string): void {
    const i = this.groups.indexOf(group);
    if (i >= 0) this.groups.splice(i, 1);
    group.retire(message);
    this.prefixIndex.dropGroup(groupKey(group.name, group.epoch));
  }

  private groupEvents(): GroupEvents {
    return {
      onToken: (seqId, token, finished, eos) => this.onToken(seqId, token, finished, eos),
      onFailure: (ids, code, message) => this.onFailure(ids, code, message),
      onPreempt: (id) => {
        const a = this.active.get(id);
        if (a) a.preemptions++;
        this.metrics.preemptions.inc();
      },
      onJoin: (id) => {
        const a = this.active.get(id);
        if (a && a.scheduledAt === undefined) {
          a.scheduledAt = performance.now();
          this.metrics.queue.observe((a.scheduledAt - a.arrival) / 1000);
        }
      },
      onStep: (batch, prefill, wallMs, forwardMs) => {
        const phase = prefill ? "prefill" : "decode";
        this.metrics.batchSize.observe({ phase }, batch);
        this.metrics.stepDuration.observe({ phase }, wallMs / 1000);
        this.metrics.forward.observe({ phase }, forwardMs / 1000);
      },
    };
  }

  get maxContext(): number {
    return this.limits.maxContext;
  }

  /** Whether call metadata carries an accepted API key (always, when no keys are configured). */
  authorized(md: grpc.Metadata): boolean {
    const keys = this.cfg.apiKeys;
    return keys === null || keys.allows(md.get("authorization")[0]?.toString());
  }

  handlers(): GenerationHandlers {
    const denied = { code: grpc.status.UNAUTHENTICATED, details: `missing or unknown API key: ${AUTH_HINT}` };
    const h = this.rawHandlers();
    return {
      Generate: (call) => (this.authorized(call.metadata) ? h.Generate(call) : call.emit("error", denied)),
      Tokenize: (call, cb) => (this.authorized(call.metadata) ? h.Tokenize(call, cb) : cb(denied)),
      ModelInfo: (call, cb) => (this.authorized(call.metadata) ? h.ModelInfo(call, cb) : cb(denied)),
      Stats: (call, cb) => (this.authorized(call.metadata) ? h.Stats(call, cb) : cb(denied)),
      Embed: (call, cb) => (this.authorized(call.metadata) ? h.Embed(call, cb) : cb(denied)),
    };
  }

  private rawHandlers(): GenerationHandlers {
    return {
      Generate: (call) => this.generate(call),
      Tokenize: (call, cb) => {
        const ids = this.tokenizer.encode(call.request.text, {
          addSpecialTokens: call.request._addSpecialTokens ? call.request.addSpecialTokens : true,
        });
        cb(null, { ids, tokens: ids.map((id) => this.tokenizer.idToToken(id) ?? "") });
      },
      ModelInfo: (_call, cb) =>
        cb(null, {
          model: this.info.model,
          vocabSize: this.info.vocabSize,
          maxContext: this.limits.maxContext,
          bosTokenId: this.tokenizer.bosTokenId ?? 0,
          eosTokenId: this.info.eosTokenId,
          quantization: this.info.quantization,
          backend: this.info.backend,
          blockSize: this.info.blockSize,
          numPages: this.info.numPages,
          maxConcurrentRequests: this.cfg.maxRunning * this.groups.length,
          maxQueue: this.cfg.maxQueue,
          chatTemplate: this.tokenizer.chatTemplate,
        }),
      Stats: (_call, cb) => cb(null, this.stats()),
      Embed: (call, cb) => {
        const r = call.request;
        const input = r.input === "text" ? { text: r.text ?? "" } : { ids: r.tokenIds?.ids ?? [] };
        this.embed(input, r.requestId).then(
          (out) => cb(null, out),
          (err: unknown) => {
            const e = err as { code?: unknown; details?: string; message?: string };
            cb({
              code: typeof e.code === "number" ? e.code : grpc.status.INTERNAL,
              details: e.details ?? e.message ?? String(err),
            });
          },
        );
      },
    };
  }

  stats() {
    let running = 0;
    let waiting = 0;
    let pagesTotal = 0;
    let pagesFree = 0;
    let steps = 0;
    let preemptions = 0;
    for (const g of this.groups) {
      const s = g.scheduler.stats();
      running += s.running;
      waiting += s.waiting;
      pagesTotal += s.pagesTotal;
      pagesFree += s.pagesFree;
      steps += s.steps;
      preemptions += s.preemptions;
    }
    return {
      running,
      waiting,
      pagesTotal,
      pagesFree,
      steps,
      preemptions,
      requestsFinished: this.counters.requestsFinished,
      tokensGenerated: this.counters.tokensGenerated,
      promptTokens: this.counters.promptTokens,
    };
  }

  get healthy(): boolean {
    return !this.draining && this.groups.some((g) => g.healthy && !g.draining);
  }

  /** Stops taking requests; in-flight ones go on. */
  drain(): void {
    this.draining = true;
    this.groupWait.drop("the router is draining; retry elsewhere");
  }

  get inFlight(): number {
    return this.active.size;
  }

  close(): void {
    this.groupWait.drop("the router is closing");
    for (const a of [...this.active.values()]) this.finish(a, "FINISH_REASON_CANCELLED");
    for (const g of this.groups) g.close();
  }

  private generate(call: grpc.ServerWritableStream<GenerateRequest__Output, GenerateChunk>): void {
    const handle = this.submit(call.request, {
      write: (c) => call.write(c),
      end: () => call.end(),
      fail: (code, message) => call.emit("error", { code, details: message }),
    });
    if (handle) call.on("cancelled", () => handle.cancel());
  }

  /**
   * Validates, tokenizes and queues one request; its chunks go to `sink`. Returns null when the request was refused
   * (the sink has been told why, with a gRPC status naming the limit).
   */
  submit(req: GenerateRequest__Output, sink: ChunkSink): SubmittedRequest | null {
    let a: RequestStream;
    try {
      if (this.draining) throw new RequestError(grpc.status.UNAVAILABLE, "the router is draining; retry elsewhere");
      const bad = (req as unknown as Record<symbol, string | undefined>)[INVALID_UTF8];
      if (bad) throw invalidArgument(`${bad} is not valid UTF-8`);
      let promptIds: number[] = [];
      if (req.prompt === "text") {
        const addSpecial = req._addSpecialTokens ? req.addSpecialTokens! : true;
        if (req.text!.length > 0) promptIds = this.tokenizer.encode(req.text!, { addSpecialTokens: addSpecial });
      } else if (req.prompt === "tokenIds") {
        promptIds = req.tokenIds?.ids ?? [];
      }
      const norm = validateRequest(req, promptIds, this.limits);
      const group = this.pickGroup(promptIds);
      if (!group) {
        if (this.groupWait.enabled)
          return this.groupWait.holdNew(req, sink, req.requestId || `req-${this.nextSeqId++}`);
        throw new RequestError(grpc.status.UNAVAILABLE, "no healthy worker group (all failed or draining)");
      }
      const waiting = this.groups.reduce((n, g) => n + g.scheduler.stats().waiting, 0);
      if (waiting >= this.cfg.maxQueue) {
        throw new RequestError(
          grpc.status.RESOURCE_EXHAUSTED,
          `the queue is full (max_queue ${this.cfg.maxQueue} waiting requests); retry later`,
        );
      }
      const seqId = this.nextSeqId++;
      a = new RequestStream({
        requestId: req.requestId || `req-${seqId}`,
        seqId,
        group,
        sink,
        detok: new IncrementalDetokenizer((ids) => this.tokenizer.decode(ids, { skipSpecialTokens: true }), promptIds),
        stop: new StopMatcher(norm.stop),
        promptIds,
        maxNewTokens: norm.maxNewTokens,
        promptText: this.cfg.logPrompts && req.prompt === "text" ? req.text : undefined,
      });
      this.params.set(seqId, { sampling: norm.sampling, ignoreEos: norm.ignoreEos, requestId: a.requestId });
      this.active.set(seqId, a);
      this.counters.promptTokens += promptIds.length;
      this.metrics.promptTokens.inc(promptIds.length);
      group.scheduler.add({ id: seqId, promptTokens: promptIds, maxNewTokens: norm.maxNewTokens });
    } catch (err) {
      const e = err instanceof RequestError ? err : new RequestError(grpc.status.INTERNAL, (err as Error).message);
      this.refuse(req, sink, e);
      return null;
    }
    a.group.kick();
    return {
      requestId: a.requestId,
      cancel: () => {
        if (a.done) return;
        a.done = true;
        this.metrics.requests.inc({ finished_reason: "cancelled" });
        this.logRequest(a, "cancelled by the client");
        this.release(a);
        a.group.scheduler.finish(a.seqId);
        a.group.kick();
      },
    };
  }

  private refuse(req: GenerateRequest__Output, sink: ChunkSink, e: RequestError): void {
    const status = grpc.status[e.grpcCode] ?? "UNKNOWN";
    this.metrics.requests.inc({ finished_reason: status });
    this.log.info({ request_id: req.requestId || null, status, error: e.message }, "request");
    sink.fail(e.grpcCode, e.message);
  }

  /**
   * The embedding of a text (tokenized with BOS) or of token ids: the mean-pooled final hidden state, L2-normalized.
   * Rejects with a gRPC-style {code, details} naming the limit on bad input.
   */
  async embed(
    input: { text: string } | { ids: number[] },
    requestId = "",
  ): Promise<{ values: number[]; promptTokens: number }> {
    const ids =
      "text" in input ? (input.text ? this.tokenizer.encode(input.text, { addSpecialTokens: true }) : []) : input.ids;
    const bad = (details: string) => reject(grpc.status.INVALID_ARGUMENT, details);
    if (ids.length === 0) throw bad("embedding input is empty: give text or at least one token id");
    for (const [i, t] of ids.entries()) {
      if (!Number.isInteger(t) || t < 0 || t >= this.limits.vocabSize) {
        throw bad(`token id ${t} at position ${i} is outside the vocabulary 0..${this.limits.vocabSize - 1}`);
      }
    }
    if (ids.length > this.info.maxContext) {
      throw bad(`embedding input has ${ids.length} tokens; the context limit is ${this.info.maxContext}`);
    }
    // With no group in service, wait for one (--group-wait-ms) unless draining.
    const wait = this.groupWait.enabled && !this.draining;
    let group = this.pickGroup();
    if (!group && wait) {
      try {
        group = await this.groupWait.group();
      } catch (e) {
        throw e instanceof RequestError ? reject(e.grpcCode, e.message) : e;
      }
    }
    if (!group) throw reject(grpc.status.UNAVAILABLE, wait ? this.groupWait.expired : "no healthy worker group");
    const values = await group.embed(ids, requestId);
    this.metrics.promptTokens.inc(ids.length);
    return { values, promptTokens: ids.length };
  }

  /** The chat template of the served model, rendered for `messages` (OpenAI chat). */
  renderChat(messages: { role: string; content: string }[]): string {
    if (!this.tokenizer.hasChatTemplate) {
      throw invalidArgument("this model has no chat template (tokenizer_config.json chat_template); use completions");
    }
    return this.tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  }

  get vocabSize(): number {
    return this.limits.vocabSize;
  }

  get modelName(): string {
    return this.info.model;
  }

  /** Tokens per KV page of the groups this router serves with. */
  get blockSize(): number {
    return this.info.blockSize;
  }

  /** The group for a prompt (group-setup.ts: prefix-aware within the load bound, else least loaded). */
  private pickGroup(promptIds?: readonly number[]): WorkerGroup | undefined {
    const root = this.cfg.prefixRouting ? this.prefixRoot : undefined;
    const pick = pickGroup(this.groups, promptIds, root, this.prefixIndex, this.cfg.prefixLoadFactor);
    if (pick && promptIds) this.routing[pick.byPrefix ? "byPrefix" : "byLoad"]++;
    return pick?.group;
  }

  private onToken(seqId: number, token: number, finished: boolean, eos: boolean): void {
    const a = this.active.get(seqId);
    if (!a || a.done) return;
    this.counters.tokensGenerated++;
    const now = performance.now();
    if (a.lastTokenAt === undefined) this.metrics.ttft.observe((now - a.arrival) / 1000);
    else this.metrics.itl.observe((now - a.lastTokenAt) / 1000);
    this.metrics.generationTokens.inc();
    const end = a.token(token, finished, eos, now);
    if (end) this.finish(a, end); // ends the sequence at the scheduler (and kicks the group)
  }

  private finish(a: RequestStream, reason: FinishReason): void {
    if (a.done) return;
    a.done = true;
    this.metrics.e2e.observe((performance.now() - a.arrival) / 1000);
    const status = String(reason).replace("FINISH_REASON_", "").toLowerCase();
    this.metrics.requests.inc({ finished_reason: status });
    this.logRequest(a, status);
    this.release(a);
    const s = a.group.scheduler.get(a.seqId);
    if (s) {
      a.group.scheduler.finish(a.seqId);
      a.group.kick(); // ends a multi-step plan early when this was its last sequence
    }
    a.close(reason);
  }

  /** One JSON line per request at its end: id, tokens, timings, status; the prompt only with --log-prompts. */
  private logRequest(a: RequestStream, status: string, error?: string): void {
    this.log.info(a.logFields(status, error), "request");
  }

  private release(a: RequestStream): void {
    this.active.delete(a.seqId);
    this.params.delete(a.seqId);
    this.counters.requestsFinished++;
  }

  private onFailure(ids: number[], code: string, message: string): void {
    for (const id of ids) {
      const a = this.active.get(id);
      if (!a || a.done) continue;
      if (code === "UNAVAILABLE" && this.retryElsewhere(a, message)) continue;
      if (code === "UNAVAILABLE" && !this.draining && this.groupWait.holdMoved(a, message)) continue;
      this.failRequest(a, code, message);
    }
  }

  private failRequest(a: RequestStream, code: string, message: string): void {
    a.done = true;
    this.release(a);
    this.metrics.requests.inc({ finished_reason: code });
    this.logRequest(a, code, message);
    // A stale epoch means the group restarted under the plan: the request may be retried elsewhere.
    const retryable = code === "UNAVAILABLE" || code === "WORKER_STALE_EPOCH";
    const grpcCode = retryable ? grpc.status.UNAVAILABLE : grpc.status.INTERNAL;
    a.sink.fail(grpcCode, `${code}: ${message}`);
  }

  /**
   * A request whose group went out of service (a dead or hung worker or TP rank) runs on in another healthy group, and the
   * client sees one stream. A request that had already streamed tokens continues from them: the new group computes
   * the prompt and those tokens again, as after a preemption, and samples the next token at the same position (so
   * greedy requests give the tokens they would have given). At most once, and not when the group is only short of
   * pages or still in service (a step error other than UNAVAILABLE, which takes the group out of service first:
   * WorkerGroup).
   */
  private retryElsewhere(a: RequestStream, why: string): boolean {
    if (a.retries > 0 || a.group.healthy || this.draining) return false;
    const group = this.pickGroup(a.promptIds);
    if (!group || group === a.group) return false;
    const from = a.group.name;
    a.group = group;
    a.retries++;
    a.scheduledAt = undefined;
    this.counters.requestsRetried++;
    this.metrics.retries.inc();
    this.log.info(
      { request_id: a.requestId, from, to: group.name, generated: a.generatedIds.length, why },
      "request moved to another worker group",
    );
    group.scheduler.add({
      id: a.seqId,
      promptTokens: a.promptIds,
      generatedTokens: a.generatedIds,
      maxNewTokens: a.maxNewTokens,
    });
    group.kick();
    return true;
  }
}

/** A gRPC-style rejection of embed(): {code, details}. */
function reject(code: grpc.status, details: string): Error {
  return Object.assign(new Error(details), { code, details });
}

/** The Generate method definition with a request deserializer that also flags invalid UTF-8 in text fields. */
export function generationServiceWithUtf8Check(): grpc.ServiceDefinition {
  const base = protos().generation.tpserve.v1.Generation.service as unknown as grpc.ServiceDefinition;
  const gen = base["Generate"]!;
  const deserialize = gen.requestDeserialize;
  return {
    ...base,
    Generate: {
      ...gen,
      requestDeserialize: (buf: Buffer) => {
        const obj = deserialize(buf) as Record<symbol, unknown>;
        const bad = findInvalidUtf8(buf);
        if (bad) obj[INVALID_UTF8] = bad;
        return obj;
      },
    },
  };
}
