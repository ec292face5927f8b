// Worker configuration, read once from flags and validated.
import { ConfigError } from "../common/errors.js";
import type { Flags } from "../common/flags.js";
import { bundledModelDir } from "../common/paths.js";

export interface WorkerConfig {
  /** Model folder (Hugging Face layout). */
  model: string;
  quantization: "none" | "int4" | "nf4";
  groupSize: 32 | 64 | 128;
  symmetric: boolean;
  loadFormat: "safetensors" | "dummy";
  /** KV pool size in pages including page 0; 0 = derive from kvCacheMiB. */
  numPages: number;
  kvCacheMiB: number;
  /** KV cache element type (int8: per-token, per-head scales; CPU engine). */
  kvCacheDtype: "f32" | "int8";
  blockSize: number;
  maxBatchTokens: number;
  /** Kernel threads; 0 = one per hardware thread. */
  threads: number;
  /** "auto" (a GPU when the build has CUDA and one is visible), "cpu", "cuda" or "cuda:N". */
  device: string;
  /** Port of the worker's GET /metrics (0 = any free port; null = off). */
  metricsPort: number | null;
  /** pino level of the worker's JSON logs on stderr. */
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "silent";
  host: string;
  /** 0 = any free port. */
  port: number;
  epoch: number;
  seed: number;
}

export const WORKER_FLAGS_HELP = `worker options:
  --model DIR              model folder (default: the bundled tinyllama-brown)
  --quantization none|int4|nf4
                           weights as stored (GPTQ/AWQ folders load quantized), int4 round-to-nearest or
                           NF4 (bitsandbytes-style, double-quantized absmax) at load (default none)
  --group-size 32|64|128   int4 group size (default 128)
  --asym                   int4 with zero points (default symmetric)
  --load-format safetensors|dummy  dummy = random weights for the config (default safetensors)
  --kv-cache-mib N         KV pool size in MiB (default 256)
  --kv-cache-dtype f32|int8
                           KV cache element type; int8 keeps one scale per token and KV head (CPU engine)
  --num-pages N            KV pool size in pages, overrides --kv-cache-mib
  --block-size N           tokens per KV page (default 16)
  --max-batch-tokens N     token budget of one step (default 512)
  --threads N              kernel threads, 0 = all cores (default 0)
  --device auto|cpu|cuda[:N]  where the model runs (default auto: the GPU when there is one)
  --worker-metrics-port N  serve the worker's Prometheus metrics on GET /metrics (default off)
  --worker-log-level L     the worker's JSON logs: debug logs every finished sequence with its request id (default warn)`;

export function workerConfigFromFlags(f: Flags): WorkerConfig {
  return {
    model: f.string("model", bundledModelDir()),
    quantization: f.choice("quantization", ["none", "int4", "nf4"] as const, "none"),
    groupSize: Number(f.choice("group-size", ["32", "64", "128"] as const, "128")) as 32 | 64 | 128,
    symmetric: !f.bool("asym"),
    loadFormat: f.choice("load-format", ["safetensors", "dummy"] as const, "safetensors"),
    numPages: f.int("num-pages", 0, 0, 1 << 24),
    kvCacheMiB: f.int("kv-cache-mib", 256, 1, 1 << 20),
    kvCacheDtype: f.choice("kv-cache-dtype", ["f32", "int8"] as const, "f32"),
    blockSize: f.int("block-size", 16, 1, 1024),
    maxBatchTokens: f.int("max-batch-tokens", 512, 1, 1 << 20),
    threads: f.int("threads", 0, 0, 1024),
    device: deviceFlag(f.string("device", "auto")),
    metricsPort: f.has("worker-metrics-port") ? f.int("worker-metrics-port", 0, 0, 65535) : null,
    logLevel: f.choice("worker-log-level", ["fatal", "error", "warn", "info", "debug", "silent"] as const, "warn"),
    host: f.string("worker-host", "127.0.0.1"),
    port: f.int("worker-port", 0, 0, 65535),
    epoch: f.int("epoch", 1, 1),
    seed: f.int("seed", 0, 0),
  };
}

function deviceFlag(v: string): string {
  if (v === "auto" || v === "cpu" || /^cuda(:\d{1,3})?$/.test(v)) return v;
  throw new ConfigError(`--device must be auto, cpu, cuda or cuda:N, got "${v}"`);
}
