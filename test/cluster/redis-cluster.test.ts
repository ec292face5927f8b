// The cluster against real servers: redis-server on loopback, two `tpserve worker --group` processes, routers in
// this process and as a `tpserve router` process. Scenarios run in order on one cluster:
//   1. 200 concurrent mixed requests through two routers: solo ids, no page leased twice, ledger empty at the end,
//      Redis commands per generated token counted;
//   2. kill -9 of a router mid-stream: its pages come back within the lease TTL plus a sweep, the other router
//      serves throughout;
//   3. kill -9 of a worker group: its requests run on in the other group from the tokens they streamed (the solo
//      ids in the end), routers stop using it; restarted, it has a higher epoch and rejects a plan made for the old
//      one;
//   4. redis-server restarted mid-run: every request ends (solo ids or UNAVAILABLE), the cluster recovers.
import * as grpc from "@grpc/grpc-js";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisLedger } from "../../services/cluster/redis-ledger.js";
import { type GenerateOutcome, generate, generationClient } from "../../services/common/client.js";
import type { StepResult__Output } from "../../services/common/generated/tpserve/worker/v1/StepResult.js";
import { workerClient } from "../../services/router/cluster.js";
import { clusterViolations } from "../../services/router/cluster-invariants.js";
import {
  type RouterNode,
  redisCluster,
  startRouterNode,
  startRouterProcess,
  startWorkerProcess,
  type WorkerProcess,
  waitFor,
} from "../helpers/multi-router.js";
import { mixedRequests, type TestRequest } from "../helpers/requests.js";
import { type ServerProcess, startRedis } from "../helpers/servers.js";

const TTL = 1500;
const SWEEP = 250;
const NAME = "it";

describe("cluster on redis-server", () => {
  let redis: ServerProcess;
  let env: Record<string, string>;
  let inspect: RedisLedger;
  const workers = new Map<string, WorkerProcess>();
  const routers: RouterNode[] = [];
  const solo = new Map<string, number[]>();
  const soloIds = async (r: TestRequest) => {
    const key = JSON.stringify(r);
    if (!solo.has(key)) solo.set(key, (await generate(routers[0]!.client, r)).ids);
    return solo.get(key)!;
  };
  const groupsIn = (r: RouterNode) =>
    r.handle.router.groups
      .filter((g) => g.healthy)
      .map((g) => g.name)
      .sort();

  beforeAll(async () => {
    redis = await startRedis();
    env = {
      REDIS_URL: redis.url,
      TPSERVE_CLUSTER: NAME,
      TPSERVE_LEASE_TTL_MS: String(TTL),
      TPSERVE_SWEEP_MS: String(SWEEP),
    };
    inspect = await RedisLedger.connect(redisCluster(redis.url, NAME));
    for (const g of ["g1", "g2"]) workers.set(g, await startWorkerProcess(g, env));
    const cluster = redisCluster(redis.url, NAME, env);
    for (let i = 0; i < 2; i++) {
      routers.push(
        await startRouterNode(cluster, {
          pageExtent: 16,
          maxBatchTokens: 256,
          maxQueue: 1000,
          prefixCacheKeepPages: 0,
        }),
      );
    }
    await waitFor(() => routers.every((r) => groupsIn(r).length === 2), "both routers to admit both groups");
  });
  afterAll(async () => {
    for (const r of routers) await r.close().catch(() => undefined);
    for (const w of workers.values()) await w.kill();
    await inspect?.close();
    await redis?.stop();
  });

  it("200 concurrent mixed requests through two routers: solo ids, no page leased twice, ledger empty after", async () => {
    const reqs = mixedRequests(200, 12);
    for (const r of reqs) await soloIds(r);
    const counter = new Redis(redis.url);
    const commandsNow = async () => Number(/total_commands_processed:(\d+)/.exec(await counter.info("stats"))![1]);
    const clusters = routers.map((r) => r.handle.cluster!);
    const ledgers = clusters.map((c) => c.ledger as RedisLedger);
    const violations: string[] = [];
    let checks = 0;
    let running = true;
    const checker = (async () => {
      while (running) {
        violations.push(...(await clusterViolations(clusters, inspect)));
        checks++;
        await new Promise((r) => setTimeout(r, 10));
      }
    })();
    const out = await Promise.all(reqs.map((r, i) => generate(routers[i % 2]!.client, r)));
    running = false;
    await checker;
    for (const [i, o] of out.entries()) expect(o.ids, `request ${i}`).toEqual(solo.get(JSON.stringify(reqs[i]))!);
    expect(violations).toEqual([]);
    expect(checks).toBeGreaterThan(10);

    // Redis commands per generated token: the same 200 requests again without the checker. The count is every
    // command Redis processed meanwhile, those run inside the Lua scripts included, from all four processes
    // (lease renewals, sweeps and group discovery run on timers; claims and releases once per extent).
    await waitFor(async () => (await inspect.snapshot()).every((g) => Object.keys(g.owners).length === 0), "idle");
    const scriptsBefore = ledgers.reduce((n, l) => n + l.commands, 0);
    const before = await commandsNow();
    const t0 = Date.now();
    const again = await Promise.all(reqs.map((r, i) => generate(routers[i % 2]!.client, r)));
    const seconds = (Date.now() - t0) / 1000;
    const after = (await commandsNow()) - 1; // this INFO
    const tokens = again.reduce((n, o) => n + o.ids.length, 0);
    const scripts = ledgers.reduce((n, l) => n + l.commands, 0) - scriptsBefore;
    const perToken = (after - before) / tokens;
    console.log(
      `[redis] ${after - before} commands (inside scripts included) for ${tokens} generated tokens in ` +
        `${seconds.toFixed(1)} s: ${perToken.toFixed(4)} per token; the routers sent ${scripts} ledger calls ` +
        `(${(scripts / tokens).toFixed(4)} per token)`,
    );
    expect(perToken).toBeLessThan(0.5);
    for (const [i, o] of again.entries()) expect(o.ids, `request ${i}`).toEqual(solo.get(JSON.stringify(reqs[i]))!);
    counter.disconnect();
    await waitFor(
      async () => (await inspect.snapshot()).every((g) => Object.keys(g.owners).length === 0),
      "ledger empty",
    );
    expect(await inspect.check()).toEqual([]);
  });

  it("kill -9 of a router mid-stream: its pages come back within TTL plus a sweep; the other router serves on", async () => {
    const victim = await startRouterProcess(env, ["--page-extent", "16"]);
    const vc = generationClient(victim.address);
    await waitFor(
      async () => (await generate(vc, { text: "Hello", maxTokens: 2 }).catch(() => null)) !== null,
      "victim up",
    );
    const long = { text: "The committee said that", maxTokens: 400, ignoreEos: true };
    let chunks = 0;
    const doomed = Array.from({ length: 4 }, () => generate(vc, long, () => void chunks++).catch((e) => e as Error));
    await waitFor(() => chunks >= 20, "victim streams to start");
    const owned = async () =>
      (await inspect.snapshot()).reduce((n, g) => n + (g.owners[victim.routerId]?.length ?? 0), 0);
    expect(await owned()).toBeGreaterThan(0);
    // The survivor serves throughout: requests before, during and after the kill.
    let serving = true;
    const survivor: Promise<{ r: TestRequest; o: GenerateOutcome }[]> = (async () => {
      const done: { r: TestRequest; o: GenerateOutcome }[] = [];
      const reqs = mixedRequests(12, 12);
      for (let i = 0; serving || i < 4; i++) {
        const r = reqs[i % reqs.length]!;
        done.push({ r, o: await generate(routers[1]!.client, r) });
      }
      return done;
    })();
    const killedAt = Date.now();
    await victim.kill();
    await waitFor(async () => (await owned()) === 0, "the dead router's pages to be reclaimed", TTL + 5 * SWEEP + 3000);
    const reclaimMs = Date.now() - killedAt;
    console.log(`[redis] dead router's pages reclaimed ${reclaimMs} ms after kill -9 (TTL ${TTL}, sweep ${SWEEP})`);
    // Lease expiry (at most TTL after the last renewal) plus one sweep, plus the polling and event-loop lag of a busy test.
    expect(reclaimMs).toBeLessThanOrEqual(TTL + SWEEP + 1000);
    serving = false;
    for (const { r, o } of await survivor) expect(o.ids).toEqual(await soloIds(r));
    for (const e of await Promise.all(doomed)) expect(e).toBeInstanceOf(Error);
    vc.close();
    expect(await inspect.check()).toEqual([]);
  });

  it("kill -9 of a worker group: its requests run on in the other group, routers stop using it; restarted with a higher epoch, stale plans fail", async () => {
    const old = (await inspect.listGroups()).find((g) => g.id === "g2")!;
    const long = { text: "It was a day in", maxTokens: 400, ignoreEos: true };
    let chunks = 0;
    const inflight = routers.flatMap((r) =>
      Array.from({ length: 4 }, () =>
        generate(r.client, long, () => void chunks++).catch((e) => e as grpc.ServiceError),
      ),
    );
    await waitFor(() => chunks >= 40, "streams to start");
    const retriedBefore = routers.reduce((n, r) => n + r.handle.router.counters.requestsRetried, 0);
    const killedAt = Date.now();
    await workers.get("g2")!.kill();
    const results = await Promise.all(inflight);
    const failed = results.filter((x) => x instanceof Error) as grpc.ServiceError[];
    expect(failed.map((e) => e.message)).toEqual([]); // those on g2 ran on in g1, from the tokens they had streamed
    const retried = routers.reduce((n, r) => n + r.handle.router.counters.requestsRetried, 0) - retriedBefore;
    expect(retried).toBeGreaterThan(0); // some were on g2
    const want = await soloIds(long);
    for (const o of results as GenerateOutcome[]) expect(o.ids).toEqual(want);
    await waitFor(() => routers.every((r) => !groupsIn(r).includes("g2")), "routers to stop routing to g2", TTL + 2000);
    await waitFor(async () => !(await inspect.listGroups()).some((g) => g.id === "g2"), "g2 dropped", TTL + 5 * SWEEP);
    console.log(
      `[redis] dead group out of service and dropped from the ledger ${Date.now() - killedAt} ms after kill -9`,
    );
    for (const r of mixedRequests(6, 6)) expect((await generate(routers[0]!.client, r)).ids).toEqual(await soloIds(r));

    workers.set("g2", await startWorkerProcess("g2", env));
    const fresh = (await inspect.listGroups()).find((g) => g.id === "g2")!;
    expect(fresh.epoch).toBeGreaterThan(old.epoch);
    await waitFor(() => routers.every((r) => groupsIn(r).length === 2), "routers to admit the restarted g2");
    // A plan made for the old epoch is rejected by the restarted worker.
    const wc = workerClient(fresh.address);
    const stream = wc.Steps();
    const reply = new Promise<StepResult__Output>((resolve) => stream.once("data", resolve));
    stream.write({
      stepId: 1,
      epoch: old.epoch,
      newSequences: [{ seqId: 1, tokens: [1, 2, 3], maxNewTokens: 2 }],
      scheduled: [{ seqId: 1, numTokens: 3, newPages: [1] }],
    });
    const r = await reply;
    expect(r.errorCode).toBe("WORKER_STALE_EPOCH");
    expect(r.errorMessage).toMatch(new RegExp(`plan epoch ${old.epoch} does not match worker epoch ${fresh.epoch}`));
    stream.end();
    wc.close();
  });

  it("redis-server restarted mid-run: every request ends (solo ids or UNAVAILABLE) and the cluster recovers", async () => {
    const reqs = mixedRequests(24, 12).map((r) => ({ ...r, maxTokens: r.maxTokens + 120 }));
    for (const r of reqs) await soloIds(r);
    const epochsBefore = new Map((await inspect.listGroups()).map((g) => [g.id, g.epoch]));
    let chunks = 0;
    const t0 = Date.now();
    const inflight = reqs.map((r, i) =>
      generate(routers[i % 2]!.client, r, () => void chunks++).then(
        (o) => ({ r, o, err: undefined as grpc.ServiceError | undefined }),
        (err: grpc.ServiceError) => ({ r, o: undefined, err }),
      ),
    );
    await waitFor(() => chunks >= 50, "streams to start");
    await redis.restart(); // no persistence: it comes back empty
    const results = await Promise.all(inflight);
    console.log(
      `[redis] restart mid-run: ${results.filter((x) => x.o).length} finished, ` +
        `${results.filter((x) => x.err).length} failed (${[...new Set(results.map((x) => x.err?.details?.slice(0, 60)).filter(Boolean))].join(" | ")}) in ${Date.now() - t0} ms`,
    );
    for (const x of results) {
      if (x.o) expect(x.o.ids).toEqual(await soloIds(x.r));
      else expect(x.err!.code).toBe(grpc.status.UNAVAILABLE);
    }
    // Workers re-register with higher epochs, routers with new ids; then everything serves again.
    await waitFor(
      async () => (await inspect.listGroups().catch(() => [])).length === 2,
      "groups to re-register",
      TTL * 3,
    );
    const epochsAfter = new Map((await inspect.listGroups()).map((g) => [g.id, g.epoch]));
    for (const [id, epoch] of epochsAfter) expect(epoch).toBeGreaterThan(epochsBefore.get(id)!);
    // Both groups healthy at their new epochs in both routers (a router that still holds a group at its old epoch
    // retires it, failing what it runs there, when it notices the restart).
    const admittedAfresh = async () => {
      const now = new Map((await inspect.listGroups().catch(() => [])).map((g) => [g.id, g.epoch]));
      return routers.every(
        (r) => r.handle.router.groups.filter((g) => g.healthy && g.epoch === now.get(g.name)).length === 2,
      );
    };
    await waitFor(admittedAfresh, "routers to re-admit both groups", TTL * 4);
    const after = await Promise.all(mixedRequests(12, 12).map((r, i) => generate(routers[i % 2]!.client, r)));
    for (const [i, o] of after.entries()) expect(o.ids).toEqual(await soloIds(mixedRequests(12, 12)[i]!));
    await waitFor(
      async () => (await inspect.snapshot()).every((g) => Object.keys(g.owners).length === 0),
      "ledger empty",
    );
    expect(await inspect.check()).toEqual([]);
  });
});
