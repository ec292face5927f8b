// The in-memory PageLedger: the embedded default (one router process) and a test double. Same semantics as the
// Redis ledger; every method runs to completion in one turn of the event loop, which makes it atomic.
import {
  type GroupInfo,
  type GroupSnapshot,
  type GroupSpec,
  LedgerError,
  type PageLedger,
  type SweepReport,
  validateGroupSpec,
} from "./ledger.js";

interface MemGroup {
  info: GroupInfo;
  leaseUntil: number;
  free: number[];
  owner: Map<number, string>;
}

export class MemoryLedger implements PageLedger {
  readonly kind = "memory";
  private readonly groups = new Map<string, MemGroup>();
  private readonly epochs = new Map<string, number>();
  private readonly routers = new Map<string, number>(); // router id -> lease deadline

  /** `now` is injectable so that tests can expire leases without waiting. */
  constructor(private readonly now: () => number = Date.now) {}

  async registerGroup(spec: GroupSpec, ttlMs: number, minEpoch = 0): Promise<GroupInfo> {
    validateGroupSpec(spec);
    const epoch = Math.max((this.epochs.get(spec.id) ?? 0) + 1, minEpoch);
    this.epochs.set(spec.id, epoch);
    const free: number[] = [];
    for (let p = 1; p < spec.numPages; p++) free.push(p);
    const info = { ...spec, epoch };
    this.groups.set(spec.id, { info, leaseUntil: this.now() + ttlMs, free, owner: new Map() });
    return { ...info };
  }

  async renewGroup(id: string, epoch: number, ttlMs: number): Promise<boolean> {
    const g = this.groups.get(id);
    if (!g || g.info.epoch !== epoch) return false;
    g.leaseUntil = this.now() + ttlMs;
    return true;
  }

  async removeGroup(id: string, epoch: number): Promise<void> {
    if (this.groups.get(id)?.info.epoch === epoch) this.groups.delete(id);
  }

  async listGroups(): Promise<GroupInfo[]> {
    return [...this.groups.values()].map((g) => ({ ...g.info }));
  }

  async registerRouter(routerId: string, ttlMs: number): Promise<void> {
    this.routers.set(routerId, this.now() + ttlMs);
  }

  async renewRouter(routerId: string, ttlMs: number): Promise<boolean> {
    const until = this.routers.get(routerId);
    if (until === undefined || until <= this.now()) return false;
    this.routers.set(routerId, this.now() + ttlMs);
    return true;
  }

  async removeRouter(routerId: string): Promise<void> {
    this.reclaim(routerId);
    this.routers.delete(routerId);
  }

  async claim(routerId: string, groupId: string, epoch: number, n: number): Promise<number[]> {
    const until = this.routers.get(routerId);
    if (until === undefined || until <= this.now()) {
      throw new LedgerError("ROUTER_LEASE_LOST", `router ${routerId} has no live lease; register it again`);
    }
    const g = this.groups.get(groupId);
    if (!g || g.info.epoch !== epoch) {
      throw new LedgerError("GROUP_EPOCH_STALE", `group ${groupId} epoch ${epoch} is not registered`);
    }
    const out = g.free.splice(0, Math.max(0, Math.min(n, g.free.length)));
    for (const p of out) g.owner.set(p, routerId);
    return out;
  }

  async release(routerId: string, groupId: string, epoch: number, pages: readonly number[]): Promise<number> {
    const g = this.groups.get(groupId);
    if (!g || g.info.epoch !== epoch) return 0;
    let n = 0;
    for (const p of pages) {
      if (g.owner.get(p) !== routerId) continue;
      g.owner.delete(p);
      g.free.push(p);
      n++;
    }
    return n;
  }

  async sweep(): Promise<SweepReport> {
    const report: SweepReport = { routers: [], pagesReclaimed: 0, groups: [] };
    const now = this.now();
    for (const [id, until] of [...this.routers]) {
      if (until > now) continue;
      report.pagesReclaimed += this.reclaim(id);
      this.routers.delete(id);
      report.routers.push(id);
    }
    for (const [id, g] of [...this.groups]) {
      if (g.leaseUntil > now) continue;
      this.groups.delete(id);
      report.groups.push(id);
    }
    return report;
  }

  async check(): Promise<string[]> {
    const out: string[] = [];
    for (const g of this.groups.values()) {
      const seen = new Set<number>();
      for (const p of g.free) {
        if (p < 1 || p >= g.info.numPages) out.push(`group ${g.info.id}: free page ${p} outside the pool`);
        if (seen.has(p)) out.push(`group ${g.info.id}: page ${p} is free twice`);
        if (g.owner.has(p)) out.push(`group ${g.info.id}: page ${p} is free and owned by ${g.owner.get(p)}`);
        seen.add(p);
      }
      if (seen.size + g.owner.size !== g.info.numPages - 1) {
        out.push(`group ${g.info.id}: free ${seen.size} + owned ${g.owner.size} != ${g.info.numPages - 1}`);
      }
    }
    return out;
  }

  async snapshot(): Promise<GroupSnapshot[]> {
    return [...this.groups.values()].map((g) => {
      const owners: Record<string, number[]> = {};
      for (const [p, r] of g.owner) {
        const list = owners[r] ?? [];
        list.push(p);
        owners[r] = list;
      }
      return { info: { ...g.info }, free: g.free.length, owners };
    });
  }

  private readonly prefix = new Map<string, Map<string, number>>();

  async applyKvEvent(kind: "stored" | "removed", key: string, hashes: readonly string[], _ttlMs?: number) {
    for (const h of hashes) {
      const groups = this.prefix.get(h) ?? new Map<string, number>();
      const n = (groups.get(key) ?? 0) + (kind === "stored" ? 1 : -1);
      if (n > 0) groups.set(key, n);
      else groups.delete(key);
      if (groups.size > 0) this.prefix.set(h, groups);
      else this.prefix.delete(h);
    }
  }

  async prefixLookup(hashes: readonly string[]): Promise<Record<string, number>> {
    const runs: Record<string, number> = {};
    let alive = [...(this.prefix.get(hashes[0] ?? "")?.keys() ?? [])];
    for (let i = 0; i < hashes.length && alive.length > 0; i++) {
      alive = alive.filter((g) => this.prefix.get(hashes[i]!)?.has(g));
      for (const g of alive) runs[g] = i + 1;
    }
    return runs;
  }

  async prefixDump(): Promise<Map<string, Record<string, number>>> {
    return new Map([...this.prefix].map(([h, groups]) => [h, Object.fromEntries(groups)]));
  }

  async close(): Promise<void> {}

  private reclaim(routerId: string): number {
    let n = 0;
    for (const g of this.groups.values()) {
      for (const [p, r] of [...g.owner]) {
        if (r !== routerId) continue;
        g.owner.delete(p);
        g.free.push(p);
        n++;
      }
    }
    return n;
  }
}
