// The NATS control plane against real redis-server and nats-server, workers as `tpserve worker` processes and a
// router in this process whose ledger sweep runs only once a minute, so whatever it learns sooner came over NATS:
// a new group is used without restarting the router; a drain notice stops new requests to a group while its
// in-flight ones finish; a group that stops sending heartbeats (SIGSTOP) is taken out of service within the
// heartbeat timeout, its requests fail with UNAVAILABLE, and it comes back when it resumes.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import {
  type RouterNode,
  redisCluster,
  startRouterNode,
  startWorkerProcess,
  type WorkerProcess,
  waitFor,
} from "../helpers/multi-router.js";
import { type ServerProcess, startNats, startRedis } from "../helpers/servers.js";

const TTL = 1500;

describe("control plane on nats-server", () => {
  let redis: ServerProcess;
  let nats: ServerProcess;
  let env: Record<string, string>;
  let router: RouterNode;
  const workers: WorkerProcess[] = [];
  const names = () =>
    router.handle.router.groups
      .filter((g) => g.healthy && !g.draining)
      .map((g) => g.name)
      .sort();

  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
    env = {
      REDIS_URL: redis.url,
      NATS_URL: nats.url,
      TPSERVE_CLUSTER: "nc",
      TPSERVE_LEASE_TTL_MS: String(TTL),
      TPSERVE_SWEEP_MS: "60000",
    };
    workers.push(await startWorkerProcess("g1", env));
    router = await startRouterNode(redisCluster(redis.url, "nc", env), { pageExtent: 16 });
    await waitFor(() => names().length === 1, "the router to admit g1");
  });
  afterAll(async () => {
    await router?.close();
    for (const w of workers) {
      if (w.child.pid && w.child.exitCode === null && w.child.signalCode === null) process.kill(w.child.pid, "SIGCONT");
      await w.kill();
    }
    await redis?.stop();
    await nats?.stop();
  });

  it("a new group adds capacity at once, without a router restart", async () => {
    const t0 = Date.now();
    workers.push(await startWorkerProcess("g2", env));
    await waitFor(() => names().length === 2, "the router to admit g2 from its register message", 5000);
    console.log(`[nats] new group in service ${Date.now() - t0} ms after its process started (sweep: 60 s)`);
    const g2 = router.handle.router.groups.find((g) => g.name === "g2")!;
    const before = g2.scheduler.stats().steps;
    await Promise.all(Array.from({ length: 8 }, () => generate(router.client, { text: "The jury", maxTokens: 8 })));
    expect(g2.scheduler.stats().steps).toBeGreaterThan(before); // it took requests
    await waitFor(() => g2.remoteLoad === 0 && router.handle.router.groups.every((g) => g.remoteLoad === 0), "hb");
  });

  it("a drain notice stops new requests to the group; its in-flight requests finish", async () => {
    const g2 = router.handle.router.groups.find((g) => g.name === "g2")!;
    const long = { text: "It was a day in", maxTokens: 150, ignoreEos: true };
    let chunks = 0;
    const inflight = Array.from({ length: 4 }, () => generate(router.client, long, () => void chunks++));
    await waitFor(() => chunks > 20, "streams to start");
    const onG2 = g2.scheduler.stats().running;
    expect(onG2).toBeGreaterThan(0);
    const w2 = workers[1]!;
    const exited = new Promise((r) => w2.child.once("exit", r));
    process.kill(w2.child.pid!, "SIGTERM"); // the worker drains: notice, waits for its sequences, deregisters
    await waitFor(() => g2.draining, "the drain notice", 3000);
    const stepsBefore = g2.scheduler.stats().steps;
    const after = await Promise.all(
      Array.from({ length: 4 }, () => generate(router.client, { text: "Yes", maxTokens: 4 })),
    );
    expect(after.every((o) => o.ids.length === 4)).toBe(true);
    const done = await Promise.all(inflight);
    expect(done.every((o) => o.ids.length === 150)).toBe(true); // the drained group finished its own
    expect(g2.scheduler.stats().steps).toBeGreaterThanOrEqual(stepsBefore); // and got no new sequences:
    expect(g2.stepLog.filter((e) => e.stepId > stepsBefore).flatMap((e) => e.joined)).toEqual([]);
    await exited;
    await waitFor(() => !router.handle.router.groups.some((g) => g.name === "g2"), "g2 deregistered", 3000);
  });

  it("a group silent for the heartbeat timeout is retired (UNAVAILABLE) and comes back when it resumes", async () => {
    const w1 = workers[0]!;
    const long = { text: "The committee", maxTokens: 400, ignoreEos: true };
    let chunks = 0;
    const inflight = generate(router.client, long, () => void chunks++).catch((e) => e as grpc.ServiceError);
    await waitFor(() => chunks > 5, "stream to start");
    const t0 = Date.now();
    process.kill(w1.child.pid!, "SIGSTOP");
    const err = (await inflight) as grpc.ServiceError;
    const ms = Date.now() - t0;
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toMatch(/no heartbeat/);
    console.log(`[nats] stopped group retired ${ms} ms after SIGSTOP (heartbeat timeout ${TTL} ms)`);
    expect(ms).toBeLessThan(TTL + TTL / 3 + 1000);
    expect(names()).toEqual([]);
    const refused = (await generate(router.client, { text: "Hi", maxTokens: 2 }).catch((e) => e)) as grpc.ServiceError;
    expect(refused.code).toBe(grpc.status.UNAVAILABLE);
    process.kill(w1.child.pid!, "SIGCONT");
    await waitFor(() => names().length === 1, "g1 back in service", 10_000);
    expect((await generate(router.client, { text: "Hi", maxTokens: 2 })).ids.length).toBe(2);
    // The pages the router had leased in the retired incarnation went back to the ledger: what it owns there is
    // exactly what its current groups hold.
    const cluster = router.handle.cluster!;
    const leased = async () =>
      (await cluster.ledger.snapshot()).reduce((n, g) => n + (g.owners[cluster.routerId]?.length ?? 0), 0);
    const local = () => cluster.leases().reduce((n, l) => n + l.owned.length, 0);
    await waitFor(async () => (await leased()) === local(), "the retired group's pages back in the ledger", TTL * 3);
  });
});
