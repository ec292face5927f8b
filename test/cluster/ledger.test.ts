// The PageLedger contract, run against the in-memory ledger and against a real redis-server: atomic claims and
// releases, leases that expire, the sweeper, epochs that only grow, and the consistency check.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterConfigFromEnv } from "../../services/cluster/config.js";
import type { PageLedger } from "../../services/cluster/ledger.js";
import { MemoryLedger } from "../../services/cluster/memory-ledger.js";
import { RedisLedger } from "../../services/cluster/redis-ledger.js";
import { type ServerProcess, startRedis } from "../helpers/servers.js";

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const G = { id: "g1", address: "127.0.0.1:1", numPages: 65, blockSize: 16 };

function contract(name: string, make: () => Promise<PageLedger>) {
  describe(`${name} ledger`, () => {
    let ledger: PageLedger;
    beforeAll(async () => {
      ledger = await make();
    });
    afterAll(async () => ledger.close());

    it("claims pages atomically: no page goes to two routers", async () => {
      const g = await ledger.registerGroup(G, 10_000);
      await ledger.registerRouter("rA", 10_000);
      await ledger.registerRouter("rB", 10_000);
      const claims = await Promise.all(
        Array.from({ length: 20 }, (_, i) => ledger.claim(i % 2 ? "rA" : "rB", "g1", g.epoch, 5)),
      );
      const all = claims.flat();
      expect(all.length).toBe(64); // 20 x 5 asked, 64 pages exist
      expect(new Set(all).size).toBe(64);
      expect(all.every((p) => p >= 1 && p <= 64)).toBe(true);
      expect(await ledger.claim("rA", "g1", g.epoch, 3)).toEqual([]);
      expect(await ledger.check()).toEqual([]);
      // Releasing another router's pages is ignored.
      const aPages = claims.filter((_, i) => i % 2 === 1).flat();
      expect(await ledger.release("rB", "g1", g.epoch, aPages)).toBe(0);
      expect(await ledger.release("rA", "g1", g.epoch, aPages)).toBe(aPages.length);
      const snap = await ledger.snapshot();
      expect(snap[0]!.free).toBe(aPages.length);
      expect(snap[0]!.owners["rA"]).toBeUndefined();
      expect(snap[0]!.owners["rB"]!.length).toBe(64 - aPages.length);
      await ledger.removeRouter("rB");
      expect((await ledger.snapshot())[0]!.free).toBe(64);
      await ledger.removeRouter("rA");
      expect(await ledger.check()).toEqual([]);
    });

    it("fences: claims need a live router lease and the current group epoch", async () => {
      const g1 = await ledger.registerGroup(G, 10_000);
      await ledger.registerRouter("rC", 10_000);
      const pages = await ledger.claim("rC", "g1", g1.epoch, 4);
      const g2 = await ledger.registerGroup(G, 10_000);
      expect(g2.epoch).toBeGreaterThan(g1.epoch);
      await expect(ledger.claim("rC", "g1", g1.epoch, 1)).rejects.toMatchObject({ code: "GROUP_EPOCH_STALE" });
      expect(await ledger.release("rC", "g1", g1.epoch, pages)).toBe(0); // the old pool is gone
      expect(await ledger.renewGroup("g1", g1.epoch, 1000)).toBe(false);
      expect(await ledger.renewGroup("g1", g2.epoch, 1000)).toBe(true);
      await expect(ledger.claim("nobody", "g1", g2.epoch, 1)).rejects.toMatchObject({ code: "ROUTER_LEASE_LOST" });
      // minEpoch: a worker that remembers a higher epoch (the ledger lost its state) never goes back.
      const g3 = await ledger.registerGroup(G, 10_000, g2.epoch + 10);
      expect(g3.epoch).toBe(g2.epoch + 10);
      await ledger.removeRouter("rC");
    });

    it("sweeps: an expired router's pages come back, an expired group is dropped", async () => {
      const g = await ledger.registerGroup(G, 10_000);
      await ledger.registerRouter("rDead", 150);
      await ledger.registerRouter("rLive", 10_000);
      const dead = await ledger.claim("rDead", "g1", g.epoch, 10);
      await ledger.claim("rLive", "g1", g.epoch, 5);
      expect((await ledger.sweep()).routers).toEqual([]);
      await sleep(250);
      expect(await ledger.renewRouter("rDead", 1000)).toBe(false);
      const rep = await ledger.sweep();
      expect(rep.routers).toEqual(["rDead"]);
      expect(rep.pagesReclaimed).toBe(dead.length);
      const snap = (await ledger.snapshot()).find((s) => s.info.id === "g1")!;
      expect(snap.free).toBe(64 - 5);
      expect(Object.keys(snap.owners)).toEqual(["rLive"]);
      expect(await ledger.check()).toEqual([]);
      // A group whose worker stops renewing is dropped by the next sweep.
      const g2 = await ledger.registerGroup({ ...G, id: "g2" }, 150);
      expect((await ledger.listGroups()).map((x) => x.id).sort()).toEqual(["g1", "g2"]);
      await sleep(250);
      expect((await ledger.sweep()).groups).toEqual(["g2"]);
      expect((await ledger.listGroups()).map((x) => x.id)).toEqual(["g1"]);
      await expect(ledger.claim("rLive", "g2", g2.epoch, 1)).rejects.toMatchObject({ code: "GROUP_EPOCH_STALE" });
      await ledger.removeGroup("g1", g.epoch);
      await ledger.removeRouter("rLive");
      expect(await ledger.listGroups()).toEqual([]);
    });
  });
}

contract("in-memory", async () => new MemoryLedger());

let redis: ServerProcess | undefined;
contract("Redis", async () => {
  redis = await startRedis();
  return RedisLedger.connect(clusterConfigFromEnv({ REDIS_URL: redis.url, TPSERVE_CLUSTER: "ledgertest" }));
});

describe("Redis ledger without Redis", () => {
  it("fails fast with LEDGER_UNAVAILABLE instead of hanging, and works again after a restart", async () => {
    const r = redis!;
    const ledger = await RedisLedger.connect(clusterConfigFromEnv({ REDIS_URL: r.url }));
    try {
      await ledger.registerRouter("r1", 10_000);
      await r.stop();
      const t0 = Date.now();
      await expect(ledger.renewRouter("r1", 10_000)).rejects.toMatchObject({ code: "LEDGER_UNAVAILABLE" });
      expect(Date.now() - t0).toBeLessThan(2500);
      await r.restart();
      let renewed: boolean | undefined;
      for (let i = 0; i < 100 && renewed === undefined; i++) {
        renewed = await ledger.renewRouter("r1", 10_000).catch(() => undefined);
        if (renewed === undefined) await sleep(50);
      }
      expect(renewed).toBe(false); // the restarted Redis is empty: the lease is gone, the router must re-register
    } finally {
      await ledger.close();
    }
  });
  afterAll(async () => redis?.stop());
});
