// A router as a member of the cluster: it holds a lease in the page ledger, renews it, sweeps expired leases,
// and finds worker groups at run time (a new group adds capacity without a restart; a group that leaves or
// restarts with a new epoch is taken out of service and its requests fail with UNAVAILABLE).
//
// Lease loss: a router that could not renew its lease for a whole TTL (Redis away) or is told it expired stops
// using every page it holds (its groups are retired, in-flight requests fail with UNAVAILABLE), gives up its old
// id and registers again under a new one. Until then it keeps serving on the pages it holds.
import { randomUUID } from "node:crypto";
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { type ControlBus, subjects } from "../cluster/bus.js";
import type { ClusterConfig } from "../cluster/config.js";
import type { GroupInfo, PageLedger } from "../cluster/ledger.js";
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import { protos } from "../common/proto.js";
import { describeFields, groupMismatch } from "./admission.js";
import type { WorkerGroup } from "./group.js";
import { LedgerPages } from "./leased-pages.js";
import { groupKey, type KvEvent } from "./prefix-index.js";
import type { Router } from "./server.js";

export interface ClusterOptions {
  /** Pages per claim from the ledger. */
  extentPages: number;
  /** How long a request may wait for pages the ledger cannot give before it fails. */
  starveMs: number;
  /** Unreferenced prefix-cache blocks an idle router keeps leased. */
  cacheKeepPages: number;
}

/** A worker group's message on tpserve.<cluster>.worker.* (docs/control-plane.md). */
export interface WorkerEvent {
  group: string;
  epoch: number;
  address: string;
  sequences?: number;
}

interface Member {
  info: GroupInfo;
  client: WorkerClient;
  group: WorkerGroup;
  pages: LedgerPages;
}

export function workerClient(address: string): WorkerClient {
  return new (protos().worker.tpserve.worker.v1.Worker)(address, grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
  });
}

export function describeWorker(client: WorkerClient, deadlineMs: number): Promise<DescribeResponse__Output> {
  return new Promise((resolve, reject) => {
    client.waitForReady(Date.now() + deadlineMs, (err) => {
      if (err) return reject(new Error(`worker not reachable: ${err.message}`));
      client.Describe({}, (e, d) => (e || !d ? reject(e ?? new Error("empty Describe")) : resolve(d)));
    });
  });
}

export class RouterCluster {
  private base = `router-${randomUUID().slice(0, 8)}`;
  private generation = 0;
  routerId = "";
  private readonly members = new Map<string, Member>();
  /** Groups refused at admission (groupMismatch), by id: the epoch refused. */
  private readonly refused = new Map<string, number>();
  private router: Router | undefined;
  private timers: NodeJS.Timeout[] = [];
  private lastRenewOk = Date.now();
  private registered = false;
  private busy = false;
  private closed = false;
  private renewing: Promise<void> | undefined;
  /** Last heartbeat per group id ("id@epoch" -> ms), from the control bus. */
  private readonly lastSeen = new Map<string, number>();
  private unsubscribe: (() => void) | undefined;
  /** Sweeps that reclaimed something, for logs and tests. */
  readonly sweeps: { at: number; routers: string[]; pages: number; groups: string[] }[] = [];

  constructor(
    readonly ledger: PageLedger,
    private readonly cfg: ClusterConfig,
    private readonly opts: ClusterOptions,
    private readonly log: Logger,
    /** The control bus (NATS): register/deregister trigger discovery at once, drain and heartbeats are heeded. */
    readonly bus: ControlBus | null = null,
  ) {}

  /** Registers the router's lease and waits until at least one group is known; returns its Describe. */
  async join(waitMs: number): Promise<{ info: GroupInfo; desc: DescribeResponse__Output }> {
    await this.register();
    const until = Date.now() + waitMs;
    for (;;) {
      const groups = await this.ledger.listGroups().catch(() => []);
      for (const g of groups) {
        try {
          const desc = await describeWorker(workerClient(g.address), 5000);
          return { info: g, desc };
        } catch {
          // not reachable yet; try the next one or the next round
        }
      }
      if (Date.now() > until) {
        throw new Error(`no worker group registered in the ledger within ${waitMs} ms (is a worker running?)`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** KV events waiting to be written to the Redis prefix index (this router is one of the indexers). */
  private indexQueue: { kind: "stored" | "removed"; key: string; hashes: string[] }[] = [];

  /** Starts renewing, sweeping and discovering for `router`. */
  start(router: Router): void {
    this.router = router;
    if (this.bus) this.startKvEvents(router, this.bus);
    const renewMs = Math.max(20, Math.floor(this.cfg.leaseTtlMs / 3));
    this.timers.push(setInterval(() => void this.renew(), renewMs));
    this.timers.push(setInterval(() => void this.tick(), this.cfg.sweepMs));
    if (this.bus) {
      this.unsubscribe = this.bus.subscribe(subjects(this.cfg.cluster).workerAll, (d, subject) =>
        this.onWorkerEvent(subject.slice(subject.lastIndexOf(".") + 1), d as WorkerEvent),
      );
      this.timers.push(setInterval(() => this.checkHeartbeats(), renewMs));
    }
    for (const t of this.timers) t.unref();
    void this.tick();
  }

  /**
   * KV events: this router's go out on the bus; every router applies the others' to its own prefix index; and one
   * router of the queue group "indexer" writes each batch to the Redis prefix index (at most every 100 ms).
   */
  private startKvEvents(router: Router, bus: ControlBus): void {
    const subj = subjects(this.cfg.cluster);
    // Cold start: what the cluster already caches, from the Redis index; events keep it current from here on.
    this.ledger.prefixDump().then(
      (dump) => router.prefixIndex.seed(dump),
      (e: Error) => this.log.warn({ error: e.message }, "prefix index not seeded"),
    );
    router.kvEventSink = (kind, e) =>
      bus.publish(kind === "stored" ? subj.kvStored : subj.kvRemoved, { ...e, router: this.routerId });
    const kindOf = (subject: string) => (subject.endsWith(".stored") ? "stored" : "removed");
    const offAll = bus.subscribe(subj.kvAll, (d, subject) => {
      const e = d as KvEvent;
      if (e.router !== this.routerId) router.prefixIndex.apply(kindOf(subject), e);
    });
    const offIndex = bus.subscribe(
      subj.kvAll,
      (d, subject) => {
        const e = d as KvEvent;
        this.indexQueue.push({ kind: kindOf(subject), key: groupKey(e.group, e.epoch), hashes: e.hashes });
      },
      { queue: "indexer" },
    );
    const offGone = bus.subscribe(subj.routerGone, (d) => {
      for (const id of (d as { routers: string[] }).routers)
        if (id !== this.routerId) router.prefixIndex.dropRouter(id);
    });
    const flush = setInterval(() => void this.flushIndex(), 100);
    flush.unref();
    this.timers.push(flush);
    const prev = this.unsubscribeKv;
    this.unsubscribeKv = () => {
      prev?.();
      offAll();
      offIndex();
      offGone();
    };
  }

  private unsubscribeKv: (() => void) | undefined;

  /** Routers whose caches are gone (swept, lease lost, closed): every router drops their prefix-index entries. */
  private routersGone(ids: string[]): void {
    for (const id of ids) if (id !== this.routerId) this.router?.prefixIndex.dropRouter(id);
    this.bus?.publish(subjects(this.cfg.cluster).routerGone, { routers: ids });
  }

  private flushing: Promise<void> = Promise.resolve();

  /** Writes queued KV events to the Redis index, in order (one flush at a time). */
  private flushIndex(): Promise<void> {
    this.flushing = this.flushing.then(async () => {
      const batch = this.indexQueue;
      this.indexQueue = [];
      const ttl = Math.max(60_000, 20 * this.cfg.leaseTtlMs);
      for (const b of batch) await this.ledger.applyKvEvent(b.kind, b.key, b.hashes, ttl).catch(() => undefined);
    });
    return this.flushing;
  }

  private onWorkerEvent(kind: string, e: WorkerEvent): void {
    const key = `${e.group}@${e.epoch}`;
    const m = this.members.get(e.group);
    const mine = m !== undefined && m.info.epoch === e.epoch;
    switch (kind) {
      case "heartbeat":
        this.lastSeen.set(key, Date.now());
        if (mine) m.group.remoteLoad = e.sequences ?? 0;
        if (!m || m.info.epoch !== e.epoch) void this.tick(); // a group we have not admitted (yet)
        break;
      case "register":
        this.lastSeen.set(key, Date.now());
        void this.tick();
        break;
      case "drain":
        if (mine) {
          m.group.draining = true;
          this.log.info({ group: e.group, epoch: e.epoch }, "worker group draining: no new requests");
        }
        break;
      case "deregister":
        this.lastSeen.delete(key);
        if (mine) this.retire(e.group, m, `worker group ${e.group} left the cluster (deregistered)`);
        void this.tick();
        break;
    }
  }

  /** Whether the group's heartbeats (when it sends any) have stopped for longer than the lease TTL. */
  private silent(id: string, epoch: number): boolean {
    const seen = this.lastSeen.get(`${id}@${epoch}`);
    return seen !== undefined && Date.now() - seen > this.cfg.leaseTtlMs;
  }

  private checkHeartbeats(): void {
    for (const [id, m] of this.members) {
      if (this.silent(id, m.info.epoch)) {
        this.retire(id, m, `worker group ${id} sent no heartbeat for ${this.cfg.leaseTtlMs} ms`);
      }
    }
  }

  /** The groups in service and the pages this router leases in each (for the invariant checker and tests). */
  leases(): { groupId: string; epoch: number; owned: number[]; held: Map<number, number>; group: WorkerGroup }[] {
    return [...this.members.values()].map((m) => ({
      groupId: m.info.id,
      epoch: m.info.epoch,
      owned: m.pages.pool.ownedPages(),
      held: m.group.scheduler.heldPages(),
      group: m.group,
    }));
  }

  /**
   * One round: confirm this router's own lease, sweep expired leases, then bring the set of groups in service in line
   * with the ledger. The lease comes first: after the ledger lost its state (a Redis restart) the groups come back
   * at new epochs, and admitting them before the renewal timer notices the lost lease would hand requests to groups
   * that the lease loss retires a moment later.
   */
  async tick(): Promise<void> {
    if (this.busy || this.closed || !this.registered) return;
    this.busy = true;
    try {
      await this.renew();
      if (!this.registered) return;
      const rep = await this.ledger.sweep();
      if (rep.routers.length > 0 || rep.groups.length > 0) {
        this.sweeps.push({ at: Date.now(), routers: rep.routers, pages: rep.pagesReclaimed, groups: rep.groups });
        this.log.warn({ ...rep }, "swept expired leases");
      }
      if (rep.routers.length > 0) this.routersGone(rep.routers);
      await this.discover(await this.ledger.listGroups());
    } catch (e) {
      this.log.warn({ error: (e as Error).message }, "cluster tick failed");
    } finally {
      this.busy = false;
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    this.routersGone([this.routerId]);
    this.unsubscribe?.();
    this.unsubscribeKv?.();
    await this.flushIndex();
    for (const t of this.timers) clearInterval(t);
    for (const m of this.members.values()) await m.pages.flush();
    await this.ledger.removeRouter(this.routerId).catch(() => undefined);
    for (const m of this.members.values()) m.client.close();
    await this.ledger.close();
    await this.bus?.close();
  }

  private async register(): Promise<void> {
    this.routerId = `${this.base}.${++this.generation}`;
    await this.ledger.registerRouter(this.routerId, this.cfg.leaseTtlMs);
    this.lastRenewOk = Date.now();
    this.registered = true;
    this.log.info({ router_id: this.routerId, ledger: this.ledger.kind }, "router joined the cluster");
  }

  /** Renews the lease (or registers again after losing it); one at a time, shared by the timer and tick(). */
  private renew(): Promise<void> {
    this.renewing ??= this.renewOnce().finally(() => {
      this.renewing = undefined;
    });
    return this.renewing;
  }

  private async renewOnce(): Promise<void> {
    if (this.closed) return;
    try {
      if (!this.registered) {
        await this.register();
        return;
      }
      if (await this.ledger.renewRouter(this.routerId, this.cfg.leaseTtlMs)) {
        this.lastRenewOk = Date.now();
        return;
      }
      this.leaseLost(`router lease ${this.routerId} expired; its pages were reclaimed`);
      await this.register();
    } catch (e) {
      if (this.registered && Date.now() - this.lastRenewOk >= this.cfg.leaseTtlMs * 0.9) {
        this.leaseLost(`lost contact with the page ledger for ${this.cfg.leaseTtlMs} ms: ${(e as Error).message}`);
      }
    }
  }

  /** Stops using every leased page: retires all groups (their requests fail with UNAVAILABLE). */
  private leaseLost(reason: string): void {
    this.log.error({ router_id: this.routerId, reason }, "router lease lost");
    const old = this.routerId;
    this.registered = false;
    this.routersGone([old]);
    for (const [id, m] of this.members) this.retire(id, m, `${reason}; retry the request`);
    void this.ledger.removeRouter(old).catch(() => undefined);
  }

  private retire(id: string, m: Member, message: string): void {
    this.members.delete(id);
    this.router?.removeGroup(m.group, message);
    m.client.close();
    // The pages this router leased in the group go back to the ledger (if the group and this lease still exist),
    // one lease TTL later: by then the worker has dropped the closed session and runs none of its plans.
    const pages = m.pages.pool.ownedPages();
    const owner = this.routerId;
    if (pages.length === 0 || !this.registered) return;
    const t = setTimeout(() => {
      void this.ledger.release(owner, id, m.info.epoch, pages).catch(() => undefined);
    }, this.cfg.leaseTtlMs);
    t.unref();
  }

  private async discover(groups: GroupInfo[]): Promise<void> {
    const router = this.router;
    if (!router) return;
    const seen = new Set<string>();
    for (const g of groups) {
      seen.add(g.id);
      const m = this.members.get(g.id);
      if (this.silent(g.id, g.epoch)) continue; // checkHeartbeats retires it; do not bring it back
      if (m) {
        const same = m.info.epoch === g.epoch && m.info.address === g.address;
        if (same && m.group.healthy) continue;
        // A restart (new epoch), or a broken stream to a group that still renews its lease: start afresh.
        this.retire(g.id, m, same ? `worker group ${g.id} stream failed` : `worker group ${g.id} restarted`);
      }
      await this.admit(router, g);
    }
    for (const [id, m] of this.members) {
      if (!seen.has(id)) this.retire(id, m, `worker group ${id} left the cluster (lease expired or deregistered)`);
    }
  }

  private async admit(router: Router, g: GroupInfo): Promise<void> {
    if (this.refused.get(g.id) === g.epoch) return; // its Describe will not change before it restarts
    const client = workerClient(g.address);
    let desc: DescribeResponse__Output;
    try {
      desc = await describeWorker(client, 2000);
    } catch (e) {
      client.close();
      this.log.warn({ group: g.id, error: (e as Error).message }, "worker group not reachable yet");
      return;
    }
    const mismatch = groupMismatch(router, desc);
    if (mismatch) {
      client.close();
      this.refused.set(g.id, g.epoch);
      this.log.error(
        { group: g.id, ...describeFields(desc) },
        `worker group ${g.id} cannot serve with this router: ${mismatch}; not admitted`,
      );
      return;
    }
    const pages = new LedgerPages(this.ledger, () => this.routerId, g.id, g.epoch, this.opts);
    const group = router.addGroup(g.id, client, desc, g.epoch, pages);
    this.members.set(g.id, { info: g, client, group, pages });
    this.log.info({ group: g.id, epoch: g.epoch, address: g.address }, "worker group in service");
  }
}
