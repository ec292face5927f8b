// Two routers sharing two worker groups through one page ledger (the in-memory one, all in this process): pages
// come in extents, no page is leased twice, every request gives the ids it gives alone, and the ledger is empty
// when the routers are idle. The same scenario against redis-server and worker processes is in redis-cluster.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterConfigFromEnv } from "../../services/cluster/config.js";
import { MemoryLedger } from "../../services/cluster/memory-ledger.js";
import { type GenerateOutcome, generate } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import { clusterViolations } from "../../services/router/cluster-invariants.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import { startWorker, type WorkerHandle } from "../../services/worker/server.js";
import { type RouterNode, startRouterNode, waitFor } from "../helpers/multi-router.js";
import { mixedRequests } from "../helpers/requests.js";

describe("two routers, two groups, in-memory ledger", () => {
  const ledger = new MemoryLedger();
  const cluster = clusterConfigFromEnv({ TPSERVE_LEASE_TTL_MS: "3000", TPSERVE_SWEEP_MS: "100" });
  const workers: WorkerHandle[] = [];
  const routers: RouterNode[] = [];
  beforeAll(async () => {
    for (const g of ["g1", "g2"]) {
      const cfg = { ...workerConfigFromFlags(new Flags([])), threads: 1, numPages: 96, group: g, cluster, port: 0 };
      workers.push(await startWorker(cfg, undefined, { ledger }));
    }
    for (let i = 0; i < 2; i++) {
      routers.push(
        await startRouterNode(
          cluster,
          // Fixed 4-step decode plans (no adaptive lookahead): the claims-per-plan bound below assumes them.
          { pageExtent: 8, maxBatchTokens: 128, decodeSteps: 4, decodeLookaheadMs: 0, prefixCacheKeepPages: 0 },
          ledger,
        ),
      );
    }
    await waitFor(() => routers.every((r) => r.handle.router.groups.length === 2), "routers to find both groups");
  });
  afterAll(async () => {
    for (const r of routers) await r.close();
    for (const w of workers) await w.close();
  });

  it("serves concurrent mixed requests through both routers with the solo ids and no page leased twice", async () => {
    const reqs = mixedRequests(40, 7);
    const solo = new Map<string, GenerateOutcome>();
    for (const r of reqs) {
      const key = JSON.stringify(r);
      if (!solo.has(key)) solo.set(key, await generate(routers[0]!.client, r));
    }
    const clusters = routers.map((r) => r.handle.cluster!);
    const violations: string[] = [];
    let checks = 0;
    let running = true;
    const checker = (async () => {
      while (running) {
        violations.push(...(await clusterViolations(clusters, ledger)));
        checks++;
        await new Promise((r) => setTimeout(r, 5));
      }
    })();
    const out = await Promise.all(reqs.map((r, i) => generate(routers[i % 2]!.client, r)));
    running = false;
    await checker;
    for (const [i, o] of out.entries()) expect(o.ids, `request ${i}`).toEqual(solo.get(JSON.stringify(reqs[i]))!.ids);
    expect(violations).toEqual([]);
    expect(checks).toBeGreaterThan(5);
    // Both groups served, and pages came in extents: far fewer claims than steps.
    const leases = clusters.flatMap((c) => c.leases());
    const steps = leases.reduce((n, l) => n + l.group.scheduler.stats().steps, 0);
    const claims = leases.reduce((n, l) => n + (l.group.ledgerPages?.counters.claims ?? 0), 0);
    expect(new Set(leases.filter((l) => l.group.scheduler.stats().steps > 0).map((l) => l.groupId)).size).toBe(2);
    expect(claims).toBeGreaterThan(0);
    expect(claims).toBeLessThan(steps / 2);
    // Idle routers hand every page back.
    await waitFor(
      async () => (await ledger.snapshot()).every((g) => Object.keys(g.owners).length === 0),
      "ledger empty",
    );
    expect(await ledger.check()).toEqual([]);
  });
});
