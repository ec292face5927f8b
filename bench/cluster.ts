// Cluster benchmark: redis-server, two `tpserve worker --group` processes and two routers (in this process), with
// the default lease TTL (3 s) and sweep period (1 s). Sends mixed requests through both routers and counts the
// commands Redis processed (INFO stats, commands inside the Lua scripts included) per generated token, and the
// routers' ledger calls per token. Prints a table, writes bench/results/cluster-<date>.json and cluster-latest.json.
// Flags: --requests N (default 400), --concurrency N (default 32).
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { Redis } from "ioredis";
import type { RedisLedger } from "../services/cluster/redis-ledger.js";
import { generate } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import {
  type RouterNode,
  redisCluster,
  startRouterNode,
  startWorkerProcess,
  type WorkerProcess,
  waitFor,
} from "../test/helpers/multi-router.js";
import { mixedRequests } from "../test/helpers/requests.js";
import { startRedis } from "../test/helpers/servers.js";
import { gitState } from "./git.js";

const flags = new Flags(process.argv.slice(2));
const N = flags.int("requests", 400, 1, 100_000);
const CONC = flags.int("concurrency", 32, 1, 1024);

async function main() {
  const redis = await startRedis();
  const env = { REDIS_URL: redis.url, TPSERVE_CLUSTER: "bench" };
  const workers: WorkerProcess[] = [];
  const routers: RouterNode[] = [];
  try {
    for (const g of ["g1", "g2"]) workers.push(await startWorkerProcess(g, env));
    for (let i = 0; i < 2; i++) routers.push(await startRouterNode(redisCluster(redis.url, "bench", env)));
    await waitFor(() => routers.every((r) => r.handle.router.groups.length === 2), "routers to admit both groups");
    const counter = new Redis(redis.url);
    const commands = async () => Number(/total_commands_processed:(\d+)/.exec(await counter.info("stats"))![1]);
    const ledgers = routers.map((r) => r.handle.cluster!.ledger as RedisLedger);
    const reqs = mixedRequests(N, 24);
    const calls0 = ledgers.reduce((n, l) => n + l.commands, 0);
    const c0 = await commands();
    const t0 = Date.now();
    let next = 0;
    let tokens = 0;
    await Promise.all(
      Array.from({ length: CONC }, async () => {
        while (next < reqs.length) {
          const i = next++;
          const o = await generate(routers[i % 2]!.client, reqs[i]!);
          tokens += o.ids.length;
        }
      }),
    );
    const seconds = (Date.now() - t0) / 1000;
    const redisCommands = (await commands()) - c0 - 1;
    const routerCalls = ledgers.reduce((n, l) => n + l.commands, 0) - calls0;
    counter.disconnect();
    const steps = routers.flatMap((r) => r.handle.router.groups).reduce((n, g) => n + g.scheduler.stats().steps, 0);
    const row = {
      requests: N,
      concurrency: CONC,
      generatedTokens: tokens,
      seconds: Math.round(seconds * 10) / 10,
      steps,
      redisCommands,
      redisCommandsPerToken: Math.round((redisCommands / tokens) * 10_000) / 10_000,
      routerLedgerCalls: routerCalls,
      routerLedgerCallsPerToken: Math.round((routerCalls / tokens) * 10_000) / 10_000,
      leaseTtlMs: 3000,
      sweepMs: 1000,
    };
    console.log("| requests | tokens | s | steps | Redis commands | per token | router ledger calls | per token |");
    console.log("|---|---|---|---|---|---|---|---|");
    console.log(
      `| ${N} | ${tokens} | ${row.seconds} | ${steps} | ${redisCommands} | ${row.redisCommandsPerToken} | ` +
        `${routerCalls} | ${row.routerLedgerCallsPerToken} |`,
    );
    const result = {
      date: new Date().toISOString(),
      ...gitState(),
      command: `node ${process.argv.slice(1).join(" ")}`,
      setup: "redis-server, 2 worker processes (1 thread each), 2 routers; default TTL 3 s, sweep 1 s, extent 32",
      row,
    };
    const dir = join(packageRoot(), "bench", "results");
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `cluster-${result.date.replace(/[:.]/g, "-")}.json`);
    writeFileSync(file, JSON.stringify(result, null, 2));
    writeFileSync(join(dir, "cluster-latest.json"), JSON.stringify(result, null, 2));
    console.log(`\nwrote ${file}`);
  } finally {
    for (const r of routers) await r.close();
    for (const w of workers) await w.kill();
    await redis.stop();
  }
}

await main();
