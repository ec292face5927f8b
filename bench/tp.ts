// CPU tensor-parallel benchmark: decode tokens/s end to end (router + a TP group of worker processes, shared-memory
// collectives) at --tp 1, 2 and 4, batch 1 and 8, on the bundled model. Each rank gets cores/tp kernel threads
// (at least 1). Prints a table and writes bench/results/tp-cpu-<date>.json. Flags: --tp=1,2 --tokens=N.
import { execSync } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { availableParallelism, cpus } from "node:os";
import { join } from "node:path";
import { startWorkerGroup, stopWorkerGroup } from "../services/cli/tp-group.js";
import { generate, generationClient } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import { workerConfigFromFlags } from "../services/worker/config.js";

const argv = process.argv.slice(2);
const arg = (k: string) => argv.find((a) => a.startsWith(`--${k}=`))?.slice(k.length + 3);
const TPS = (arg("tp") ?? "1,2,4").split(",").map(Number);
const TOKENS = Number(arg("tokens") ?? 64);
const BATCHES = [1, 8];
const QUANTS = ["none", "int4"] as const;
const PROMPT = "The committee said that the city";

const sh = (c: string) => {
  try {
    return execSync(c, { cwd: packageRoot(), stdio: ["ignore", "pipe", "ignore"] })
      .toString()
      .trim();
  } catch {
    return "";
  }
};

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
    commit: sh("git rev-parse HEAD"),
    dirty: sh("git status --porcelain") !== "",
    date: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(" ")}`,
  },
  model: "tinyllama-brown (bundled)",
  settings: { prompt: PROMPT, tokens: TOKENS, batches: BATCHES, int4GroupSize: 64 },
  notes: [
    "end to end through the router over gRPC: tokens/s = completion tokens of the batch / wall time (prefill of the short prompt included)",
    "ms/step = wall time / generated tokens per sequence",
    "each rank is a process with max(1, cores/tp) kernel threads; at tp > cores the ranks share cores",
  ],
  rows,
};
const dir = join(packageRoot(), "bench", "results");
mkdirSync(dir, { recursive: true });
const file = join(dir, `tp-cpu-${result.machine.date.replace(/[:.]/g, "-")}.json`);
writeFileSync(file, `${JSON.stringify(result, null, 2)}\n`);
console.log(`wrote ${file}`);
