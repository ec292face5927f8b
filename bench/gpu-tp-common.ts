// Shared pieces of the GPU tensor-parallel benchmark (bench/gpu-tp.ts): what the parent sends each rank process,
// what the leader sends back, and the golden file.
import { join } from "node:path";
import { readText } from "../services/cli/eval.js";
import { bundledModelDir } from "../services/common/paths.js";
import type { WorkerConfig } from "../services/worker/config.js";

export interface RankSpec {
  tp: number;
  rank: number;
  group: string;
  mode: "greedy" | "decode";
  allreduce: "auto" | "nccl" | "p2p";
  /** Extra environment of the rank processes (e.g. TPSERVE_TP_SKIP_COLLECTIVES=1). */
  env?: Record<string, string>;
  batches: number[];
  kvHeadsLocal: number;
  headDim: number;
  cfg: Partial<WorkerConfig>;
}

export interface DecodeRow {
  batch: number;
  stepMs: number;
  commMsPerStep: number;
  collectivesPerStep: number;
  bytesPerGpu: number;
}

export interface RankResult {
  device: string;
  weightBytes: number;
  loadS: number;
  rows: DecodeRow[];
  greedy?: number[][];
  /** bench/decode-ahead.ts's script without sampled steps: the ids of each forward pass. */
  script?: number[][];
  /** The leader's decode-ahead counts at the end (engine.info().decodeAhead). */
  decodeAhead?: { enabled: boolean; hits: number; misses: number };
}

interface GoldenPrompt {
  prompt: string;
  prompt_ids: number[];
  greedy_ids: number[];
}

let goldenCache: { golden: GoldenPrompt[] } | undefined;
export function golden(): { golden: GoldenPrompt[] } {
  goldenCache ??= JSON.parse(readText(join(bundledModelDir(), "golden.public.json"))) as { golden: GoldenPrompt[] };
  return goldenCache;
}
