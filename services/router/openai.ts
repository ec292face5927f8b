// OpenAI-compatible HTTP API on the router: /v1/models, /v1/completions and /v1/chat/completions (both with
// `stream: true` as server-sent events ending in `data: [DONE]`), OpenAI's error shape and status codes. Requests
// go through the same path as gRPC Generate (Router.submit), so greedy outputs are the same.
import { randomUUID } from "node:crypto";
import type { IncomingMessage, ServerResponse } from "node:http";
import * as grpc from "@grpc/grpc-js";
import type { GenerateChunk } from "../common/generated/tpserve/v1/GenerateChunk.js";
import type { GenerateRequest__Output } from "../common/generated/tpserve/v1/GenerateRequest.js";
import type { Router } from "./server.js";

const MAX_BODY = 4 << 20;

/** An OpenAI-shaped error: HTTP status plus {error: {message, type, param, code}}. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly type = "invalid_request_error",
    readonly param: string | null = null,
  ) {
    super(message);
  }
}

const STATUS_OF: Partial<Record<grpc.status, number>> = {
  [grpc.status.INVALID_ARGUMENT]: 400,
  [grpc.status.RESOURCE_EXHAUSTED]: 429,
  [grpc.status.UNAVAILABLE]: 503,
  [grpc.status.UNAUTHENTICATED]: 401,
  [grpc.status.DEADLINE_EXCEEDED]: 504,
};

function sendError(res: ServerResponse, e: HttpError): void {
  if (res.headersSent) {
    res.end();
    return;
  }
  res.writeHead(e.status, { "content-type": "application/json" });
  res.end(JSON.stringify({ error: { message: e.message, type: e.type, param: e.param, code: null } }));
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const part of req) {
    size += (part as Buffer).length;
    if (size > MAX_BODY) throw new HttpError(413, `request body is larger than ${MAX_BODY} bytes`);
    parts.push(part as Buffer);
  }
  let body: unknown;
  try {
    body = JSON.parse(Buffer.concat(parts).toString("utf8"));
  } catch {
    throw new HttpError(400, "request body is not valid JSON");
  }
  if (typeof body !== "object" || body === null || Array.isArray(body))
    throw new HttpError(400, "body must be a JSON object");
  return body as Record<string, unknown>;
}

function num(body: Record<string, unknown>, key: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) throw new HttpError(400, `${key} must be a number`, undefined, key);
  return v;
}

function stops(body: Record<string, unknown>): string[] {
  const v = body["stop"];
  if (v === undefined || v === null) return [];
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((x) => typeof x === "string")) return v as string[];
  throw new HttpError(400, "stop must be a string or an array of strings", undefined, "stop");
}

/** OpenAI parameters -> the public GenerateRequest (defaults as OpenAI's: temperature 1, max_tokens 16 for completions). */
function toRequest(
  body: Record<string, unknown>,
  prompt: { text: string } | { ids: number[] },
  maxTokensDefault?: number,
) {
  const n = num(body, "n");
  if (n !== undefined && n !== 1) throw new HttpError(400, "n must be 1 (one choice per request)", undefined, "n");
  const maxTokens = num(body, "max_tokens") ?? num(body, "max_completion_tokens") ?? maxTokensDefault;
  const topP = num(body, "top_p");
  const seed = num(body, "seed");
  const req: GenerateRequest__Output = {
    requestId: "",
    prompt: "text" in prompt ? "text" : "tokenIds",
    ...("text" in prompt ? { text: prompt.text } : { tokenIds: { ids: prompt.ids } }),
    sampling: {
      temperature: num(body, "temperature") ?? 1,
      topK: num(body, "top_k") ?? 0,
      topP: topP ?? 0,
      minP: num(body, "min_p") ?? 0,
      seed: seed ?? 0,
      ...(topP !== undefined ? { _topP: "topP" as const } : {}),
      ...(seed !== undefined ? { _seed: "seed" as const } : {}),
    },
    stop: stops(body),
    ignoreEos: body["ignore_eos"] === true,
    ...(maxTokens !== undefined ? { maxTokens, _maxTokens: "maxTokens" as const } : {}),
  };
  return req;
}

const finishOf = (r: unknown): string | null => {
  const s = String(r ?? "");
  if (s === "FINISH_REASON_LENGTH") return "length";
  if (s === "FINISH_REASON_STOP" || s === "FINISH_REASON_EOS") return "stop";
  if (s === "FINISH_REASON_CANCELLED") return "abort";
  return null;
};

export class OpenAiApi {
  constructor(private readonly router: Router) {}

  /** Handles /v1/* requests; returns false for other paths. */
  async handle(req: IncomingMessage, res: ServerResponse): Promise<boolean> {
    const path = (req.url ?? "").split("?")[0] ?? "";
    if (!path.startsWith("/v1/")) return false;
    try {
      if (path === "/v1/models") {
        if (req.method !== "GET") throw new HttpError(405, "use GET /v1/models");
        res.writeHead(200, { "content-type": "application/json" });
        res.end(
          JSON.stringify({
            object: "list",
            data: [
              {
                id: this.router.modelName,
                object: "model",
                created: 0,
                owned_by: "tpserve",
                max_model_len: this.router.maxContext,
              },
            ],
          }),
        );
        return true;
      }
      if (path !== "/v1/completions" && path !== "/v1/chat/completions" && path !== "/v1/embeddings") {
        throw new HttpError(
          404,
          `unknown path ${path}: tpserve serves /v1/models, /v1/completions, /v1/chat/completions, /v1/embeddings`,
        );
      }
      if (req.method !== "POST") throw new HttpError(405, `use POST ${path}`);
      const body = await readJson(req);
      if (path === "/v1/completions") this.completions(body, req, res);
      else if (path === "/v1/chat/completions") this.chat(body, req, res);
      else await this.embeddings(body, res);
    } catch (err) {
      sendError(res, err instanceof HttpError ? err : new HttpError(500, (err as Error).message, "server_error"));
    }
    return true;
  }

  /** POST /v1/embeddings: input is a string, an array of strings, token ids, or an array of token-id arrays. */
  private async embeddings(body: Record<string, unknown>, res: ServerResponse): Promise<void> {
    const model = this.checkModel(body);
    const fmt = body["encoding_format"];
    if (fmt !== undefined && fmt !== "float") {
      throw new HttpError(400, 'encoding_format must be "float"', undefined, "encoding_format");
    }
    const input = body["input"];
    const isIds = (v: unknown) => Array.isArray(v) && v.length > 0 && v.every((x) => Number.isInteger(x));
    let items: ({ text: string } | { ids: number[] })[];
    if (typeof input === "string") items = [{ text: input }];
    else if (isIds(input)) items = [{ ids: input as number[] }];
    else if (Array.isArray(input) && input.length > 0 && input.every((x) => typeof x === "string")) {
      items = (input as string[]).map((text) => ({ text }));
    } else if (Array.isArray(input) && input.length > 0 && input.every(isIds)) {
      items = (input as number[][]).map((ids) => ({ ids }));
    } else {
      throw new HttpError(400, "input must be a string, an array of strings, or token ids", undefined, "input");
    }
    const data: { object: "embedding"; index: number; embedding: number[] }[] = [];
    let tokens = 0;
    for (const [index, item] of items.entries()) {
      try {
        const r = await this.router.embed(item);
        data.push({ object: "embedding", index, embedding: r.values });
        tokens += r.promptTokens;
      } catch (e) {
        const err = e as { code?: number; details?: string; message?: string };
        throw new HttpError(
          STATUS_OF[err.code as grpc.status] ?? 500,
          err.details ?? err.message ?? String(e),
          undefined,
          "input",
        );
      }
    }
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ object: "list", data, model, usage: { prompt_tokens: tokens, total_tokens: tokens } }));
  }

  private checkModel(body: Record<string, unknown>): string {
    const model = body["model"];
    if (model !== undefined && model !== this.router.modelName) {
      throw new HttpError(
        404,
        `model "${String(model)}" is not served here; this router serves "${this.router.modelName}"`,
        "invalid_request_error",
        "model",
      );
    }
    return this.router.modelName;
  }

  private completions(body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): void {
    const model = this.checkModel(body);
    const p = body["prompt"];
    let prompt: { text: string } | { ids: number[] };
    if (typeof p === "string") prompt = { text: p };
    else if (Array.isArray(p) && p.every((x) => Number.isInteger(x))) prompt = { ids: p as number[] };
    else
      throw new HttpError(
        400,
        "prompt must be a string or an array of token ids (one prompt per request)",
        undefined,
        "prompt",
      );
    const id = `cmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    this.run(toRequest(body, prompt, 16), body, req, res, {
      chunk: (text, finish) => ({
        id,
        object: "text_completion",
        created,
        model,
        choices: [{ index: 0, text, finish_reason: finish, logprobs: null }],
      }),
      full: (text, finish, usage) => ({
        id,
        object: "text_completion",
        created,
        model,
        choices: [{ index: 0, text, finish_reason: finish, logprobs: null }],
        usage,
      }),
      usageChunk: (usage) => ({ id, object: "text_completion", created, model, choices: [], usage }),
    });
  }

  private chat(body: Record<string, unknown>, req: IncomingMessage, res: ServerResponse): void {
    const model = this.checkModel(body);
    const msgs = body["messages"];
    if (!Array.isArray(msgs) || msgs.length === 0)
      throw new HttpError(400, "messages must be a non-empty array", undefined, "messages");
    const messages = msgs.map((m, i) => {
      const o = m as { role?: unknown; content?: unknown };
      if (typeof o.role !== "string" || typeof o.content !== "string") {
        throw new HttpError(400, `messages[${i}] needs a string role and a string content`, undefined, "messages");
      }
      return { role: o.role, content: o.content };
    });
    let text: string;
    try {
      text = this.router.renderChat(messages);
    } catch (e) {
      throw new HttpError(400, (e as Error).message, undefined, "messages");
    }
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    let first = true;
    this.run(toRequest(body, { text }), body, req, res, {
      chunk: (delta, finish) => {
        const d: Record<string, string> = first
          ? { role: "assistant", content: delta }
          : finish
            ? {}
            : { content: delta };
        if (finish && delta) d["content"] = delta;
        first = false;
        return {
          id,
          object: "chat.completion.chunk",
          created,
          model,
          choices: [{ index: 0, delta: d, finish_reason: finish }],
        };
      },
      full: (content, finish, usage) => ({
        id,
        object: "chat.completion",
        created,
        model,
        choices: [{ index: 0, message: { role: "assistant", content }, finish_reason: finish }],
        usage,
      }),
      usageChunk: (usage) => ({ id, object: "chat.completion.chunk", created, model, choices: [], usage }),
    });
  }

  /** Submits the request and answers with one JSON object, or with server-sent events when `stream` is set. */
  private run(
    greq: GenerateRequest__Output,
    body: Record<string, unknown>,
    req: IncomingMessage,
    res: ServerResponse,
    shape: {
      chunk: (delta: string, finish: string | null) => unknown;
      full: (text: string, finish: string | null, usage: unknown) => unknown;
      usageChunk: (usage: unknown) => unknown;
    },
  ): void {
    const stream = body["stream"] === true;
    const so = body["stream_options"] as { include_usage?: unknown } | undefined;
    const includeUsage = so?.include_usage === true;
    let text = "";
    let finished = false;
    const usageOf = (c: GenerateChunk) => ({
      prompt_tokens: c.usage?.promptTokens ?? 0,
      completion_tokens: c.usage?.completionTokens ?? 0,
      total_tokens: (c.usage?.promptTokens ?? 0) + (c.usage?.completionTokens ?? 0),
    });
    const sse = (obj: unknown) => res.write(`data: ${JSON.stringify(obj)}\n\n`);
    const handle = this.router.submit(greq, {
      write: (c) => {
        const finish = finishOf(c.finishReason);
        if (stream) {
          if (!res.headersSent) {
            res.writeHead(200, {
              "content-type": "text/event-stream",
              "cache-control": "no-cache",
              connection: "keep-alive",
            });
          }
          if ((c.text ?? "") !== "" || finish) sse(shape.chunk(c.text ?? "", finish));
          if (finish && includeUsage) sse(shape.usageChunk(usageOf(c)));
        } else {
          text += c.text ?? "";
          if (finish) {
            res.writeHead(200, { "content-type": "application/json" });
            res.end(JSON.stringify(shape.full(text, finish, usageOf(c))));
          }
        }
      },
      end: () => {
        finished = true;
        if (stream) {
          res.write("data: [DONE]\n\n");
          res.end();
        }
      },
      fail: (code, message) => {
        finished = true;
        const status = STATUS_OF[code] ?? 500;
        sendError(
          res,
          new HttpError(
            status,
            message,
            status === 429 ? "rate_limit_error" : status >= 500 ? "server_error" : "invalid_request_error",
          ),
        );
      },
    });
    // A client that goes away before the end cancels the request and frees its pages.
    res.on("close", () => {
      if (!finished) handle?.cancel();
    });
    void req;
  }
}
