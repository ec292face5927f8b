// The router's view of where prefixes are cached, cluster-wide: block hash -> the groups (at an epoch) that hold
// it, and which routers' caches hold it there. Fed by KV events: this router's own caches directly, other
// routers' through the control bus (tpserve.<cluster>.kv.stored / kv.removed). Routing reads it synchronously, so
// choosing a group costs no round trip. The same events also keep the Redis index (the durable copy) current.

export type KvEventKind = "stored" | "removed";

/** One batch of KV events: blocks one router's cache of one group gained or lost. */
export interface KvEvent {
  router: string;
  group: string;
  epoch: number;
  hashes: string[];
}

export const groupKey = (group: string, epoch: number) => `${group}@${epoch}`;

/** Stands for routers the index learned about from the Redis index (seed) rather than from their own events. */
const UNKNOWN = "?";

export class PrefixIndex {
  /** block hash -> group key -> router id -> blocks (1, or more for UNKNOWN) */
  private readonly byHash = new Map<string, Map<string, Map<string, number>>>();

  get size(): number {
    return this.byHash.size;
  }

  apply(kind: KvEventKind, e: KvEvent): void {
    const key = groupKey(e.group, e.epoch);
    for (const h of e.hashes) {
      let groups = this.byHash.get(h);
      if (kind === "stored") {
        if (!groups) {
          groups = new Map();
          this.byHash.set(h, groups);
        }
        const routers = groups.get(key) ?? new Map<string, number>();
        routers.set(e.router, (routers.get(e.router) ?? 0) + 1);
        groups.set(key, routers);
      } else if (groups) {
        const routers = groups.get(key);
        if (!routers) continue;
        const who = routers.has(e.router) ? e.router : UNKNOWN;
        const n = (routers.get(who) ?? 0) - 1;
        if (n > 0) routers.set(who, n);
        else routers.delete(who);
        if (routers.size === 0) groups.delete(key);
        if (groups.size === 0) this.byHash.delete(h);
      }
    }
  }

  /** For each group key, how many leading blocks of `hashes` it holds (groups holding none are absent). */
  runs(hashes: readonly string[]): Map<string, number> {
    const out = new Map<string, number>();
    let alive: string[] = [...(this.byHash.get(hashes[0] ?? "")?.keys() ?? [])];
    for (let i = 0; i < hashes.length && alive.length > 0; i++) {
      const groups = this.byHash.get(hashes[i]!);
      alive = alive.filter((k) => groups?.has(k));
      for (const k of alive) out.set(k, i + 1);
    }
    return out;
  }

  /** The routers whose caches hold block `hash` in group `key` (for tests and debugging). */
  holders(hash: string, key: string): string[] {
    return [...(this.byHash.get(hash)?.get(key)?.keys() ?? [])];
  }

  /** Adds what the Redis index holds (a router's cold start): block hash -> group key -> routers holding it. */
  seed(dump: Map<string, Record<string, number>>): void {
    for (const [h, counts] of dump) {
      const groups = this.byHash.get(h) ?? new Map<string, Map<string, number>>();
      for (const [k, n] of Object.entries(counts)) {
        if (n > 0 && !groups.has(k)) groups.set(k, new Map([[UNKNOWN, n]]));
      }
      if (groups.size > 0) this.byHash.set(h, groups);
    }
  }

  /** Forgets a router's entries (it left the cluster or its lease expired: its caches are gone). */
  dropRouter(router: string): void {
    for (const [h, groups] of this.byHash) {
      for (const [k, routers] of groups) {
        routers.delete(router);
        if (routers.size === 0) groups.delete(k);
      }
      if (groups.size === 0) this.byHash.delete(h);
    }
  }

  /** Forgets a group at an epoch (it was retired). */
  dropGroup(key: string): void {
    for (const [h, groups] of this.byHash) {
      groups.delete(key);
      if (groups.size === 0) this.byHash.delete(h);
    }
  }
}

/** Collects one group cache's stored/removed hashes and hands them on in one batch per event-loop turn. */
export class KvEventBatcher {
  private stored: string[] = [];
  private removed: string[] = [];
  private scheduled = false;

  constructor(private readonly flushTo: (kind: KvEventKind, hashes: string[]) => void) {}

  add(kind: KvEventKind, hash: string): void {
    (kind === "stored" ? this.stored : this.removed).push(hash);
    if (this.scheduled) return;
    this.scheduled = true;
    setImmediate(() => this.flush());
  }

  flush(): void {
    this.scheduled = false;
    const [stored, removed] = [this.stored, this.removed];
    this.stored = [];
    this.removed = [];
    if (removed.length > 0) this.flushTo("removed", removed);
    if (stored.length > 0) this.flushTo("stored", stored);
  }
}

/**
 * Picks a group for a request: the one holding the longest run of its leading blocks, among the groups whose load
 * (plus this request) stays within `factor` times the average load, rounded up; ties and misses go to the least
 * loaded. The bound keeps one popular prefix from turning its group into a hot spot.
 */
export function choosePrefixAware<G>(
  candidates: readonly { group: G; key: string; load: number }[],
  runs: Map<string, number>,
  factor: number,
): G | undefined {
  if (candidates.length === 0) return undefined;
  const total = candidates.reduce((n, c) => n + c.load, 0) + 1;
  const bound = Math.ceil((factor * total) / candidates.length);
  let best: { group: G; key: string; load: number } | undefined;
  let bestRun = -1;
  for (const c of candidates) {
    if (c.load + 1 > bound) continue;
    const run = runs.get(c.key) ?? 0;
    if (run > bestRun || (run === bestRun && best && c.load < best.load)) {
      best = c;
      bestRun = run;
    }
  }
  return (best ?? [...candidates].sort((a, b) => a.load - b.load)[0])?.group;
}
