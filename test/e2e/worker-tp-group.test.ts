// `tpserve worker --tp 2` with no --tp-rank, as one container runs it: the command starts both CPU ranks itself,
// registers the group in the Redis ledger under --group at --advertise-host, a `tpserve router` with REDIS_URL
// (and no --workers) finds it there and serves the golden completion; SIGTERM drains rank 0 (a stream in flight
// runs to its end on both ranks), stops rank 1 and the command exits 0, with the group gone from the ledger. A rank
// that dies stops the whole group (exit 1), and so does a rank that hangs (SIGSTOP): every process is alive, but the
// leader's next step times out and the leader reports the failed group to the command; with no step to time out,
// the command's heartbeat finds the stopped rank.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { RedisLedger } from "../../services/cluster/redis-ledger.js";
import { generate, generationClient } from "../../services/common/client.js";
import { packageRoot } from "../../services/common/paths.js";
import { loadGolden } from "../helpers/golden.js";
import { routerOver } from "../helpers/moved-requests.js";
import { type RouterProcess, redisCluster, startRouterProcess, waitFor } from "../helpers/multi-router.js";
import { type ServerProcess, startNats, startRedis } from "../helpers/servers.js";

const BIN = join(packageRoot(), "bin", "tpserve.js");
const NAME = "wtg";
const golden = loadGolden().golden;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

interface GroupCommand {
  child: ChildProcess;
  address: string;
  pids: number[];
  stderr: () => string;
  exited: Promise<number | null>;
}

/** `tpserve worker --tp 2 ...` as a plain command (no IPC channel), ready once it prints its ranks' pids. */
function startGroupCommand(args: string[], env: Record<string, string>): Promise<GroupCommand> {
  const child = spawn(
    process.execPath,
    [BIN, "worker", "--tp", "2", "--device", "cpu", "--threads", "1", "--kv-cache-mib", "16", ...args],
    { stdio: ["ignore", "ignore", "pipe"], env: { ...process.env, ...env } },
  );
  let err = "";
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  return new Promise((resolve, reject) => {
    child.stderr!.on("data", (d: Buffer) => {
      err += d.toString();
      const m = /group of 2 ranks \(pids (\d+),(\d+)\); rank 0 serves on (\S+?)[,\n]/.exec(err);
      if (m) resolve({ child, address: m[3]!, pids: [Number(m[1]), Number(m[2])], stderr: () => err, exited });
    });
    void exited.then((code) => reject(new Error(`tpserve worker --tp 2 exited (${code}) before ready:\n${err}`)));
  });
}

describe("tpserve worker --tp 2 (the whole group from one command)", () => {
  let redis: ServerProcess;
  let nats: ServerProcess;
  let env: Record<string, string>;
  let ledger: RedisLedger;
  let group: GroupCommand | undefined;
  let router: RouterProcess | undefined;
  const spares: GroupCommand[] = [];

  beforeAll(async () => {
    [redis, nats] = await Promise.all([startRedis(), startNats()]);
    env = { REDIS_URL: redis.url, NATS_URL: nats.url, TPSERVE_CLUSTER: NAME, TPSERVE_LEASE_TTL_MS: "2000" };
    ledger = await RedisLedger.connect(redisCluster(redis.url, NAME));
  }, 30_000);

  afterAll(async () => {
    for (const g of [group, ...spares]) {
      if (!g) continue;
      if (g.child.exitCode === null && g.child.pid) process.kill(g.child.pid, "SIGKILL");
      for (const pid of g.pids) if (alive(pid)) process.kill(pid, "SIGCONT");
      for (const pid of g.pids) if (alive(pid)) process.kill(pid, "SIGKILL");
    }
    await router?.kill();
    await ledger?.close();
    await Promise.all([redis?.stop(), nats?.stop()]);
  });

  it("starts both ranks and registers rank 0 in the ledger at the advertised host", async () => {
    group = await startGroupCommand(
      ["--group", "pod-0-g0", "--worker-host", "127.0.0.1", "--advertise-host", "localhost", "--worker-port", "0"],
      env,
    );
    expect(group.pids.every(alive)).toBe(true);
    expect(group.stderr()).toMatch(/registered as group pod-0-g0/);
    const port = group.address.split(":").pop();
    const groups = await ledger.listGroups();
    expect(groups.map((g) => [g.id, g.address])).toEqual([["pod-0-g0", `localhost:${port}`]]);
  }, 120_000);

  it("serves the golden greedy completion through a router that finds the group in the ledger", async () => {
    router = await startRouterProcess(env, ["--workers-wait-s", "30"]);
    const client = generationClient(router.address);
    const g = golden[1]!;
    const out = await generate(client, { text: g.prompt, maxTokens: 32 });
    client.close();
    expect(out.ids).toEqual(g.greedy_ids);
    expect(out.text).toBe(g.text);
  }, 60_000);

  it("on SIGTERM finishes the stream in flight, stops every rank, exits 0 and leaves the ledger", async () => {
    const g = group!;
    const client = generationClient(router!.address);
    let atSignal = -1;
    const out = await generate(client, { text: "Once upon a time", maxTokens: 600, ignoreEos: true }, (c) => {
      if (atSignal < 0 && c.tokenIds.length > 0) {
        atSignal = 0;
        g.child.kill("SIGTERM"); // rank 0 drains: the followers must stay until this stream is done
      }
      if (atSignal >= 0) atSignal += c.tokenIds.length;
    });
    client.close();
    expect(out.finishReason).toBe("FINISH_REASON_LENGTH");
    expect(out.completionTokens).toBe(600);
    expect(atSignal).toBeGreaterThan(1); // tokens kept coming after the signal
    expect(await g.exited).toBe(0);
    expect(g.stderr()).toMatch(/SIGTERM: draining rank 0, then stopping ranks 1\.\.1/);
    await waitFor(() => !g.pids.some(alive), "every rank to exit", 10_000);
    expect(await ledger.listGroups()).toEqual([]);
  }, 60_000);

  it("stops the group and exits 1 when a rank dies", async () => {
    const g = await startGroupCommand(["--worker-port", "0"], {});
    spares.push(g);
    process.kill(g.pids[1]!, "SIGKILL");
    expect(await g.exited).toBe(1);
    expect(g.stderr()).toMatch(/rank 1 \(pid \d+\) exited .*stopping the group/);
    await waitFor(() => !alive(g.pids[0]!), "rank 0 to exit", 10_000);
  }, 120_000);

  it("stops the group and exits 1 when a rank hangs and the leader's step times out", async () => {
    const g = await startGroupCommand(["--worker-port", "0", "--tp-timeout-ms", "1000"], {});
    spares.push(g);
    const { router: r } = await routerOver([g.address]);
    const client = generationClient(r.address);
    try {
      process.kill(g.pids[1]!, "SIGSTOP"); // alive, but it takes no part in the next collective
      const t0 = Date.now();
      const err = (await generate(client, { text: "Hello", maxTokens: 8 }).catch((e) => e)) as grpc.ServiceError;
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toMatch(/NATIVE_TP_TIMEOUT/);
      const late = new Promise<string>((r) => setTimeout(() => r("still running 20 s later"), 20_000).unref());
      expect(await Promise.race([g.exited, late])).toBe(1);
      expect(Date.now() - t0).toBeLessThan(10_000); // the 1 s timeout, then the ranks stop (a stopped one: SIGCONT)
      expect(g.stderr()).toMatch(/rank 0 \(pid \d+\) reports that its group failed: .*; stopping the group/);
      await waitFor(() => !g.pids.some(alive), "every rank to exit", 10_000);
    } finally {
      client.close();
      await r.close();
    }
  }, 60_000);

  it("stops the group and exits 1 when a rank hangs while the group is idle (no heartbeat answered)", async () => {
    const g = await startGroupCommand(["--worker-port", "0", "--tp-timeout-ms", "1000"], {});
    spares.push(g);
    const t0 = Date.now();
    process.kill(g.pids[1]!, "SIGSTOP"); // no request comes: no step can time out
    const late = new Promise<string>((r) => setTimeout(() => r("still running 30 s later"), 30_000).unref());
    expect(await Promise.race([g.exited, late])).toBe(1);
    // heartbeatFor: 5 s of silence (at least three 1 s collective timeouts), pings every second, then the stop.
    expect(Date.now() - t0).toBeLessThan(15_000);
    expect(g.stderr()).toMatch(/rank 1 \(pid \d+\) answered no heartbeat for \d+ ms .*; stopping the group/);
    await waitFor(() => !g.pids.some(alive), "every rank to exit", 10_000);
  }, 60_000);
});
