// Validation of public GenerateRequests: every limit is checked before the request is queued, and each error
// names the limit it broke. Also a scan of the raw request bytes for invalid UTF-8 in string fields (protobuf
// decoders in JavaScript replace bad bytes silently, so the check must happen on the wire bytes).

import { invalidArgument } from "../common/errors.js";
import type { GenerateRequest__Output } from "../common/generated/tpserve/v1/GenerateRequest.js";

export interface Limits {
  vocabSize: number;
  /** Most tokens (prompt plus generated) one sequence may hold. */
  maxContext: number;
  maxStopStrings: number;
  maxStopLength: number;
}

export interface NormalizedSampling {
  temperature: number;
  topK: number;
  topP: number;
  minP: number;
  seed: number;
}

export interface NormalizedRequest {
  promptIds: number[];
  maxNewTokens: number;
  stop: string[];
  ignoreEos: boolean;
  sampling: NormalizedSampling;
}

/** Field numbers of GenerateRequest that hold text: text (2) and stop (6). */
const TEXT_FIELDS = new Set([2, 6]);
export const INVALID_UTF8 = Symbol("invalidUtf8");

/** Returns the name of the first string field of a serialized GenerateRequest that is not valid UTF-8. */
export function findInvalidUtf8(buf: Uint8Array): string | null {
  const decoder = new TextDecoder("utf-8", { fatal: true });
  let pos = 0;
  const varint = (): number => {
    let result = 0;
    let shift = 0;
    for (;;) {
      if (pos >= buf.length) throw new RangeError("truncated varint");
      const b = buf[pos++]!;
      result += (b & 0x7f) * 2 ** shift;
      if ((b & 0x80) === 0) return result;
      shift += 7;
    }
  };
  try {
    while (pos < buf.length) {
      const key = varint();
      const field = Math.floor(key / 8);
      const wire = key & 7;
      if (wire === 0) varint();
      else if (wire === 1) pos += 8;
      else if (wire === 5) pos += 4;
      else if (wire === 2) {
        const len = varint();
        const bytes = buf.subarray(pos, pos + len);
        pos += len;
        if (TEXT_FIELDS.has(field)) {
          try {
            decoder.decode(bytes);
          } catch {
            return field === 2 ? "text" : "stop";
          }
        }
      } else return null; // groups: not in this message; let the decoder complain
    }
  } catch {
    return null;
  }
  return null;
}

/** Checks sampling values; returns normalized ones or throws INVALID_ARGUMENT naming the limit. */
export function normalizeSampling(req: GenerateRequest__Output): NormalizedSampling {
  const s = req.sampling;
  const temperature = s?.temperature ?? 0;
  if (!Number.isFinite(temperature) || temperature < 0) {
    throw invalidArgument(`sampling.temperature must be >= 0 (0 = greedy), got ${temperature}`);
  }
  const topP = s?._topP ? s.topP! : 1;
  if (!(topP > 0 && topP <= 1)) throw invalidArgument(`sampling.top_p must be in (0, 1], got ${topP}`);
  const minP = s?.minP ?? 0;
  if (!(minP >= 0 && minP < 1)) throw invalidArgument(`sampling.min_p must be in [0, 1), got ${minP}`);
  const topK = s?.topK ?? 0;
  const seed = s?._seed ? s.seed! : Math.floor(Math.random() * 2 ** 48);
  if (!Number.isSafeInteger(seed) || seed < 0) {
    throw invalidArgument(`sampling.seed must be an integer in 0..2^53-1, got ${seed}`);
  }
  return { temperature, topK, topP, minP, seed };
}

/**
 * Validates a request whose prompt is already tokenized (`promptIds`). Throws INVALID_ARGUMENT naming the limit.
 */
export function validateRequest(req: GenerateRequest__Output, promptIds: number[], limits: Limits): NormalizedRequest {
  if (promptIds.length === 0) throw invalidArgument("prompt is empty: give prompt text or at least one token id");
  for (let i = 0; i < promptIds.length; i++) {
    const t = promptIds[i]!;
    if (!Number.isInteger(t) || t < 0 || t >= limits.vocabSize) {
      throw invalidArgument(`token id ${t} at position ${i} is outside the vocabulary 0..${limits.vocabSize - 1}`);
    }
  }
  if (promptIds.length >= limits.maxContext) {
    throw invalidArgument(
      `prompt has ${promptIds.length} tokens; the context limit is ${limits.maxContext} tokens (prompt + max_tokens), ` +
        `so the prompt may have at most ${limits.maxContext - 1}`,
    );
  }
  const room = limits.maxContext - promptIds.length;
  let maxNewTokens = room;
  if (req._maxTokens) {
    const m = req.maxTokens!;
    if (m < 1) throw invalidArgument(`max_tokens must be >= 1, got ${m}`);
    if (m > room) {
      throw invalidArgument(
        `max_tokens ${m} + prompt ${promptIds.length} tokens exceeds the context limit of ${limits.maxContext} tokens; ` +
          `use max_tokens <= ${room}`,
      );
    }
    maxNewTokens = m;
  }
  if (req.stop.length > limits.maxStopStrings) {
    throw invalidArgument(`at most ${limits.maxStopStrings} stop strings, got ${req.stop.length}`);
  }
  for (const s of req.stop) {
    if (s.length === 0) throw invalidArgument("stop strings must not be empty");
    if (s.length > limits.maxStopLength) {
      throw invalidArgument(`stop strings may have at most ${limits.maxStopLength} characters, got ${s.length}`);
    }
  }
  return {
    promptIds,
    maxNewTokens,
    stop: [...req.stop],
    ignoreEos: req.ignoreEos,
    sampling: normalizeSampling(req),
  };
}
