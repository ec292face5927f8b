// The cluster invariant checker: what tests run throughout a multi-router run. The router-side part is exact (it
// reads in-process state synchronously); the ledger-side part is one atomic script.
import type { PageLedger } from "../cluster/ledger.js";
import type { RouterCluster } from "./cluster.js";

/**
 * Router side: within a router every page a sequence holds is leased to that router and held by one sequence
 * only (the scheduler's own check); across routers no page of a group's epoch is leased to two of them.
 */
export function routerViolations(clusters: readonly RouterCluster[]): string[] {
  const out: string[] = [];
  const leasedBy = new Map<string, string>(); // "group@epoch/page" -> router id
  for (const c of clusters) {
    for (const l of c.leases()) {
      const bad = l.group.scheduler.checkInvariants();
      if (bad) out.push(`router ${c.routerId} group ${l.groupId}: ${bad}`);
      const owned = new Set(l.owned);
      for (const [page, seq] of l.held) {
        if (!owned.has(page)) out.push(`router ${c.routerId}: sequence ${seq} holds page ${page} it has not leased`);
      }
      for (const p of l.owned) {
        const key = `${l.groupId}@${l.epoch}/${p}`;
        const other = leasedBy.get(key);
        if (other !== undefined) out.push(`page ${key} is leased to routers ${other} and ${c.routerId}`);
        leasedBy.set(key, c.routerId);
      }
    }
  }
  return out;
}

/** Both parts. */
export async function clusterViolations(clusters: readonly RouterCluster[], ledger: PageLedger): Promise<string[]> {
  return [...routerViolations(clusters), ...(await ledger.check())];
}
