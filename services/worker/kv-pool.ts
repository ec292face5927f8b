// How big the worker's KV pool is: pages given (--num-pages), MiB given (--kv-cache-mib, the CPU default), or on a
// GPU as much as fits under --gpu-memory-utilization of the card once the weights are loaded (the engine sizes it
// at finalize). The engine's pages are then split between the router's pool and the worker's own extra pages
// (embeddings), and the ranks of a tensor-parallel group agree on the smallest pool.
import type { Engine, EngineInfo, KvSizing } from "../../native/index.js";
import { ConfigError } from "../common/errors.js";
import type { WorkerConfig } from "./config.js";

/** --kv-cache-mib when it is not given and the pool is not sized from GPU memory (the CPU backend). */
export const DEFAULT_KV_CACHE_MIB = 256;

export type PoolConfig = Pick<WorkerConfig, "numPages" | "kvCacheMiB" | "gpuMemoryUtilization">;

/** Extra engine pages the worker keeps past the router's `routerPages` (a nondecreasing function). */
export type ExtraPages = (routerPages: number) => number;

export type KvPoolPlan =
  /** The engine gets exactly these pages. */
  | { kind: "fixed"; routerPages: number; enginePages: number; source: string }
  /** The engine sizes its pool at finalize (numPages 0, gpuMemoryUtilization `fraction`). */
  | { kind: "gpu-memory"; fraction: number };

/**
 * The pool as the flags ask: --num-pages wins, then an explicit --kv-cache-mib; with neither, a GPU sizes it from
 * --gpu-memory-utilization and the CPU takes DEFAULT_KV_CACHE_MIB. `pageBytes` is the KV bytes of one page.
 */
export function planKvPool(cfg: PoolConfig, onGpu: boolean, pageBytes: number, extra: ExtraPages): KvPoolPlan {
  if (cfg.numPages === 0 && cfg.kvCacheMiB === null && onGpu) {
    return { kind: "gpu-memory", fraction: cfg.gpuMemoryUtilization };
  }
  let routerPages: number;
  let source: string;
  if (cfg.numPages > 0) {
    routerPages = cfg.numPages;
    source = `--num-pages ${cfg.numPages}`;
  } else {
    const mib = cfg.kvCacheMiB ?? DEFAULT_KV_CACHE_MIB;
    routerPages = Math.max(2, Math.floor((mib * 2 ** 20) / pageBytes) + 1);
    source = `--kv-cache-mib ${mib}${cfg.kvCacheMiB === null ? " (default)" : ""}`;
  }
  return { kind: "fixed", routerPages, enginePages: routerPages + extra(routerPages), source };
}

/**
 * The most router pages n (page 0 included) with n + extra(n) <= total, for an engine pool of `total` pages sized
 * from memory. Throws a ConfigError when not even 2 router pages and their extra pages fit.
 */
export function splitPool(total: number, extra: ExtraPages): { routerPages: number; enginePages: number } {
  if (!Number.isInteger(total) || total < 2 + extra(2)) {
    throw new ConfigError(
      `the KV pool sized from GPU memory holds ${total} pages; the worker needs at least ${2 + extra(2)} (2 for the ` +
        `router, page 0 reserved, and ${extra(2)} for embeddings): raise --gpu-memory-utilization or give --num-pages`,
    );
  }
  let lo = 2; // fits
  let hi = total; // n + extra(n) > total for every n above hi
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (mid + extra(mid) <= total) lo = mid;
    else hi = mid - 1;
  }
  return { routerPages: lo, enginePages: lo + extra(lo) };
}

/**
 * The pool of a loaded engine: the plan's pages, or those the engine sized from memory split by splitPool; and the
 * start log's line about it.
 */
export function loadedPool(
  plan: KvPoolPlan,
  info: Pick<EngineInfo, "weightBytes" | "numPages" | "kvSizing">,
  extra: ExtraPages,
  blockSize: number,
  pageBytes: number,
): { routerPages: number; enginePages: number; line: string } {
  const pages = plan.kind === "fixed" ? plan : splitPool(info.numPages, extra);
  const line = describeKvPool({
    routerPages: pages.routerPages,
    enginePages: pages.enginePages,
    blockSize,
    pageBytes,
    info,
    sizing: info.kvSizing,
    ...(plan.kind === "fixed" ? { source: plan.source } : {}),
  });
  return { routerPages: pages.routerPages, enginePages: pages.enginePages, line };
}

/** What agreePages needs of a tensor-parallel group. */
export interface PageGroup {
  readonly world: number;
  allGather(x: Uint8Array): Promise<Uint8Array>;
}

/**
 * Every rank's engine pages, all-gathered; resolves to the smallest (each rank calls it once, at the same point).
 * Ranks that sized their pools from their own GPU's free memory may differ; the group must use one page count.
 */
export async function agreePages(group: PageGroup, pages: number): Promise<number> {
  const mine = new Uint8Array(4);
  new DataView(mine.buffer).setUint32(0, pages, true);
  const all = await group.allGather(mine);
  if (all.length !== 4 * group.world) {
    throw new Error(`page agreement: all-gather returned ${all.length} bytes, expected ${4 * group.world}`);
  }
  const view = new DataView(all.buffer, all.byteOffset, all.byteLength);
  let min = pages;
  for (let r = 0; r < group.world; r++) min = Math.min(min, view.getUint32(4 * r, true));
  return min;
}

/**
 * A tensor-parallel rank after loading: agrees with the other ranks on the engine pages and, when some rank has
 * fewer, lowers this engine to them and splits them again; null when this rank's pool is already the smallest.
 */
export async function agreeGroupPool(
  group: PageGroup,
  engine: Pick<Engine, "limitPages">,
  enginePages: number,
  extra: ExtraPages,
): Promise<{ routerPages: number; enginePages: number } | null> {
  const agreed = await agreePages(group, enginePages);
  if (agreed >= enginePages) return null;
  engine.limitPages(agreed);
  return splitPool(agreed, extra);
}

const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;

/** One line for the start log: how big the pool is and why. */
export function describeKvPool(o: {
  routerPages: number;
  enginePages: number;
  blockSize: number;
  pageBytes: number;
  info: Pick<EngineInfo, "weightBytes" | "numPages">;
  sizing?: KvSizing | undefined;
  source?: string;
}): string {
  const tokens = (o.routerPages - 1) * o.blockSize;
  const extra = o.enginePages - o.routerPages;
  const head =
    `KV pool: ${o.routerPages} pages = ${tokens} tokens, ${gib(o.routerPages * o.pageBytes)}` +
    (extra > 0 ? ` (+ ${extra} pages for embeddings)` : "");
  const s = o.sizing;
  if (!s) return `${head}: ${o.source ?? "given"}`;
  return (
    `${head}: ${Math.round(s.fraction * 100)}% of ${gib(s.totalBytes)} (--gpu-memory-utilization ${s.fraction}), ` +
    `minus ${gib(s.usedBytes)} in use after loading (weights ${gib(o.info.weightBytes)}), ` +
    `minus ${gib(s.reserveBytes)} reserved for workspaces and CUDA graphs`
  );
}
