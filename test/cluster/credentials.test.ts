// REDIS_URL / NATS_URL settings from the environment: validated with messages that name the variable, and
// credentials that reach the servers (redis-server with requirepass, nats-server with a token).
import { spawn } from "node:child_process";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterConfigFromEnv } from "../../services/cluster/config.js";
import { NatsBus } from "../../services/cluster/nats-bus.js";
import { RedisLedger } from "../../services/cluster/redis-ledger.js";
import { freePort } from "../helpers/servers.js";

describe("cluster environment", () => {
  it("rejects bad values naming the variable", () => {
    expect(() => clusterConfigFromEnv({ REDIS_URL: "http://x" })).toThrow(/REDIS_URL must start with redis:\/\//);
    expect(() => clusterConfigFromEnv({ NATS_URL: "nats://a,http://b" })).toThrow(/NATS_URL must be nats:\/\//);
    expect(() => clusterConfigFromEnv({ TPSERVE_LEASE_TTL_MS: "5" })).toThrow(/TPSERVE_LEASE_TTL_MS must be/);
    expect(() => clusterConfigFromEnv({ TPSERVE_CLUSTER: "a b" })).toThrow(/TPSERVE_CLUSTER/);
    expect(() => clusterConfigFromEnv({ REDIS_TLS_CA: "/nonexistent.pem" })).toThrow(/REDIS_TLS_CA/);
    const c = clusterConfigFromEnv({ REDIS_URL: "rediss://h:1", NATS_URL: "nats://a:1, nats://b:2" });
    expect(c.redisTls).toEqual({}); // rediss:// turns TLS on with the system CAs
    expect(c.natsTls).toBeNull();
    expect(c.leaseTtlMs).toBe(3000);
  });
});

describe("credentials reach the servers", () => {
  const procs: ReturnType<typeof spawn>[] = [];
  let redisPort = 0;
  let natsPort = 0;
  const started = (port: number) =>
    new Promise<void>((resolve, reject) => {
      const until = Date.now() + 10_000;
      const probe = async () => {
        const net = await import("node:net");
        const s = net.connect(port, "127.0.0.1");
        s.once("connect", () => {
          s.destroy();
          resolve();
        });
        s.once("error", () => (Date.now() > until ? reject(new Error(`port ${port}`)) : setTimeout(probe, 50)));
      };
      void probe();
    });
  beforeAll(async () => {
    [redisPort, natsPort] = [await freePort(), await freePort()];
    procs.push(
      spawn(
        "redis-server",
        ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--requirepass", "s3cret"],
        {
          stdio: "ignore",
        },
      ),
    );
    procs.push(
      spawn("nats-server", ["-a", "127.0.0.1", "-p", String(natsPort), "--auth", "t0ken"], { stdio: "ignore" }),
    );
    await Promise.all([started(redisPort), started(natsPort)]);
  });
  afterAll(async () => {
    for (const p of procs) {
      const gone = new Promise((r) => p.once("exit", r));
      if (p.pid && p.exitCode === null) process.kill(p.pid, "SIGTERM");
      await gone;
    }
  });

  it("REDIS_PASSWORD", async () => {
    const url = `redis://127.0.0.1:${redisPort}`;
    const ok = await RedisLedger.connect(clusterConfigFromEnv({ REDIS_URL: url, REDIS_PASSWORD: "s3cret" }));
    await ok.registerRouter("r", 1000);
    expect(await ok.renewRouter("r", 1000)).toBe(true);
    await ok.close();
    const bad = await RedisLedger.connect(clusterConfigFromEnv({ REDIS_URL: url, REDIS_PASSWORD: "wrong" })).catch(
      (e: Error) => e,
    );
    expect(bad).toBeInstanceOf(Error);
    expect(String((bad as Error).message)).toMatch(/REDIS_URL|WRONGPASS|NOAUTH/);
  });

  it("NATS_TOKEN", async () => {
    const url = `nats://127.0.0.1:${natsPort}`;
    const bus = await NatsBus.connect(clusterConfigFromEnv({ NATS_URL: url, NATS_TOKEN: "t0ken" }), "t");
    const got = new Promise((r) => bus.subscribe("x.y", (d) => r(d)));
    await new Promise((r) => setTimeout(r, 50));
    bus.publish("x.y", { ok: 1 });
    expect(await got).toEqual({ ok: 1 });
    await bus.close();
    await expect(NatsBus.connect(clusterConfigFromEnv({ NATS_URL: url, NATS_TOKEN: "nope" }), "t")).rejects.toThrow(
      /NATS_URL/,
    );
  });
});
