// Prefix-caching benchmark: requests that share a 512-token system prompt, each with its own 16-64 token question,
// against one CPU worker with prefix caching on and off. Reports the prefix hit ratio after warm-up and time to
// first token (client side), one request at a time and 4 at a time. Prints a table, writes
// bench/results/prefix-cache-<date>.json and bench/results/prefix-cache-latest.json.
// A second part runs two worker groups with several system prompts and compares prefix-aware routing with routing
// by load alone. Flags: --requests N (default 32), --routing-requests N (default 48), --threads N (default 1).
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import { generate, generationClient } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import type { GenerationClient } from "../services/common/generated/tpserve/v1/Generation.js";
import { loadTokenizer } from "../services/common/model/tokenizer.js";
import { bundledModelDir, packageRoot } from "../services/common/paths.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import { workerConfigFromFlags } from "../services/worker/config.js";
import { startWorker } from "../services/worker/server.js";
import { gitState } from "./git.js";

const flags = new Flags(process.argv.slice(2));
const N = flags.int("requests", 32, 2, 10_000);
const THREADS = flags.int("threads", 1, 1, 64);
const SYSTEM = 512;
const MAX_TOKENS = 16;
const SYSTEMS = 6;
const ROUTING_REQUESTS = flags.int("routing-requests", 48, 2, 10_000);
/** Per group: room for about 3 of the 6 system prompts (32 blocks each) plus the running sequences. */
const ROUTING_PAGES = 160;

const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : 0;
};
const p90 = (a: number[]) => [...a].sort((x, y) => x - y)[Math.min(a.length - 1, Math.floor(0.9 * a.length))] ?? 0;
const r2 = (x: number) => Math.round(x * 100) / 100;

function workload(): number[][] {
  const tok = loadTokenizer(bundledModelDir());
  const lines = readFileSync(join(packageRoot(), "data", "brown", "brown.test.txt"), "utf8").split("\n");
  const ids = tok.encode(lines.slice(0, 200).join(" "), { addSpecialTokens: true });
  const system = ids.slice(0, SYSTEM);
  if (system.length < SYSTEM) throw new Error("brown.test.txt is too short for the system prompt");
  const rest = ids.slice(SYSTEM);
  return Array.from({ length: N }, (_, i) => {
    const len = 16 + ((i * 29) % 49);
    const start = (i * 97) % Math.max(1, rest.length - len);
    return [...system, ...rest.slice(start, start + len)];
  });
}

/**
 * `concurrency` clients take prompts[from..] in turn, each generating MAX_TOKENS: time to first token and end to end
 * per request (ms), the ids by prompt index, and the wall time (s).
 */
async function drive(client: GenerationClient, prompts: number[][], from: number, concurrency: number) {
  const ttft: number[] = [];
  const e2e: number[] = [];
  const ids: number[][] = [];
  let next = from;
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (next < prompts.length) {
        const i = next++;
        const start = performance.now();
        let first = 0;
        const o = await generate(
          client,
          { tokenIds: { ids: prompts[i]! }, maxTokens: MAX_TOKENS, ignoreEos: true },
          (c) => {
            if (first === 0 && c.tokenIds.length > 0) first = performance.now();
          },
        );
        ttft.push(first - start);
        e2e.push(performance.now() - start);
        ids[i] = o.ids;
      }
    }),
  );
  return { ttft, e2e, ids, seconds: (performance.now() - t0) / 1000 };
}

async function run(prompts: number[][], caching: boolean, concurrency: number) {
  const w = await startWorker({ ...workerConfigFromFlags(new Flags([])), device: "cpu", threads: THREADS, port: 0 });
  const r = await startRouter({
    ...routerConfigFromFlags(new Flags([]), [w.address]),
    port: 0,
    httpPort: null,
    logLevel: "silent",
    prefixCache: caching,
  });
  const client = generationClient(r.address);
  try {
    // Warm-up: the first request computes the system prompt (and fills the cache when caching is on).
    await generate(client, { tokenIds: { ids: prompts[0]! }, maxTokens: MAX_TOKENS, ignoreEos: true });
    const c0 = { ...r.router.counters };
    const { ttft, e2e, ids, seconds: wall } = await drive(client, prompts, 1, concurrency);
    const c = r.router.counters;
    const queried = c.prefixQueryTokens - c0.prefixQueryTokens;
    const hits = c.prefixHitTokens - c0.prefixHitTokens;
    return {
      caching,
      concurrency,
      requests: prompts.length - 1,
      hitRatio: queried > 0 ? r2((100 * hits) / queried) / 100 : 0,
      ttftMsMedian: r2(median(ttft)),
      ttftMsP90: r2(p90(ttft)),
      e2eMsMedian: r2(median(e2e)),
      requestsPerSecond: r2((prompts.length - 1) / wall),
      ids,
    };
  } finally {
    client.close();
    await r.close();
    await w.close();
  }
}

/**
 * Two worker groups (embedded router, static --workers), each pool large enough for about half of SYSTEMS
 * distinct 512-token system prompts: prefix-aware routing keeps each prompt on one group, routing by load alone
 * spreads every prompt over both pools, which then evict each other's blocks.
 */
async function runRouting(prompts: number[][], prefixRouting: boolean, concurrency: number) {
  const ws = [];
  for (let i = 0; i < 2; i++) {
    const cfg = { ...workerConfigFromFlags(new Flags([])), device: "cpu", threads: THREADS, numPages: ROUTING_PAGES };
    ws.push(await startWorker({ ...cfg, port: 0 }));
  }
  const r = await startRouter({
    ...routerConfigFromFlags(
      new Flags([]),
      ws.map((w) => w.address),
    ),
    port: 0,
    httpPort: null,
    logLevel: "silent",
    prefixRouting,
  });
  const client = generationClient(r.address);
  try {
    const { ttft, seconds } = await drive(client, prompts, 0, concurrency);
    const c = r.router.counters;
    return {
      prefixRouting,
      concurrency,
      requests: prompts.length,
      systemPrompts: SYSTEMS,
      pagesPerGroup: ROUTING_PAGES,
      hitRatio: r2(c.prefixHitTokens / c.prefixQueryTokens),
      ttftMsMedian: r2(median(ttft)),
      ttftMsP90: r2(p90(ttft)),
      requestsPerSecond: r2(prompts.length / seconds),
      routedByPrefix: r.router.routing.byPrefix,
    };
  } finally {
    client.close();
    await r.close();
    for (const w of ws) await w.close();
  }
}

/** SYSTEMS different system prompts, requests cycling through them, each with its own question. */
function routingWorkload(): number[][] {
  const tok = loadTokenizer(bundledModelDir());
  const lines = readFileSync(join(packageRoot(), "data", "brown", "brown.test.txt"), "utf8").split("\n");
  const ids = tok.encode(lines.slice(0, 1500).join(" "), { addSpecialTokens: false });
  const systems = Array.from({ length: SYSTEMS }, (_, k) => [1, ...ids.slice(k * SYSTEM, (k + 1) * SYSTEM - 1)]);
  return Array.from({ length: ROUTING_REQUESTS }, (_, i) => {
    const q = ids.slice(SYSTEMS * SYSTEM + i * 40, SYSTEMS * SYSTEM + i * 40 + 16 + ((i * 29) % 25));
    return [...systems[(i * 5) % SYSTEMS]!, ...q];
  });
}

async function main() {
  const prompts = workload();
  const rows = [];
  for (const concurrency of [1, 4]) {
    const off = await run(prompts, false, concurrency);
    const on = await run(prompts, true, concurrency);
    const same = on.ids.every((x, i) => JSON.stringify(x) === JSON.stringify(off.ids[i]));
    if (!same) throw new Error(`caching changed the greedy ids at concurrency ${concurrency}`);
    rows.push(off, on);
  }
  console.log(`prefix caching: ${N - 1} requests after warm-up, ${SYSTEM}-token shared system prompt, 16-64 token`);
  console.log(
    `questions, ${MAX_TOKENS} generated tokens each, one CPU worker (${THREADS} thread(s)); ids equal on/off\n`,
  );
  console.log("| caching | concurrency | hit ratio | TTFT median ms | TTFT p90 ms | e2e median ms | req/s |");
  console.log("|---|---|---|---|---|---|---|");
  for (const x of rows) {
    console.log(
      `| ${x.caching ? "on" : "off"} | ${x.concurrency} | ${(100 * x.hitRatio).toFixed(1)}% | ${x.ttftMsMedian} | ` +
        `${x.ttftMsP90} | ${x.e2eMsMedian} | ${x.requestsPerSecond} |`,
    );
  }
  const routingPrompts = routingWorkload();
  const routing = [];
  for (const prefixRouting of [false, true]) routing.push(await runRouting(routingPrompts, prefixRouting, 4));
  console.log(
    `\ntwo groups of ${ROUTING_PAGES} pages, ${SYSTEMS} different ${SYSTEM}-token system prompts, ` +
      `${ROUTING_REQUESTS} requests, 4 concurrent (no warm-up):\n`,
  );
  console.log("| routing | hit ratio | TTFT median ms | TTFT p90 ms | req/s | routed by prefix |");
  console.log("|---|---|---|---|---|---|");
  for (const x of routing) {
    console.log(
      `| ${x.prefixRouting ? "prefix-aware" : "least loaded"} | ${(100 * x.hitRatio).toFixed(1)}% | ` +
        `${x.ttftMsMedian} | ${x.ttftMsP90} | ${x.requestsPerSecond} | ${x.routedByPrefix} |`,
    );
  }
  const result = {
    machine: { cpu: cpus()[0]?.model ?? "unknown", cores: cpus().length, node: process.version },
    ...gitState(),
    date: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(" ")}`,
    workload: {
      requests: N - 1,
      systemTokens: SYSTEM,
      questionTokens: "16-64",
      maxTokens: MAX_TOKENS,
      threads: THREADS,
    },
    rows: rows.map(({ ids: _ids, ...x }) => x),
    routing,
  };
  const dir = join(packageRoot(), "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `prefix-cache-${result.date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2));
  writeFileSync(join(dir, "prefix-cache-latest.json"), JSON.stringify(result, null, 2));
  console.log(`\nwrote ${file}`);
}

await main();
