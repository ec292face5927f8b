// Cluster settings, read once from the environment and validated. REDIS_URL and NATS_URL switch from the embedded
// defaults (in-memory ledger, in-process bus) to the real servers; credentials and TLS come from here too.
import { readFileSync } from "node:fs";
import { ConfigError } from "../common/errors.js";

export interface TlsFiles {
  ca?: Buffer;
  cert?: Buffer;
  key?: Buffer;
}

export interface ClusterConfig {
  /** Namespace of every Redis key and NATS subject (TPSERVE_CLUSTER, default "default"). */
  cluster: string;
  /** redis:// or rediss:// (TLS); null = the in-memory ledger of the embedded default. */
  redisUrl: string | null;
  redisUsername: string | undefined;
  redisPassword: string | undefined;
  redisTls: TlsFiles | null;
  /** nats:// URL(s), comma separated; null = no NATS. */
  natsUrl: string | null;
  natsUser: string | undefined;
  natsPassword: string | undefined;
  natsToken: string | undefined;
  natsTls: TlsFiles | null;
  /** Lease TTL of routers and groups (TPSERVE_LEASE_TTL_MS, default 3000); renewed every third of it. */
  leaseTtlMs: number;
  /** How often a router sweeps expired leases and looks for new groups (TPSERVE_SWEEP_MS, default 1000). */
  sweepMs: number;
}

export const CLUSTER_ENV_HELP = `cluster environment:
  REDIS_URL                redis://host:port or rediss:// (TLS); unset: in-memory ledger (one router)
  REDIS_USERNAME, REDIS_PASSWORD, REDIS_TLS_CA, REDIS_TLS_CERT, REDIS_TLS_KEY (PEM files)
  NATS_URL                 nats://host:port[,nats://...]; unset: no NATS control plane
  NATS_USER, NATS_PASSWORD, NATS_TOKEN, NATS_TLS_CA, NATS_TLS_CERT, NATS_TLS_KEY (PEM files)
  TPSERVE_CLUSTER          key and subject namespace (default "default")
  TPSERVE_LEASE_TTL_MS     router and group lease TTL (default 3000)
  TPSERVE_SWEEP_MS         sweep and discovery period of a router (default 1000)`;

export function clusterConfigFromEnv(env: NodeJS.ProcessEnv = process.env): ClusterConfig {
  const cluster = env["TPSERVE_CLUSTER"] ?? "default";
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(cluster)) {
    throw new ConfigError(`TPSERVE_CLUSTER must be 1-64 characters of A-Z a-z 0-9 _ -, got "${cluster}"`);
  }
  const redisUrl = env["REDIS_URL"] || null;
  if (redisUrl && !/^rediss?:\/\//.test(redisUrl)) {
    throw new ConfigError(`REDIS_URL must start with redis:// or rediss://, got "${redisUrl}"`);
  }
  const natsUrl = env["NATS_URL"] || null;
  if (natsUrl && !natsUrl.split(",").every((u) => /^(nats|tls):\/\//.test(u.trim()))) {
    throw new ConfigError(`NATS_URL must be nats:// or tls:// URLs separated by commas, got "${natsUrl}"`);
  }
  const leaseTtlMs = intEnv(env, "TPSERVE_LEASE_TTL_MS", 3000, 100, 600_000);
  return {
    cluster,
    redisUrl,
    redisUsername: env["REDIS_USERNAME"] || undefined,
    redisPassword: env["REDIS_PASSWORD"] || undefined,
    redisTls: tlsFiles(env, "REDIS", redisUrl?.startsWith("rediss://") ?? false),
    natsUrl,
    natsUser: env["NATS_USER"] || undefined,
    natsPassword: env["NATS_PASSWORD"] || undefined,
    natsToken: env["NATS_TOKEN"] || undefined,
    natsTls: tlsFiles(env, "NATS", natsUrl?.startsWith("tls://") ?? false),
    leaseTtlMs,
    sweepMs: intEnv(env, "TPSERVE_SWEEP_MS", Math.min(1000, leaseTtlMs), 20, 600_000),
  };
}

function intEnv(env: NodeJS.ProcessEnv, name: string, fallback: number, min: number, max: number): number {
  const raw = env[name];
  if (raw === undefined || raw === "") return fallback;
  const v = Number(raw);
  if (!Number.isInteger(v) || v < min || v > max) {
    throw new ConfigError(`${name} must be an integer in ${min}..${max}, got "${raw}"`);
  }
  return v;
}

function tlsFiles(env: NodeJS.ProcessEnv, prefix: string, forced: boolean): TlsFiles | null {
  const read = (name: string): Buffer | undefined => {
    const file = env[`${prefix}_TLS_${name}`];
    if (!file) return undefined;
    try {
      return readFileSync(file);
    } catch (e) {
      throw new ConfigError(`${prefix}_TLS_${name} ${file} cannot be read: ${(e as Error).message}`);
    }
  };
  const files: TlsFiles = {};
  const ca = read("CA");
  const cert = read("CERT");
  const key = read("KEY");
  if (ca) files.ca = ca;
  if (cert) files.cert = cert;
  if (key) files.key = key;
  if (!!cert !== !!key) throw new ConfigError(`${prefix}_TLS_CERT and ${prefix}_TLS_KEY go together`);
  return forced || ca || cert ? files : null;
}
