// One generation request on its way out: the sink its chunks go to, the incremental detokenizer and stop matcher
// that turn sampled tokens into text deltas, the counts and timings its last chunk and log line report, and what a
// retry on another group needs. The Router (server.ts) owns the requests and their groups; this holds one stream.
import type * as grpc from "@grpc/grpc-js";
import type { FinishReason } from "../common/generated/tpserve/v1/FinishReason.js";
import type { GenerateChunk } from "../common/generated/tpserve/v1/GenerateChunk.js";
import type { IncrementalDetokenizer } from "./detokenizer.js";
import type { WorkerGroup } from "./group.js";
import type { StopMatcher } from "./stop.js";

/** Where a request's chunks go: a gRPC stream, or the OpenAI-compatible HTTP layer. */
export interface ChunkSink {
  write(chunk: GenerateChunk): void;
  end(): void;
  fail(code: grpc.status, message: string): void;
}

/** A submitted request: cancel() ends it and frees its pages (client gone). */
export interface SubmittedRequest {
  requestId: string;
  cancel(): void;
}

export interface RequestStreamInit {
  requestId: string;
  seqId: number;
  group: WorkerGroup;
  sink: ChunkSink;
  detok: IncrementalDetokenizer;
  stop: StopMatcher;
  promptIds: readonly number[];
  maxNewTokens: number;
  /** Prompt text, kept only with --log-prompts. */
  promptText?: string | undefined;
}

export class RequestStream {
  readonly requestId: string;
  readonly seqId: number;
  /** The group it runs on (changed by a retry elsewhere). */
  group: WorkerGroup;
  readonly sink: ChunkSink;
  /** What a retry on another group needs: the prompt, the tokens streamed so far, the retries. */
  readonly promptIds: readonly number[];
  readonly generatedIds: number[] = [];
  readonly maxNewTokens: number;
  retries = 0;
  preemptions = 0;
  done = false;
  /** performance.now() at arrival, at the step that first ran it, at the first and the last token. */
  readonly arrival = performance.now();
  scheduledAt: number | undefined;
  firstTokenAt: number | undefined;
  lastTokenAt: number | undefined;
  private readonly detok: IncrementalDetokenizer;
  private readonly stop: StopMatcher;
  private readonly promptText: string | undefined;

  constructor(init: RequestStreamInit) {
    this.requestId = init.requestId;
    this.seqId = init.seqId;
    this.group = init.group;
    this.sink = init.sink;
    this.detok = init.detok;
    this.stop = init.stop;
    this.promptIds = init.promptIds;
    this.maxNewTokens = init.maxNewTokens;
    this.promptText = init.promptText;
  }

  get promptTokens(): number {
    return this.promptIds.length;
  }

  get completionTokens(): number {
    return this.generatedIds.length;
  }

  /**
   * A sampled token at time `now`: its chunk (the text it completes, held back while it may start a stop string) goes
   * out. Returns the finish reason when the request ends with this token (a stop string matched, EOS, or its last
   * token); the caller then finishes it (close() sends the final chunk).
   */
  token(token: number, finished: boolean, eos: boolean, now: number): FinishReason | undefined {
    this.generatedIds.push(token);
    if (this.lastTokenAt === undefined) this.firstTokenAt = now;
    this.lastTokenAt = now;
    const delta = eos ? "" : this.detok.push([token]);
    const r = this.stop.push(delta);
    const write = (text: string) => this.sink.write({ requestId: this.requestId, tokenIds: [token], text });
    if (r.stopped) {
      write(r.emit);
      return "FINISH_REASON_STOP";
    }
    if (!finished) {
      write(r.emit);
      return undefined;
    }
    const tail = this.stop.push(this.detok.flush());
    const text = r.emit + tail.emit;
    if (tail.stopped) {
      write(text);
      return "FINISH_REASON_STOP";
    }
    write(text + this.stop.flush());
    return eos ? "FINISH_REASON_EOS" : "FINISH_REASON_LENGTH";
  }

  /** The final chunk (finish reason and usage), then the end of the stream. */
  close(reason: FinishReason): void {
    this.sink.write({
      requestId: this.requestId,
      tokenIds: [],
      text: "",
      finishReason: reason,
      usage: {
        promptTokens: this.promptTokens,
        completionTokens: this.completionTokens,
        preemptions: this.preemptions,
      },
    });
    this.sink.end();
  }

  /** The fields of its one log line at its end: id, tokens, timings, status; the prompt only with --log-prompts. */
  logFields(status: string, error?: string): Record<string, unknown> {
    const ms = (t: number | undefined) => (t === undefined ? null : Math.round((t - this.arrival) * 100) / 100);
    return {
      request_id: this.requestId,
      status,
      ...(error ? { error } : {}),
      prompt_tokens: this.promptTokens,
      completion_tokens: this.completionTokens,
      preemptions: this.preemptions,
      queue_ms: ms(this.scheduledAt),
      ttft_ms: ms(this.firstTokenAt),
      e2e_ms: ms(performance.now()),
      ...(this.promptText !== undefined ? { prompt: this.promptText } : {}),
    };
  }
}
