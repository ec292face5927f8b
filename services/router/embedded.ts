// The embedded default: each of the router's --workers is a group in an in-memory page ledger (MemoryLedger) that
// only this router uses, so it leases every page of the pool once and keeps them; pages flow through the same
// LedgerPages and LeasedPagePool code as in a cluster, with no lease timers, sweeps or round trips. A group that is
// put back in service (static-groups.ts) gets a ledger of its own again, at the worker's epoch.

import { MemoryLedger } from "../cluster/memory-ledger.js";
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import type { RouterConfig } from "./config.js";
import { LedgerPages } from "./leased-pages.js";
import type { Router } from "./server.js";

const FOREVER = Number.MAX_SAFE_INTEGER / 4;
const ROUTER_ID = "embedded";

/** The group name of a static worker address (a valid ledger group id). */
export function staticGroupName(address: string): string {
  return address.replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 128);
}

/** The whole pool of the worker at `address` (described by `d`), leased once in a ledger of its own. */
export async function staticGroupPages(
  cfg: RouterConfig,
  address: string,
  d: DescribeResponse__Output,
): Promise<{ name: string; epoch: number; pages: LedgerPages }> {
  const ledger = new MemoryLedger();
  await ledger.registerRouter(ROUTER_ID, FOREVER);
  const name = staticGroupName(address);
  const spec = { id: name, address, numPages: d.numPages, blockSize: d.blockSize };
  const info = await ledger.registerGroup(spec, FOREVER, d.epoch);
  const pages = new LedgerPages(ledger, () => ROUTER_ID, name, info.epoch, {
    extentPages: d.numPages,
    starveMs: cfg.pageStarveMs,
    cacheKeepPages: d.numPages,
    holdAll: true,
  });
  pages.pool.add(await ledger.claim(ROUTER_ID, name, info.epoch, d.numPages));
  return { name, epoch: info.epoch, pages };
}

export async function embedStaticGroups(
  router: Router,
  cfg: RouterConfig,
  clients: readonly WorkerClient[],
  descs: readonly DescribeResponse__Output[],
): Promise<void> {
  for (const [i, client] of clients.entries()) {
    const d = descs[i]!;
    const { name, epoch, pages } = await staticGroupPages(cfg, cfg.workers[i] ?? `worker-${i}`, d);
    router.addGroup(name, client, d, epoch, pages);
  }
}
