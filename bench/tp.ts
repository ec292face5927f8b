// CPU tensor-parallel benchmark: decode tokens/s end to end (router + a TP group of worker processes, shared-memory
// collectives) at --tp 1, 2 and 4, batch 1 and 8, on the bundled model. Each rank gets cores/tp kernel threads
// (at least 1). Before that, the engine alone (all ranks in this process): decode step time and the time spent in the
// collectives. Prints tables and writes bench/results/tp-cpu-<date>.json. Flags: --tp=1,2 --tokens=N.
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { type ForwardBatch, loadNative } from "../native/index.js";
import { startWorkerGroup, stopWorkerGroup } from "../services/cli/tp-group.js";
import { generate, generationClient } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import { workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine } from "../services/worker/server.js";
import { gitState } from "./git.js";

// Engine benchmark: every rank's forward holds a libuv pool thread (the default pool has 4).
process.env["UV_THREADPOOL_SIZE"] = "16";
const argv = process.argv.slice(2);
const arg = (k: string) => argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
const TPS = (arg("tp") ?? "1,2,4").split(",").map(Number);
const TOKENS = Number(arg("tokens") ?? 64);
const BATCHES = [1, 8];
const QUANTS = ["none", "int4"] as const;
const PROMPT = "The committee said that the city";

interface Row {
  tp: number;
  quant: string;
  threadsPerRank: number;
  batch: number;
  tokensPerS: number;
  msPerStep: number;
}

async function measure(tp: number, quant: (typeof QUANTS)[number]): Promise<Row[]> {
  const threads = Math.max(1, Math.floor(availableParallelism() / tp));
  const cfg = {
    ...workerConfigFromFlags(new Flags([])),
    device: "cpu",
    threads,
    kvCacheMiB: 32,
    logLevel: "silent" as const,
    quantization: quant,
    groupSize: 64 as const, // 128 would straddle a shard at tp 4
    tp,
    port: 0,
  };
  const { ranks } = await startWorkerGroup(cfg);
  const leader = ranks[0]!.address!;
  const router = await startRouter({
    ...routerConfigFromFlags(new Flags([]), [leader]),
    httpPort: null,
    logLevel: "silent",
    workers: [leader],
    port: 0,
  });
  const client = generationClient(router.address);
  const rows: Row[] = [];
  try {
    await generate(client, { text: PROMPT, maxTokens: 8, ignoreEos: true }); // warm up
    for (const batch of BATCHES) {
      const t0 = performance.now();
      const outs = await Promise.all(
        Array.from({ length: batch }, () => generate(client, { text: PROMPT, maxTokens: TOKENS, ignoreEos: true })),
      );
      const s = (performance.now() - t0) / 1000;
      const tokens = outs.reduce((a, o) => a + o.completionTokens, 0);
      rows.push({
        tp,
        quant,
        threadsPerRank: threads,
        batch,
        tokensPerS: Math.round((tokens / s) * 10) / 10,
        msPerStep: Math.round(((s * 1000) / TOKENS) * 100) / 100,
      });
    }
  } finally {
    client.close();
    await router.close(1000);
    await stopWorkerGroup(ranks);
  }
  return rows;
}

interface EngineRow {
  tp: number;
  quant: string;
  batch: number;
  msPerStep: number;
  commMsPerStep: number;
  collectivesPerStep: number;
}

/**
 * Engine level, all ranks as engines of this process (each forward on its own libuv thread, 1 kernel thread each):
 * decode step time after a 128-token context, and the share of it spent in the group's collectives (profile op
 * tp_comm on the leader).
 */
async function measureEngine(tp: number, quant: (typeof QUANTS)[number]): Promise<EngineRow[]> {
  const cfg = {
    ...workerConfigFromFlags(new Flags([])),
    device: "cpu",
    threads: 1,
    numPages: 80,
    maxBatchTokens: 1024,
    quantization: quant,
    groupSize: 64 as const,
    tp,
  };
  const name = `bench${process.pid}-${tp}-${quant}`;
  const groups = Array.from({ length: tp }, (_, rank) =>
    tp > 1 ? new (loadNative().TpGroup)({ name, rank, world: tp }) : undefined,
  );
  await Promise.all(groups.map((g) => g?.join()));
  const engines = groups.map((g, rank) => createEngine({ ...cfg, tpRank: rank }, undefined, () => 0, g).engine);
  const leader = engines[0]!;
  const followers = engines.slice(1).map(async (e) => {
    while (await e.follow!()) {}
  });
  const out: EngineRow[] = [];
  for (const batch of [1, 8]) {
    const ctx = 128;
    const blocks = 9;
    const table = new Int32Array(batch * blocks);
    for (let i = 0; i < table.length; i++) table[i] = 1 + i;
    const step = (n: number, c: number): ForwardBatch => ({
      tokens: Int32Array.from({ length: batch * n }, (_, i) => (i * 37) % 4000),
      seqLens: new Int32Array(batch).fill(n),
      contextLens: new Int32Array(batch).fill(c),
      blockTables: table,
      maxBlocksPerSeq: blocks,
      logits: "last",
    });
    await leader.forwardArgmax(step(ctx, ctx));
    leader.setProfiling?.(true);
    leader.resetProfile?.();
    const steps = 16;
    const t0 = performance.now();
    for (let k = 1; k <= steps; k++) await leader.forwardArgmax(step(1, ctx + k));
    const ms = (performance.now() - t0) / steps;
    const comm = leader.profile?.()["tp_comm"];
    leader.setProfiling?.(false);
    out.push({
      tp,
      quant,
      batch,
      msPerStep: Math.round(ms * 1000) / 1000,
      commMsPerStep: Math.round(((comm?.ms ?? 0) / steps) * 1000) / 1000,
      collectivesPerStep: (comm?.calls ?? 0) / steps,
    });
  }
  // In one process the followers re-arm follow() from this thread: let them, before close() blocks it to say stop.
  await new Promise((r) => setTimeout(r, 100));
  leader.close();
  await Promise.all(followers);
  for (const e of engines.slice(1)) e.close();
  for (const g of groups) g?.close();
  return out;
}

const engineRows: EngineRow[] = [];
for (const quant of QUANTS) for (const tp of TPS) engineRows.push(...(await measureEngine(tp, quant)));
console.log(
  "engine decode (ranks in this process, 1 thread each)\nquant  tp  batch  ms/step  tp_comm ms/step  collectives/step",
);
for (const r of engineRows) {
  console.log(
    `${r.quant.padEnd(6)} ${String(r.tp).padStart(2)}  ${String(r.batch).padStart(5)}  ${String(r.msPerStep).padStart(7)}  ${String(r.commMsPerStep).padStart(15)}  ${String(r.collectivesPerStep).padStart(16)}`,
  );
}

const rows: Row[] = [];
for (const quant of QUANTS) for (const tp of TPS) rows.push(...(await measure(tp, quant)));
console.log("quant  tp  threads/rank  batch  tokens/s  ms/step");
for (const r of rows) {
  console.log(
    `${r.quant.padEnd(6)} ${String(r.tp).padStart(2)}  ${String(r.threadsPerRank).padStart(12)}  ${String(r.batch).padStart(5)}  ${String(r.tokensPerS).padStart(8)}  ${String(r.msPerStep).padStart(7)}`,
  );
}
const info = readFileSync("/proc/cpuinfo", "utf8");
const result = {
  machine: {
    cpu: /model name\s*:\s*(.*)/.exec(info)?.[1] ?? cpus()[0]?.model ?? "unknown",
    cores: availableParallelism(),
    node: process.version,
    ...gitState(),
    date: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(" ")}`,
  },
  model: "tinyllama-brown (bundled)",
  settings: { prompt: PROMPT, tokens: TOKENS, batches: BATCHES, int4GroupSize: 64 },
  notes: [
    "end to end through the router over gRPC: tokens/s = completion tokens of the batch / wall time (prefill of the short prompt included)",
    "ms/step = wall time / generated tokens per sequence",
    "each rank is a process with max(1, cores/tp) kernel threads; at tp > cores the ranks share cores",
    "engine: all ranks in one process, 1 kernel thread each, batch-1/8 decode after a 128-token context; tp_comm = time in the all-reduces and the logits all-gather inside the leader's forward (waiting for slower ranks included)",
  ],
  engine: engineRows,
  rows,
};
const dir = join(packageRoot(), "bench", "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `tp-cpu-${result.machine.date.replace(/[:.]/g, "-")}.json`);
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${file}`);
