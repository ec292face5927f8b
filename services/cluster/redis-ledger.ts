// The PageLedger on Redis (ioredis). Each method is one Lua script (one round trip, atomic on the server). The
// client never queues commands while Redis is away: a call fails at once with LEDGER_UNAVAILABLE, so callers
// decide (keep serving on the pages they hold, refuse new work) instead of hanging.
import { Redis, type RedisOptions } from "ioredis";
import type { ClusterConfig } from "./config.js";
import {
  type GroupInfo,
  type GroupSnapshot,
  type GroupSpec,
  LedgerError,
  type PageLedger,
  type SweepReport,
  validateGroupSpec,
} from "./ledger.js";
import * as S from "./redis-scripts.js";

type ScriptName =
  | "registerGroup"
  | "renewGroup"
  | "removeGroup"
  | "registerRouter"
  | "renewRouter"
  | "removeRouter"
  | "claim"
  | "release"
  | "sweep"
  | "check"
  | "snapshot"
  | "prefixApply"
  | "prefixLookup";

const SCRIPTS: Record<ScriptName, string> = {
  registerGroup: S.REGISTER_GROUP,
  renewGroup: S.RENEW_GROUP,
  removeGroup: S.REMOVE_GROUP,
  registerRouter: S.REGISTER_ROUTER,
  renewRouter: S.RENEW_ROUTER,
  removeRouter: S.REMOVE_ROUTER,
  claim: S.CLAIM,
  release: S.RELEASE,
  sweep: S.SWEEP,
  check: S.CHECK,
  snapshot: S.SNAPSHOT,
  prefixApply: S.PREFIX_APPLY,
  prefixLookup: S.PREFIX_LOOKUP,
};

export function redisOptions(cfg: ClusterConfig): RedisOptions {
  return {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 0,
    commandTimeout: 2000,
    connectTimeout: 2000,
    retryStrategy: (times: number) => Math.min(50 * times, 500),
    ...(cfg.redisUsername ? { username: cfg.redisUsername } : {}),
    ...(cfg.redisPassword ? { password: cfg.redisPassword } : {}),
    ...(cfg.redisTls ? { tls: { ...cfg.redisTls } } : {}),
  };
}

export class RedisLedger implements PageLedger {
  readonly kind = "redis";
  /** Commands this client sent (each script call is one). */
  commands = 0;
  private readonly prefix: string;

  private constructor(
    private readonly redis: Redis,
    cluster: string,
  ) {
    this.prefix = `tp:{${cluster}}:`;
    for (const [name, lua] of Object.entries(SCRIPTS)) redis.defineCommand(`tp_${name}`, { numberOfKeys: 0, lua });
  }

  /** Connects (fails with LEDGER_UNAVAILABLE when Redis cannot be reached within a few seconds). */
  static async connect(cfg: ClusterConfig): Promise<RedisLedger> {
    if (!cfg.redisUrl) throw new TypeError("RedisLedger.connect needs REDIS_URL");
    const redis = new Redis(cfg.redisUrl, redisOptions(cfg));
    redis.on("error", () => undefined); // reconnects on its own; calls fail with LEDGER_UNAVAILABLE meanwhile
    try {
      await redis.connect();
    } catch (e) {
      redis.disconnect();
      throw new LedgerError("LEDGER_UNAVAILABLE", `cannot reach Redis at REDIS_URL: ${(e as Error).message}`);
    }
    return new RedisLedger(redis, cfg.cluster);
  }

  private async run(name: ScriptName, ...args: (string | number)[]): Promise<unknown> {
    this.commands++;
    const fn = (this.redis as unknown as Record<string, (...a: (string | number)[]) => Promise<unknown>>)[
      `tp_${name}`
    ]!;
    try {
      return await fn.call(this.redis, this.prefix, ...args);
    } catch (e) {
      const msg = (e as Error).message ?? String(e);
      if (msg.startsWith("ROUTER_LEASE_LOST")) throw new LedgerError("ROUTER_LEASE_LOST", msg);
      if (msg.startsWith("GROUP_EPOCH_STALE")) throw new LedgerError("GROUP_EPOCH_STALE", msg);
      throw new LedgerError("LEDGER_UNAVAILABLE", `Redis ${name} failed: ${msg}`);
    }
  }

  async registerGroup(spec: GroupSpec, ttlMs: number, minEpoch = 0): Promise<GroupInfo> {
    validateGroupSpec(spec);
    const epoch = Number(
      await this.run("registerGroup", spec.id, spec.address, spec.numPages, spec.blockSize, ttlMs, minEpoch),
    );
    return { ...spec, epoch };
  }

  async renewGroup(id: string, epoch: number, ttlMs: number): Promise<boolean> {
    return Number(await this.run("renewGroup", id, epoch, ttlMs)) === 1;
  }

  async removeGroup(id: string, epoch: number): Promise<void> {
    await this.run("removeGroup", id, epoch);
  }

  async listGroups(): Promise<GroupInfo[]> {
    this.commands++;
    let all: Record<string, string>;
    try {
      all = await this.redis.hgetall(`${this.prefix}groups`);
    } catch (e) {
      throw new LedgerError("LEDGER_UNAVAILABLE", `Redis listGroups failed: ${(e as Error).message}`);
    }
    return Object.values(all).map((v) => JSON.parse(v) as GroupInfo);
  }

  async registerRouter(routerId: string, ttlMs: number): Promise<void> {
    await this.run("registerRouter", routerId, ttlMs);
  }

  async renewRouter(routerId: string, ttlMs: number): Promise<boolean> {
    return Number(await this.run("renewRouter", routerId, ttlMs)) === 1;
  }

  async removeRouter(routerId: string): Promise<void> {
    await this.run("removeRouter", routerId);
  }

  async claim(routerId: string, groupId: string, epoch: number, n: number): Promise<number[]> {
    if (n <= 0) return [];
    const pages = (await this.run("claim", routerId, groupId, epoch, n)) as string[];
    return pages.map(Number);
  }

  async release(routerId: string, groupId: string, epoch: number, pages: readonly number[]): Promise<number> {
    if (pages.length === 0) return 0;
    return Number(await this.run("release", routerId, groupId, epoch, ...pages));
  }

  async sweep(): Promise<SweepReport> {
    const r = JSON.parse(String(await this.run("sweep"))) as Record<string, unknown>;
    const list = (v: unknown) => (Array.isArray(v) ? (v as string[]) : []); // cjson writes {} for an empty list
    return { routers: list(r["routers"]), pagesReclaimed: Number(r["pagesReclaimed"] ?? 0), groups: list(r["groups"]) };
  }

  async check(): Promise<string[]> {
    return (await this.run("check")) as string[];
  }

  async snapshot(): Promise<GroupSnapshot[]> {
    const raw = JSON.parse(String(await this.run("snapshot"))) as unknown;
    const list = Array.isArray(raw) ? (raw as GroupSnapshot[]) : [];
    return list.map((g) => ({ ...g, owners: Array.isArray(g.owners) ? {} : g.owners }));
  }

  async applyKvEvent(kind: "stored" | "removed", key: string, hashes: readonly string[], ttlMs: number) {
    if (hashes.length > 0) await this.run("prefixApply", kind, key, ttlMs, ...hashes);
  }

  async prefixLookup(hashes: readonly string[]): Promise<Record<string, number>> {
    if (hashes.length === 0) return {};
    const r = JSON.parse(String(await this.run("prefixLookup", ...hashes))) as unknown;
    return Array.isArray(r) ? {} : (r as Record<string, number>);
  }

  /** SCANs the pfx: keys (one pass, 500 keys per call) and reads them in pipelines. */
  async prefixDump(): Promise<Map<string, Record<string, number>>> {
    const out = new Map<string, Record<string, number>>();
    const head = `${this.prefix}pfx:`;
    let cursor = "0";
    try {
      do {
        this.commands++;
        const [next, keys] = await this.redis.scan(cursor, "MATCH", `${head}*`, "COUNT", 500);
        cursor = next;
        if (keys.length === 0) continue;
        const pipe = this.redis.pipeline();
        for (const k of keys) pipe.hgetall(k);
        this.commands += keys.length;
        const res = (await pipe.exec()) ?? [];
        for (const [i, k] of keys.entries()) {
          const v = res[i]?.[1] as Record<string, string> | undefined;
          if (!v) continue;
          out.set(k.slice(head.length), Object.fromEntries(Object.entries(v).map(([g, n]) => [g, Number(n)])));
        }
      } while (cursor !== "0");
    } catch (e) {
      throw new LedgerError("LEDGER_UNAVAILABLE", `Redis prefixDump failed: ${(e as Error).message}`);
    }
    return out;
  }

  async close(): Promise<void> {
    this.redis.disconnect();
  }
}
