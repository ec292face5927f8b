// Router configuration, read once from flags and validated.
import { readFileSync } from "node:fs";
import { type ClusterConfig, clusterConfigFromEnv } from "../cluster/config.js";
import { ConfigError } from "../common/errors.js";
import type { Flags } from "../common/flags.js";
import { bundledModelDir } from "../common/paths.js";
import { ApiKeys } from "./auth.js";

export interface RouterConfig {
  host: string;
  /** Public gRPC port; 0 = any free port. */
  port: number;
  /** Worker addresses (host:port), one per group leader. */
  workers: string[];
  /** Folder the router reads the tokenizer and chat template from (--tokenizer, else --model). */
  model: string;
  /** Most sequences running at once in one group (the batch size limit). */
  maxRunning: number;
  /** Most requests waiting for a slot, over all groups; beyond it requests get RESOURCE_EXHAUSTED. */
  maxQueue: number;
  /** Token budget of one step; long prompts are prefilled in chunks of what remains of it. */
  maxBatchTokens: number;
  /** Decode steps a worker may run back to back when the batch is decode only. */
  decodeSteps: number;
  decodeStepsMax: number;
  decodeLookaheadMs: number;
  maxStopStrings: number;
  /** Print one line per step to stderr (joins, leaves, preemptions). */
  logSteps: boolean;
  /** HTTP port for GET /metrics and the OpenAI-compatible API (0 = any free port; null = no HTTP listener). */
  httpPort: number | null;
  /** API keys (null: no auth). */
  apiKeys: ApiKeys | null;
  /** Whether health checks and /metrics need a key too (default: they stay open for probes and scrapers). */
  authHealthAndMetrics: boolean;
  /** pino level of the JSON logs on stderr (one line per request at info). */
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "silent";
  /** Include prompt text in request log lines (off: prompts never reach the logs). */
  logPrompts: boolean;
  /** TLS for the gRPC and HTTP listeners: PEM certificate chain and private key (null: plaintext). */
  tls: { cert: Buffer; key: Buffer } | null;
  /** On SIGTERM: refuse new requests, give in-flight streams this long to finish, then exit. */
  drainTimeoutMs: number;
  /** Redis, NATS and lease settings from the environment (REDIS_URL set: groups come from the ledger). */
  cluster: ClusterConfig;
  /** Pages a router claims from the ledger at a time (cluster mode). */
  pageExtent: number;
  /** How long a request may wait for pages the ledger cannot give before it fails with UNAVAILABLE. */
  pageStarveMs: number;
  /**
   * How long a request may wait for a worker group to come (back) into service when none is (a group restarting):
   * new requests wait, and those of a failed group with no other group to move to go on in the next group that
   * comes. 0: they fail with UNAVAILABLE at once.
   */
  groupWaitMs: number;
  /** Share full KV blocks between requests with the same prefix (docs/prefix-caching.md). */
  prefixCache: boolean;
  /** Cluster mode: unreferenced cached blocks an idle router keeps instead of handing them back to the ledger. */
  prefixCacheKeepPages: number;
  /** Route a request to the group holding its longest cached prefix (within the load bound); off: least loaded. */
  prefixRouting: boolean;
  /** Prefix-aware routing load bound: a group may take a request while its load stays <= factor x average. */
  prefixLoadFactor: number;
}

export const ROUTER_FLAGS_HELP = `router options:
  --host H                 listen address (default 127.0.0.1)
  --tokenizer DIR          folder with tokenizer.json (default: --model; dummy shapes use the bundled one)
  --port N                 public gRPC port (default 50051, 0 = any free port)
  --max-running N          most sequences in one batch (default 64)
  --max-queue N            most waiting requests before RESOURCE_EXHAUSTED (default 256)
  --max-batch-tokens N     token budget of one step (default 512)
  --decode-steps N         decode steps a worker runs per plan when only decoding (default 4)
  --decode-steps-max N     more steps per such plan while steps are fast, up to N (default 32)
  --decode-lookahead-ms MS aim for plans of about MS (default 64; 0 = always --decode-steps): fewer router
                           round trips per token; a request that arrives meanwhile ends the plan early
  --log-steps              print one line per step to stderr
  --http-port N            HTTP listener: OpenAI API under /v1/ and GET /metrics (default 8080, 0 = any)
  --no-http                no HTTP listener
  --api-keys-file FILE     require one of these API keys (one per line; also TPSERVE_API_KEYS=k1,k2)
  --auth-health-metrics    require a key for grpc.health.v1 and /metrics too
  --log-level L            JSON logs on stderr: fatal|error|warn|info|debug|silent (default info)
  --log-prompts            include prompt text in the request log lines (off by default)
  --tls-cert FILE --tls-key FILE  serve gRPC and HTTP over TLS with this PEM certificate chain and key
  --drain-timeout-s N      on SIGTERM, let in-flight streams finish for up to N s, then exit 0 (default 30)
  --page-extent N          pages claimed from the cluster ledger at a time (default 32; REDIS_URL set)
  --page-starve-ms N       a request waiting this long for pages the ledger cannot give fails (default 30000)
  --group-wait-ms N        with no worker group in service, a request waits up to N ms for one to come back
                           (a restarting group) before UNAVAILABLE (default 0; tpserve serve: 30000)
  --no-prefix-cache        do not share KV blocks between requests with the same prefix (default: share)
  --prefix-cache-keep N    cached blocks an idle router keeps leased from the ledger (default 64)
  --prefix-load-factor F   route to the group holding the longest prefix while its load <= F x average (default 1.25)
  --no-prefix-routing      route by load only (default: prefix-aware when there are several groups)`;

export function routerConfigFromFlags(
  f: Flags,
  workers: string[],
  defaults: { groupWaitMs?: number } = {},
): RouterConfig {
  const cfg: RouterConfig = {
    host: f.string("host", "127.0.0.1"),
    port: f.int("port", 50051, 0, 65535),
    workers,
    model: f.string("tokenizer") ?? f.string("model", bundledModelDir()),
    maxRunning: f.int("max-running", 64, 1, 4096),
    maxQueue: f.int("max-queue", 256, 0, 1 << 20),
    maxBatchTokens: f.int("max-batch-tokens", 512, 1, 1 << 20),
    decodeSteps: f.int("decode-steps", 4, 1, 64),
    decodeStepsMax: f.int("decode-steps-max", 32, 1, 256),
    decodeLookaheadMs: f.float("decode-lookahead-ms", 64, 0, 10_000),
    maxStopStrings: 16,
    logSteps: f.bool("log-steps"),
    httpPort: f.bool("no-http") ? null : f.int("http-port", 8080, 0, 65535),
    apiKeys: ApiKeys.load(f.string("api-keys-file"), process.env["TPSERVE_API_KEYS"]),
    authHealthAndMetrics: f.bool("auth-health-metrics"),
    logLevel: f.choice("log-level", ["fatal", "error", "warn", "info", "debug", "silent"] as const, "info"),
    logPrompts: f.bool("log-prompts"),
    tls: readTls(f.string("tls-cert"), f.string("tls-key")),
    drainTimeoutMs: f.int("drain-timeout-s", 30, 0, 3600) * 1000,
    cluster: clusterConfigFromEnv(),
    pageExtent: f.int("page-extent", 32, 1, 1 << 20),
    pageStarveMs: f.int("page-starve-ms", 30_000, 10, 3_600_000),
    groupWaitMs: f.int("group-wait-ms", defaults.groupWaitMs ?? 0, 0, 3_600_000),
    prefixCache: !f.bool("no-prefix-cache"),
    prefixCacheKeepPages: f.int("prefix-cache-keep", 64, 0, 1 << 24),
    prefixRouting: !f.bool("no-prefix-routing"),
    prefixLoadFactor: loadFactor(f.string("prefix-load-factor", "1.25")),
  };
  if (cfg.workers.length === 0 && !cfg.cluster.redisUrl) {
    throw new ConfigError("the router needs at least one worker address (--workers) or REDIS_URL to find them");
  }
  return cfg;
}

function loadFactor(v: string): number {
  const x = Number(v);
  if (!Number.isFinite(x) || x < 1 || x > 100) {
    throw new ConfigError(`--prefix-load-factor must be a number in 1..100, got "${v}"`);
  }
  return x;
}

function readTls(certFile: string | undefined, keyFile: string | undefined): { cert: Buffer; key: Buffer } | null {
  if (!certFile && !keyFile) return null;
  if (!certFile || !keyFile) throw new ConfigError("TLS needs both --tls-cert and --tls-key");
  const read = (file: string, flag: string) => {
    try {
      return readFileSync(file);
    } catch (e) {
      throw new ConfigError(`${flag} ${file} cannot be read: ${(e as Error).message}`);
    }
  };
  return { cert: read(certFile, "--tls-cert"), key: read(keyFile, "--tls-key") };
}
