// The page-ownership ledger of the cluster: which KV pages of which worker group belong to which router. Two
// implementations with the same semantics: MemoryLedger (the embedded default, one process) and RedisLedger (the
// cluster, every change one Lua script). See docs/cluster-state.md for the model and the Redis key layout.
//
// Granularity: a router claims pages of a group in extents and hands them to its sequences locally, so the step
// loop never waits on the ledger. The ledger records page -> router; page -> sequence stays in the router that
// owns the page (its scheduler checks that no page is held by two sequences).
import { TpserveError } from "../common/errors.js";

export interface GroupSpec {
  /** Stable name of the group (e.g. "g1"); a restart keeps the name and gets a new epoch. */
  id: string;
  /** gRPC address of the group leader (host:port). */
  address: string;
  /** KV pool size including the reserved page 0. */
  numPages: number;
  blockSize: number;
}

export interface GroupInfo extends GroupSpec {
  /** Grows every time the group registers; plans carry it and the worker rejects any other (fencing). */
  epoch: number;
}

export interface SweepReport {
  /** Routers whose lease had expired; their pages went back to the free lists. */
  routers: string[];
  pagesReclaimed: number;
  /** Groups whose lease had expired; their pools were dropped. */
  groups: string[];
}

export interface GroupSnapshot {
  info: GroupInfo;
  free: number;
  /** router id -> pages it owns in this group */
  owners: Record<string, number[]>;
}

export interface PageLedger {
  /** "memory" or "redis". */
  readonly kind: string;
  /**
   * Registers (or re-registers) a group: a new epoch (> every earlier one of this id, and >= minEpoch), a fresh
   * pool with every page free, and a lease of ttlMs.
   */
  registerGroup(spec: GroupSpec, ttlMs: number, minEpoch?: number): Promise<GroupInfo>;
  /** Extends the group's lease. False: the group is gone or has another epoch (the caller must re-register). */
  renewGroup(id: string, epoch: number, ttlMs: number): Promise<boolean>;
  /** Deregisters the group if it still has this epoch: its pool is dropped. */
  removeGroup(id: string, epoch: number): Promise<void>;
  listGroups(): Promise<GroupInfo[]>;

  registerRouter(routerId: string, ttlMs: number): Promise<void>;
  /** Extends the router's lease. False: the lease had expired (its pages may have been reclaimed). */
  renewRouter(routerId: string, ttlMs: number): Promise<boolean>;
  /** Releases every page the router owns and forgets it (a clean shutdown). */
  removeRouter(routerId: string): Promise<void>;

  /**
   * Atomically moves up to `n` free pages of the group to the router. Fewer (possibly none) when the pool is
   * short. Throws LedgerError ROUTER_LEASE_LOST or GROUP_EPOCH_STALE.
   */
  claim(routerId: string, groupId: string, epoch: number, n: number): Promise<number[]>;
  /** Atomically returns the router's pages to the free list; pages it does not own are ignored. Returns the count. */
  release(routerId: string, groupId: string, epoch: number, pages: readonly number[]): Promise<number>;

  /** Reclaims the pages of routers whose lease expired and drops groups whose lease expired. Idempotent. */
  sweep(): Promise<SweepReport>;
  /** Atomic consistency check: every page of every pool is either free once or owned once. Returns violations. */
  check(): Promise<string[]>;
  snapshot(): Promise<GroupSnapshot[]>;
  close(): Promise<void>;

  /** Cluster prefix index: applies a batch of KV events of one group ("group@epoch"). */
  applyKvEvent(kind: "stored" | "removed", groupKey: string, hashes: readonly string[], ttlMs: number): Promise<void>;
  /** Cluster prefix index: for each "group@epoch", how many leading blocks of `hashes` it holds. */
  prefixLookup(hashes: readonly string[]): Promise<Record<string, number>>;
  /** Cluster prefix index, all of it: block hash -> "group@epoch" -> routers holding it (a router's cold start). */
  prefixDump(): Promise<Map<string, Record<string, number>>>;
}

export type LedgerErrorCode = "ROUTER_LEASE_LOST" | "GROUP_EPOCH_STALE" | "LEDGER_UNAVAILABLE";

export class LedgerError extends TpserveError {
  constructor(
    readonly ledgerCode: LedgerErrorCode,
    message: string,
  ) {
    super(ledgerCode, message);
  }
}

export function validateGroupSpec(spec: GroupSpec): void {
  if (!/^[A-Za-z0-9_.:-]{1,128}$/.test(spec.id)) {
    throw new TypeError(`group id "${spec.id}" must be 1-128 characters of A-Z a-z 0-9 _ . : -`);
  }
  if (!Number.isInteger(spec.numPages) || spec.numPages < 2) {
    throw new RangeError(`group ${spec.id}: numPages must be an integer >= 2, got ${spec.numPages}`);
  }
}
