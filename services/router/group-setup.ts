// How the router builds a group's scheduler: over the whole pool or the pages leased from the cluster ledger,
// with prefix caching (a PrefixCachingPool whose KV events feed the prefix index) when it is on; and how it picks
// a group for a prompt (prefix-aware within the load bound, else least loaded).
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { RouterConfig } from "./config.js";
import type { WorkerGroup } from "./group.js";
import type { LedgerPages } from "./leased-pages.js";
import { PagePool } from "./pages.js";
import { chainHashes, PrefixCachingPool, rootHash } from "./prefix-cache.js";
import { choosePrefixAware, groupKey, KvEventBatcher, type KvEventKind, type PrefixIndex } from "./prefix-index.js";
import { createScheduler, type Scheduler } from "./scheduler.js";

export interface GroupSchedulerHooks {
  /** A batch of KV events of this group's cache. */
  onKvEvents(kind: KvEventKind, hashes: string[]): void;
  /** A request's first admission: its prompt tokens, and how many were cached. */
  onPrefixLookup(promptTokens: number, cachedTokens: number): void;
}

export function createGroupScheduler(
  cfg: RouterConfig,
  d: DescribeResponse__Output,
  pages: LedgerPages | undefined,
  hooks: GroupSchedulerHooks,
): Scheduler {
  const base = pages ? pages.pool : new PagePool(d.numPages);
  const cache = cfg.prefixCache ? new PrefixCachingPool(base) : undefined;
  if (pages) pages.cache = cache;
  if (cache) {
    const batcher = new KvEventBatcher((kind, hashes) => hooks.onKvEvents(kind, hashes));
    cache.onStored = (h) => batcher.add("stored", h);
    cache.onRemoved = (h) => batcher.add("removed", h);
  }
  return createScheduler({
    numPages: d.numPages,
    blockSize: d.blockSize,
    maxBatchTokens: Math.min(cfg.maxBatchTokens, d.maxBatchTokens || cfg.maxBatchTokens),
    maxRunning: cfg.maxRunning,
    decodeSteps: cfg.decodeSteps,
    decodeStepsMax: cfg.decodeStepsMax,
    decodeLookaheadMs: cfg.decodeLookaheadMs,
    pool: cache ?? base,
    ...(cache ? { prefixRoot: rootHash(d.model, d.blockSize) } : {}),
    onPrefixLookup: (queried, hit) => hooks.onPrefixLookup(queried, hit),
  });
}

/**
 * The group for a prompt among the live ones: with prefix caching (a root) and several groups, the one holding the
 * longest run of its leading blocks within the load bound; otherwise the least loaded. `byPrefix` says whether a
 * cached prefix decided.
 */
export function pickGroup(
  groups: readonly WorkerGroup[],
  promptIds: readonly number[] | undefined,
  root: Buffer | undefined,
  index: PrefixIndex,
  loadFactor: number,
): { group: WorkerGroup; byPrefix: boolean } | undefined {
  const live = groups.filter((g) => g.healthy && !g.draining);
  const candidates = live.map((g) => {
    const s = g.scheduler.stats();
    return { group: g, key: groupKey(g.name, g.epoch), load: Math.max(s.running, g.remoteLoad) + s.waiting };
  });
  const bs = live[0]?.scheduler.blockSize ?? 1;
  if (live.length > 1 && root && promptIds && promptIds.length > bs) {
    const runs = index.runs(chainHashes(root, promptIds, bs, Math.floor((promptIds.length - 1) / bs)));
    const group = choosePrefixAware(candidates, runs, loadFactor);
    return group && { group, byPrefix: (runs.get(groupKey(group.name, group.epoch)) ?? 0) > 0 };
  }
  const least = candidates.sort((a, b) => a.load - b.load)[0];
  return least && { group: least.group, byPrefix: false };
}
