// The router's share of one group's page pool: pages it claimed from the ledger in extents. The scheduler allocates
// from it synchronously; the group loop tops it up before a plan when it runs short and hands surplus pages back in
// batches, so the ledger sees one command per extent, not one per step or token.
import type { PageLedger } from "../cluster/ledger.js";
import type { PagePoolLike } from "./pages.js";
import type { PrefixCachingPool } from "./prefix-cache.js";
import type { Scheduler } from "./scheduler.js";

export class LeasedPagePool implements PagePoolLike {
  private readonly freeList: number[] = [];
  private readonly freeSet = new Set<number>();
  private readonly owned = new Set<number>();

  get free(): number {
    return this.freeList.length;
  }

  get total(): number {
    return this.owned.size;
  }

  canAllocate(n: number): boolean {
    return n <= this.freeList.length;
  }

  isFree(page: number): boolean {
    return this.freeSet.has(page);
  }

  owns(page: number): boolean {
    return this.owned.has(page);
  }

  ownedPages(): number[] {
    return [...this.owned];
  }

  allocate(n: number): number[] {
    if (n > this.freeList.length) throw new RangeError(`asked for ${n} pages, ${this.freeList.length} free`);
    const out = this.freeList.splice(this.freeList.length - n, n);
    for (const p of out) this.freeSet.delete(p);
    return out;
  }

  release(pages: readonly number[]): void {
    for (const p of pages) {
      if (!this.owned.has(p)) throw new RangeError(`page ${p} is not leased to this router`);
      if (this.freeSet.has(p)) throw new Error(`page ${p} released twice`);
      this.freeSet.add(p);
      this.freeList.push(p);
    }
  }

  /** Pages just claimed from the ledger. */
  add(pages: readonly number[]): void {
    for (const p of pages) {
      if (this.owned.has(p)) throw new Error(`page ${p} claimed twice`);
      this.owned.add(p);
      this.freeSet.add(p);
      this.freeList.push(p);
    }
  }

  /** Takes up to n free pages out of the pool (to give back to the ledger). */
  takeFree(n: number): number[] {
    const out = this.freeList.splice(0, Math.min(n, this.freeList.length));
    for (const p of out) {
      this.freeSet.delete(p);
      this.owned.delete(p);
    }
    return out;
  }
}

export interface LedgerPagesOptions {
  /** Pages per claim; surplus above two extents goes back to the ledger. */
  extentPages: number;
  /** How long a sequence may wait for pages the ledger cannot give before it fails with UNAVAILABLE. */
  starveMs: number;
  /** Unreferenced prefix-cache blocks an idle router keeps; the rest go back to the ledger. */
  cacheKeepPages: number;
  /** The pages were all claimed up front and stay (the embedded default: one router, one ledger of its own). */
  holdAll?: boolean;
}

export interface LedgerCounters {
  claims: number;
  releases: number;
}

/** Keeps one group's LeasedPagePool supplied from the ledger (see WorkerGroup's PageSource). */
export class LedgerPages {
  readonly pool = new LeasedPagePool();
  readonly counters: LedgerCounters = { claims: 0, releases: 0 };
  private starvedSince: number | undefined;
  private releasing: Promise<void> = Promise.resolve();
  /** Why the last claim gave nothing (for the message of requests that starve). */
  lastError: string | undefined;
  /** The prefix cache over `pool`, when caching is on. */
  cache: PrefixCachingPool | undefined;

  constructor(
    private readonly ledger: PageLedger,
    private readonly routerId: () => string,
    readonly groupId: string,
    readonly epoch: number,
    private readonly opts: LedgerPagesOptions,
  ) {}

  /** Before a plan: claims what the scheduler is short of (at least an extent) when it is short. */
  async prepare(s: Scheduler): Promise<void> {
    if (this.opts.holdAll) return;
    const short = s.pagesShort();
    const low = this.pool.free < this.opts.extentPages / 2 && s.hasWork();
    if (short === 0 && !low) return;
    const want = Math.max(short, this.opts.extentPages);
    try {
      this.counters.claims++;
      const got = await this.ledger.claim(this.routerId(), this.groupId, this.epoch, want);
      this.pool.add(got);
      this.lastError = got.length === 0 && short > 0 ? `group ${this.groupId} has no free pages` : undefined;
    } catch (e) {
      this.lastError = (e as Error).message;
    }
  }

  /**
   * No plan could be made although sequences wait: returns the ids to fail once they have waited starveMs for
   * pages (the caller fails them with UNAVAILABLE), else [] and the loop retries shortly.
   */
  starved(s: Scheduler): number[] {
    const now = Date.now();
    this.starvedSince ??= now;
    if (now - this.starvedSince < this.opts.starveMs) return [];
    this.starvedSince = undefined;
    return [...s.waitingIds()];
  }

  /** After a plan: hands surplus free pages back; when the group is idle, all of them. */
  trim(s: Scheduler): void {
    this.starvedSince = undefined;
    if (this.opts.holdAll) return;
    if (!s.hasWork()) this.cache?.evictDownTo(this.opts.cacheKeepPages);
    const keep = s.hasWork() ? 2 * this.opts.extentPages : 0;
    if (this.pool.free <= keep) return;
    const pages = this.pool.takeFree(this.pool.free - (s.hasWork() ? this.opts.extentPages : 0));
    this.counters.releases++;
    this.releasing = this.releasing
      .then(() => this.ledger.release(this.routerId(), this.groupId, this.epoch, pages))
      .then(
        () => undefined,
        // The ledger is away: the pages are still ours there, so they go back into the pool for a later trim.
        () => this.pool.add(pages),
      );
  }

  /** Waits for releases in flight (shutdown, tests). */
  flush(): Promise<void> {
    return this.releasing;
  }
}
