// Prefix-aware routing across the cluster, on real redis-server and nats-server with two worker-group processes
// and two routers: requests sharing a system prompt go to the group that holds it, also from the router that
// never saw it (KV events over NATS); the Redis prefix index knows where it is and seeds a router started later;
// a burst is spread by the load bound.
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisLedger } from "../../services/cluster/redis-ledger.js";
import { generate } from "../../services/common/client.js";
import { loadTokenizer } from "../../services/common/model/tokenizer.js";
import { bundledModelDir, packageRoot } from "../../services/common/paths.js";
import type { WorkerGroup } from "../../services/router/group.js";
import { chainHashes, rootHash } from "../../services/router/prefix-cache.js";
import {
  type RouterNode,
  redisCluster,
  startRouterNode,
  startWorkerProcess,
  type WorkerProcess,
  waitFor,
} from "../helpers/multi-router.js";
import { type ServerProcess, startNats, startRedis } from "../helpers/servers.js";

describe("prefix-aware routing", () => {
  let redis: ServerProcess;
  let nats: ServerProcess;
  let inspect: RedisLedger;
  const workers: WorkerProcess[] = [];
  const routers: RouterNode[] = [];
  let system: number[];
  let env: Record<string, string>;
  const prompt = (i: number) => ({
    tokenIds: { ids: [...system, ...Array.from({ length: 5 + (i % 9) }, (_, j) => 300 + ((i * 31 + j * 7) % 500))] },
    maxTokens: 6,
    ignoreEos: true,
  });
  /** Sequences that joined each group of a router since `since` (a snapshot of stepLog lengths). */
  const joins = (r: RouterNode, since: Map<WorkerGroup, number>) =>
    new Map(
      r.handle.router.groups.map((g) => [g.name, g.stepLog.slice(since.get(g) ?? 0).flatMap((e) => e.joined).length]),
    );
  const mark = (r: RouterNode) => new Map(r.handle.router.groups.map((g) => [g, g.stepLog.length]));

  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
    env = { REDIS_URL: redis.url, NATS_URL: nats.url, TPSERVE_CLUSTER: "pr", TPSERVE_LEASE_TTL_MS: "2000" };
    inspect = await RedisLedger.connect(redisCluster(redis.url, "pr"));
    for (const g of ["g1", "g2"]) workers.push(await startWorkerProcess(g, env));
    for (let i = 0; i < 2; i++)
      routers.push(await startRouterNode(redisCluster(redis.url, "pr", env), { decodeSteps: 1 }));
    await waitFor(() => routers.every((r) => r.handle.router.groups.length === 2), "routers to admit both groups");
    const tok = loadTokenizer(bundledModelDir());
    const text = readFileSync(join(packageRoot(), "data", "brown", "brown.test.txt"), "utf8").slice(0, 4000);
    const ids = tok.encode(text, { addSpecialTokens: true });
    system = ids.slice(0, 256);
    expect(system.length).toBe(256);
  });
  afterAll(async () => {
    for (const r of routers) await r.close();
    for (const w of workers) await w.kill();
    await inspect?.close();
    await nats?.stop();
    await redis?.stop();
  });

  it("sends a shared prefix to the group that holds it, from either router, within the load bound", async () => {
    const [a, b] = routers as [RouterNode, RouterNode];
    const m0 = mark(a);
    await generate(a.client, prompt(0));
    const home = [...joins(a, m0)].find(([, n]) => n > 0)![0];
    // One at a time: every request goes to the group that holds the prefix.
    const m1 = mark(a);
    for (let i = 1; i <= 6; i++) await generate(a.client, prompt(i));
    expect(joins(a, m1).get(home)).toBe(6);
    expect(a.handle.router.routing.byPrefix).toBeGreaterThanOrEqual(6);
    // The other router never served this prefix, but learned where it is from the KV events.
    const hashes = chainHashes(rootHash("tinyllama-brown", 16), prompt(0).tokenIds.ids, 16, 16);
    await waitFor(() => (b.handle.router.prefixIndex.runs(hashes).size ?? 0) > 0, "router b to hear the KV events");
    const mb = mark(b);
    for (let i = 7; i <= 9; i++) await generate(b.client, prompt(i));
    expect(joins(b, mb).get(home)).toBe(3);
    // The Redis prefix index, kept by the same events, says the same.
    const epoch = a.handle.router.groups.find((g) => g.name === home)!.epoch;
    await waitFor(async () => ((await inspect.prefixLookup(hashes))[`${home}@${epoch}`] ?? 0) >= 16, "redis index");
    // A router that starts now learns where the prefix is from the Redis index, before any new event.
    const late = await startRouterNode(redisCluster(redis.url, "pr", env), { decodeSteps: 1 });
    routers.push(late);
    await waitFor(() => late.handle.router.groups.length === 2, "the late router to admit both groups");
    await waitFor(() => late.handle.router.prefixIndex.runs(hashes).get(`${home}@${epoch}`) === 16, "seeded index");
    const ml = mark(late);
    await generate(late.client, prompt(10));
    expect(joins(late, ml).get(home)).toBe(1);
    // A burst: the load bound keeps the prefix's group from taking everything.
    const m2 = mark(a);
    await Promise.all(Array.from({ length: 16 }, (_, i) => generate(a.client, prompt(20 + i))));
    const burst = joins(a, m2);
    const other = [...burst.keys()].find((g) => g !== home)!;
    expect(burst.get(home)!).toBeGreaterThan(burst.get(other)!);
    expect(burst.get(other)!).toBeGreaterThan(0);
    console.log(`[prefix] burst of 16: ${home} (holds the prefix) ${burst.get(home)}, ${other} ${burst.get(other)}`);
    const c = a.handle.router.counters;
    console.log(`[prefix] router a hit ratio ${((100 * c.prefixHitTokens) / c.prefixQueryTokens).toFixed(1)}%`);
    // A router that leaves takes its caches along: the others stop counting on them.
    const aId = a.handle.cluster!.routerId;
    const key = `${home}@${epoch}`;
    expect(b.handle.router.prefixIndex.holders(hashes[0]!, key)).toContain(aId);
    await a.close();
    routers.splice(routers.indexOf(a), 1);
    await waitFor(() => !b.handle.router.prefixIndex.holders(hashes[0]!, key).includes(aId), "a's entries dropped");
  });
});
