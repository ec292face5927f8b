// The embedded default: the router's --workers are groups in an in-memory page ledger (MemoryLedger) that only this
// router uses, so it leases every page of every pool once and keeps them; pages flow through the same LedgerPages
// and LeasedPagePool code as in a cluster, with no lease timers, sweeps or round trips.

import { MemoryLedger } from "../cluster/memory-ledger.js";
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import type { RouterConfig } from "./config.js";
import { LedgerPages } from "./leased-pages.js";
import type { Router } from "./server.js";

const FOREVER = Number.MAX_SAFE_INTEGER / 4;
const ROUTER_ID = "embedded";

export async function embedStaticGroups(
  router: Router,
  cfg: RouterConfig,
  clients: readonly WorkerClient[],
  descs: readonly DescribeResponse__Output[],
): Promise<MemoryLedger> {
  const ledger = new MemoryLedger();
  await ledger.registerRouter(ROUTER_ID, FOREVER);
  for (const [i, client] of clients.entries()) {
    const d = descs[i]!;
    const address = cfg.workers[i] ?? `worker-${i}`;
    const name = address.replace(/[^A-Za-z0-9_.:-]/g, "_").slice(0, 128); // a valid group id
    const spec = { id: name, address, numPages: d.numPages, blockSize: d.blockSize };
    const info = await ledger.registerGroup(spec, FOREVER, d.epoch);
    const pages = new LedgerPages(ledger, () => ROUTER_ID, name, info.epoch, {
      extentPages: d.numPages,
      starveMs: cfg.pageStarveMs,
      cacheKeepPages: d.numPages,
      holdAll: true,
    });
    pages.pool.add(await ledger.claim(ROUTER_ID, name, info.epoch, d.numPages));
    router.addGroup(name, client, d, info.epoch, pages);
  }
  return ledger;
}
