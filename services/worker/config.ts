// Worker configuration, read once from flags and validated.
import { type ClusterConfig, clusterConfigFromEnv } from "../cluster/config.js";
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
  /** Benchmarks only (no flag): dummy int4 decoder linears get an act-order input permutation. */
  dummyActOrder?: boolean;
  /** KV pool size in pages including page 0; 0 = derive from kvCacheMiB or GPU memory (kv-pool.ts). */
  numPages: number;
  /** KV pool size in MiB; null = not given (a GPU sizes the pool from gpuMemoryUtilization, the CPU takes 256). */
  kvCacheMiB: number | null;
  /** GPU: the fraction of the card's memory weights, KV pool and workspaces may fill (with neither size given). */
  gpuMemoryUtilization: number;
  /** KV cache element type: auto = f16 on a GPU, f32 on the CPU; int8 (per-token, per-head scales) CPU only. */
  kvCacheDtype: "auto" | "f32" | "f16" | "int8";
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
  /** Host routers reach this group at, as registered in the cluster ledger (null = `host`). */
  advertiseHost: string | null;
  /** 0 = any free port. */
  port: number;
  epoch: number;
  seed: number;
  /** Tensor parallelism: ranks in this worker's group (1 = no group), its rank, the group's unique name. */
  tp: number;
  tpRank: number;
  tpGroup: string;
  /** Bound on one collective inside a step; a rank that misses it fails the group (requests end UNAVAILABLE). */
  tpTimeoutMs: number;
  /** Longest graceful drain on SIGTERM (finish the sequences held, then exit). */
  drainTimeoutMs: number;
  /** Name of this worker group in the cluster ledger (with REDIS_URL); null = not a cluster member. */
  group: string | null;
  /** Redis, NATS and lease settings from the environment. */
  cluster: ClusterConfig;
}

export const WORKER_FLAGS_HELP = `worker options:
  --model DIR              model folder (default: the bundled tinyllama-brown)
  --quantization none|int4|nf4
                           weights as stored (GPTQ/AWQ folders load quantized), int4 round-to-nearest or
                           NF4 (bitsandbytes-style, double-quantized absmax) at load (default none)
  --group-size 32|64|128   int4 group size (default 128)
  --asym                   int4 with zero points (default symmetric)
  --load-format safetensors|dummy  dummy = random weights for the config (default safetensors)
  --kv-cache-mib N         KV pool size in MiB (default: on a GPU see --gpu-memory-utilization; on the CPU 256)
  --gpu-memory-utilization F
                           on a GPU with neither --kv-cache-mib nor --num-pages: the KV pool takes what is left of
                           F x the card's memory after the weights, workspaces and other processes (0 < F <= 1;
                           default 0.9)
  --kv-cache-dtype auto|f32|f16|int8
                           KV cache element type (default auto: f16 on a GPU, f32 on the CPU); int8 keeps one
                           scale per token and KV head (CPU engine)
  --num-pages N            KV pool size in pages, overrides --kv-cache-mib
  --block-size N           tokens per KV page (default 16)
  --max-batch-tokens N     token budget of one step (default 512)
  --threads N              kernel threads, 0 = all cores (default 0)
  --device auto|cpu|cuda[:N]  where the model runs (default auto: the GPU when there is one)
  --worker-metrics-port N  serve the worker's Prometheus metrics on GET /metrics (default off)
  --worker-log-level L     the worker's JSON logs: debug logs every finished sequence with its request id (default warn)
  --tp N                   tensor parallelism: N CPU worker processes hold one shard each (1, 2, 4, 8; default 1)
  --tp-timeout-ms MS       a rank that misses a collective for this long fails its group (default 10000)
  --tp-rank R, --tp-group NAME  (tpserve worker only) this process's rank and its group's unique name; without
                           --tp-rank, \`tpserve worker --tp N\` starts all N ranks itself (rank 0 serves the port)
  --drain-timeout-s N      on SIGTERM, finish held sequences for up to N s, then exit 0 (default 30)
  --group NAME             register as worker group NAME in the cluster ledger (needs REDIS_URL)
  --advertise-host HOST    with --group: the host routers connect to (default --worker-host; set it with 0.0.0.0)`;

export function workerConfigFromFlags(f: Flags): WorkerConfig {
  const cfg: WorkerConfig = {
    model: f.string("model", bundledModelDir()),
    quantization: f.choice("quantization", ["none", "int4", "nf4"] as const, "none"),
    groupSize: Number(f.choice("group-size", ["32", "64", "128"] as const, "128")) as 32 | 64 | 128,
    symmetric: !f.bool("asym"),
    loadFormat: f.choice("load-format", ["safetensors", "dummy"] as const, "safetensors"),
    numPages: f.int("num-pages", 0, 0, 1 << 24),
    kvCacheMiB: f.has("kv-cache-mib") ? f.int("kv-cache-mib", 0, 1, 1 << 20) : null,
    gpuMemoryUtilization: gpuMemoryUtilizationFlag(f),
    kvCacheDtype: f.choice("kv-cache-dtype", ["auto", "f32", "f16", "int8"] as const, "auto"),
    blockSize: f.int("block-size", 16, 1, 1024),
    maxBatchTokens: f.int("max-batch-tokens", 512, 1, 1 << 20),
    threads: f.int("threads", 0, 0, 1024),
    device: deviceFlag(f.string("device", "auto")),
    metricsPort: f.has("worker-metrics-port") ? f.int("worker-metrics-port", 0, 0, 65535) : null,
    logLevel: f.choice("worker-log-level", ["fatal", "error", "warn", "info", "debug", "silent"] as const, "warn"),
    host: f.string("worker-host", "127.0.0.1"),
    advertiseHost: hostFlag("advertise-host", f.string("advertise-host")),
    port: f.int("worker-port", 0, 0, 65535),
    epoch: f.int("epoch", 1, 1),
    seed: f.int("seed", 0, 0),
    ...tpFlags(f),
    drainTimeoutMs: f.int("drain-timeout-s", 30, 0, 3600) * 1000,
    group: groupFlag(f.string("group")),
    cluster: clusterConfigFromEnv(),
  };
  const wildcard = cfg.host === "0.0.0.0" || cfg.host === "::";
  if (cfg.group !== null && wildcard && cfg.advertiseHost === null) {
    throw new ConfigError(
      `--group with --worker-host ${cfg.host} needs --advertise-host HOST: the address routers dial for this group`,
    );
  }
  return cfg;
}

function tpFlags(f: Flags): Pick<WorkerConfig, "tp" | "tpRank" | "tpGroup" | "tpTimeoutMs"> {
  const tp = f.int("tp", 1, 1, 64);
  const tpRank = f.int("tp-rank", 0, 0, 63);
  const tpGroup = f.string("tp-group", "");
  const tpTimeoutMs = f.int("tp-timeout-ms", 10_000, 100, 3_600_000);
  if (tpRank >= tp) throw new ConfigError(`--tp-rank ${tpRank} must be below --tp ${tp}`);
  if (tpGroup !== "" && !/^[A-Za-z0-9._-]{1,100}$/.test(tpGroup)) {
    throw new ConfigError(`--tp-group must be 1..100 characters of A-Z a-z 0-9 . _ -, got "${tpGroup}"`);
  }
  return { tp, tpRank, tpGroup, tpTimeoutMs };
}

function gpuMemoryUtilizationFlag(f: Flags): number {
  const v = f.float("gpu-memory-utilization", 0.9, 0, 1);
  if (v <= 0) throw new ConfigError(`--gpu-memory-utilization must be above 0 and at most 1, got "${v}"`);
  return v;
}

function groupFlag(v: string | undefined): string | null {
  if (v === undefined) return null;
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(v)) {
    throw new ConfigError(`--group must be 1-128 characters of A-Z a-z 0-9 _ . : -, got "${v}"`);
  }
  return v;
}

function hostFlag(name: string, v: string | undefined): string | null {
  if (v === undefined) return null;
  if (!/^[A-Za-z0-9.:_-]{1,253}$/.test(v) || v === "0.0.0.0" || v === "::") {
    throw new ConfigError(`--${name} must be a host name or IP address routers can connect to, got "${v}"`);
  }
  return v;
}

/** host:port of a worker as routers dial it (an IPv6 address in brackets). */
export function dialAddress(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

function deviceFlag(v: string): string {
  if (v === "auto" || v === "cpu" || /^cuda(:\d{1,3})?$/.test(v)) return v;
  throw new ConfigError(`--device must be auto, cpu, cuda or cuda:N, got "${v}"`);
}
