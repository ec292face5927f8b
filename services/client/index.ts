// The TypeScript client of the public gRPC API: `import { Client } from "tpserve"`.
//
//   const client = new Client({ address: "127.0.0.1:50051" });
//   for await (const chunk of client.generate({ prompt: "Once upon a time", maxTokens: 32 })) process.stdout.write(chunk.text);
//
// generate() is an async iterator of chunks; an AbortSignal cancels the stream on the server too; deadlines map onto
// gRPC deadlines. Retries happen only where they cannot duplicate or lose output: a Generate call is retried on
// UNAVAILABLE or RESOURCE_EXHAUSTED only before its first chunk arrived; unary calls are retried on UNAVAILABLE.
import * as grpc from "@grpc/grpc-js";
import type { GenerateChunk__Output } from "../common/generated/tpserve/v1/GenerateChunk.js";
import type { GenerateRequest } from "../common/generated/tpserve/v1/GenerateRequest.js";
import type { GenerationClient } from "../common/generated/tpserve/v1/Generation.js";
import type { ModelInfoResponse__Output } from "../common/generated/tpserve/v1/ModelInfoResponse.js";
import type { TokenizeResponse__Output } from "../common/generated/tpserve/v1/TokenizeResponse.js";
import { protos } from "../common/proto.js";

export interface ClientOptions {
  /** host:port of a router (default 127.0.0.1:50051). */
  address?: string;
  /** Channel credentials (default: insecure, for loopback and private networks). */
  credentials?: grpc.ChannelCredentials;
  /** Sent as `authorization: Bearer <key>` metadata. */
  apiKey?: string;
  /** Deadline of every call unless the call gives its own (ms; default none). */
  deadlineMs?: number;
  /** Extra attempts for retryable failures (default 2), with exponential backoff from `retryDelayMs` (default 50). */
  retries?: number;
  retryDelayMs?: number;
}

export interface GenerateInput {
  /** Prompt text (BOS added as the tokenizer says) or token ids; exactly one. */
  prompt?: string;
  tokenIds?: number[];
  maxTokens?: number;
  temperature?: number;
  topK?: number;
  topP?: number;
  minP?: number;
  seed?: number;
  stop?: string[];
  ignoreEos?: boolean;
  requestId?: string;
}

export interface CallOptions {
  signal?: AbortSignal;
  deadlineMs?: number;
}

export interface Chunk {
  requestId: string;
  tokenIds: number[];
  text: string;
  /** "length" | "stop" | "eos" | "cancelled" on the last chunk, undefined before. */
  finishReason?: string;
  usage?: { promptTokens: number; completionTokens: number; preemptions: number };
}

export interface Completion {
  ids: number[];
  text: string;
  finishReason: string;
  usage: { promptTokens: number; completionTokens: number; preemptions: number };
}

/** Thrown when a call is cancelled through its AbortSignal. */
export class AbortError extends Error {
  readonly code = "ABORTED";
  constructor() {
    super("the call was aborted by its AbortSignal");
    this.name = "AbortError";
  }
}

const RETRY_GENERATE = new Set([grpc.status.UNAVAILABLE, grpc.status.RESOURCE_EXHAUSTED]);

function toRequest(input: GenerateInput): GenerateRequest {
  if ((input.prompt === undefined) === (input.tokenIds === undefined)) {
    throw new TypeError("generate(): give exactly one of `prompt` and `tokenIds`");
  }
  return {
    requestId: input.requestId ?? "",
    ...(input.prompt !== undefined ? { text: input.prompt } : { tokenIds: { ids: input.tokenIds! } }),
    ...(input.maxTokens !== undefined ? { maxTokens: input.maxTokens } : {}),
    sampling: {
      temperature: input.temperature ?? 0,
      topK: input.topK ?? 0,
      ...(input.topP !== undefined ? { topP: input.topP } : {}),
      minP: input.minP ?? 0,
      ...(input.seed !== undefined ? { seed: input.seed } : {}),
    },
    stop: input.stop ?? [],
    ignoreEos: input.ignoreEos ?? false,
  };
}

function toChunk(c: GenerateChunk__Output): Chunk {
  const out: Chunk = { requestId: c.requestId, tokenIds: c.tokenIds, text: c.text };
  if (c.finishReason !== "FINISH_REASON_UNSPECIFIED") {
    out.finishReason = c.finishReason.replace("FINISH_REASON_", "").toLowerCase();
  }
  if (c.usage) out.usage = c.usage;
  return out;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class Client {
  private readonly stub: GenerationClient;
  private readonly opts: Required<Pick<ClientOptions, "retries" | "retryDelayMs">> & ClientOptions;

  constructor(options: ClientOptions = {}) {
    this.opts = { retries: 2, retryDelayMs: 50, ...options };
    const Generation = protos().generation.tpserve.v1.Generation;
    this.stub = new Generation(
      options.address ?? "127.0.0.1:50051",
      options.credentials ?? grpc.credentials.createInsecure(),
    );
  }

  /** Streams the chunks of one generation. Breaking out of the loop cancels the request on the server. */
  async *generate(input: GenerateInput, options: CallOptions = {}): AsyncGenerator<Chunk, void, undefined> {
    const req = toRequest(input);
    for (let attempt = 0; ; attempt++) {
      if (options.signal?.aborted) throw new AbortError();
      const call = this.stub.Generate(req, this.metadata(), this.callOptions(options));
      const onAbort = () => call.cancel();
      options.signal?.addEventListener("abort", onAbort, { once: true });
      let received = 0;
      try {
        for await (const c of call as AsyncIterable<GenerateChunk__Output>) {
          received++;
          yield toChunk(c);
        }
        return;
      } catch (err) {
        if (options.signal?.aborted) throw new AbortError();
        const e = err as grpc.ServiceError;
        if (received > 0 || attempt >= this.opts.retries || !RETRY_GENERATE.has(e.code)) throw err;
        await sleep(this.opts.retryDelayMs * 2 ** attempt);
      } finally {
        options.signal?.removeEventListener("abort", onAbort);
        call.cancel(); // no-op after the end; cancels when the consumer stopped early
      }
    }
  }

  /** Runs a generation to the end and returns ids, text, finish reason and usage. */
  async complete(input: GenerateInput, options: CallOptions = {}): Promise<Completion> {
    const out: Completion = {
      ids: [],
      text: "",
      finishReason: "",
      usage: { promptTokens: 0, completionTokens: 0, preemptions: 0 },
    };
    for await (const c of this.generate(input, options)) {
      out.ids.push(...c.tokenIds);
      out.text += c.text;
      if (c.finishReason) out.finishReason = c.finishReason;
      if (c.usage) out.usage = c.usage;
    }
    return out;
  }

  async tokenize(text: string, options: CallOptions & { addSpecialTokens?: boolean } = {}): Promise<number[]> {
    const req = {
      text,
      ...(options.addSpecialTokens !== undefined ? { addSpecialTokens: options.addSpecialTokens } : {}),
    };
    const r = await this.unary<TokenizeResponse__Output>((md, co, cb) => this.stub.Tokenize(req, md, co, cb), options);
    return r.ids;
  }

  modelInfo(options: CallOptions = {}): Promise<ModelInfoResponse__Output> {
    return this.unary<ModelInfoResponse__Output>((md, co, cb) => this.stub.ModelInfo({}, md, co, cb), options);
  }

  close(): void {
    this.stub.close();
  }

  private metadata(): grpc.Metadata {
    const md = new grpc.Metadata();
    if (this.opts.apiKey) md.set("authorization", `Bearer ${this.opts.apiKey}`);
    return md;
  }

  private callOptions(options: CallOptions): grpc.CallOptions {
    const ms = options.deadlineMs ?? this.opts.deadlineMs;
    return ms !== undefined ? { deadline: Date.now() + ms } : {};
  }

  private async unary<T>(
    invoke: (md: grpc.Metadata, co: grpc.CallOptions, cb: (err: grpc.ServiceError | null, res?: T) => void) => unknown,
    options: CallOptions,
  ): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      if (options.signal?.aborted) throw new AbortError();
      try {
        return await new Promise<T>((resolve, reject) => {
          const call = invoke(this.metadata(), this.callOptions(options), (err, res) =>
            err || res === undefined ? reject(err ?? new Error("empty response")) : resolve(res),
          ) as grpc.ClientUnaryCall;
          options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
        });
      } catch (err) {
        if (options.signal?.aborted) throw new AbortError();
        const e = err as grpc.ServiceError;
        if (attempt >= this.opts.retries || e.code !== grpc.status.UNAVAILABLE) throw err;
        await sleep(this.opts.retryDelayMs * 2 ** attempt);
      }
    }
  }
}
