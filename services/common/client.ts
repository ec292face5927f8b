// A small client for the public API, used by the CLI and the tests.
import * as grpc from "@grpc/grpc-js";
import type { GenerateChunk__Output } from "./generated/tpserve/v1/GenerateChunk.js";
import type { GenerateRequest } from "./generated/tpserve/v1/GenerateRequest.js";
import type { GenerationClient } from "./generated/tpserve/v1/Generation.js";
import { protos } from "./proto.js";

export function generationClient(address: string): GenerationClient {
  return new (protos().generation.tpserve.v1.Generation)(address, grpc.credentials.createInsecure());
}

export interface GenerateOutcome {
  ids: number[];
  text: string;
  chunks: GenerateChunk__Output[];
  finishReason: string;
  promptTokens: number;
  completionTokens: number;
  preemptions: number;
}

/** Streams one request to the end; `onChunk` sees each chunk as it arrives. Rejects with the gRPC error. */
export function generate(
  client: GenerationClient,
  req: GenerateRequest,
  onChunk?: (c: GenerateChunk__Output) => void,
  options: { signal?: AbortSignal; deadlineMs?: number } = {},
): Promise<GenerateOutcome> {
  return new Promise((resolve, reject) => {
    const callOpts: grpc.CallOptions = options.deadlineMs ? { deadline: Date.now() + options.deadlineMs } : {};
    const call = client.Generate(req, callOpts);
    const out: GenerateOutcome = {
      ids: [],
      text: "",
      chunks: [],
      finishReason: "",
      promptTokens: 0,
      completionTokens: 0,
      preemptions: 0,
    };
    options.signal?.addEventListener("abort", () => call.cancel(), { once: true });
    call.on("data", (c: GenerateChunk__Output) => {
      out.chunks.push(c);
      out.ids.push(...c.tokenIds);
      out.text += c.text;
      if (c.finishReason !== "FINISH_REASON_UNSPECIFIED") out.finishReason = c.finishReason;
      if (c.usage) {
        out.promptTokens = c.usage.promptTokens;
        out.completionTokens = c.usage.completionTokens;
        out.preemptions = c.usage.preemptions;
      }
      onChunk?.(c);
    });
    call.on("error", reject);
    call.on("end", () => resolve(out));
  });
}

export function unary<Req, Res>(
  fn: (req: Req, cb: (err: grpc.ServiceError | null, res?: Res) => void) => unknown,
  req: Req,
): Promise<Res> {
  return new Promise((resolve, reject) => {
    fn(req, (err, res) => (err || res === undefined ? reject(err ?? new Error("empty response")) : resolve(res)));
  });
}
