// CPU benchmark: engine decode/prefill speed, a per-op profile of batch-1 decode, and end-to-end streaming through
// the router and a worker over gRPC (in this process). Prints tables, writes bench/results/cpu-<date>.json and
// bench/results/cpu-latest.json. Flags: --quick (fewer runs), --no-e2e, --no-busy, --threads 1,2.
import { type ChildProcess, spawn } from "node:child_process";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { cpus } from "node:os";
import { join } from "node:path";
import type { Engine } from "../native/index.js";
import { generate, generationClient } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import { packageRoot } from "../services/common/paths.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine, startWorker } from "../services/worker/server.js";
import { batchOf } from "./batch.js";
import { gitState } from "./git.js";

const argv = process.argv.slice(2);
const quick = argv.includes("--quick");
const e2eOn = !argv.includes("--no-e2e");
const busyOn = !argv.includes("--no-busy");
const threadsArg = argv.find((a) => a.startsWith("--threads="))?.slice(10);
const THREADS = threadsArg ? threadsArg.split(",").map(Number) : [1, 2];
const QUANTS = ["none", "int4"] as const;
const BATCHES = [1, 8, 32];
const PROMPT = 128;
const DECODE_STEPS = quick ? 16 : 32;
const RUNS = quick ? 3 : 5;
const MAXB = 64; // pages per sequence in the engine benchmark (1024 tokens)

type Quant = (typeof QUANTS)[number];
const median = (a: number[]) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? (s[(s.length - 1) >> 1]! + s[s.length >> 1]!) / 2 : 0;
};
const pct = (a: number[], p: number) => {
  const s = [...a].sort((x, y) => x - y);
  return s.length ? s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]! : 0;
};
const r1 = (x: number) => Math.round(x * 10) / 10;
const r3 = (x: number) => Math.round(x * 1000) / 1000;

function machine() {
  const info = readFileSync("/proc/cpuinfo", "utf8");
  const model = /model name\s*:\s*(.*)/.exec(info)?.[1] ?? cpus()[0]?.model ?? "unknown";
  const flags = /flags\s*:\s*(.*)/.exec(info)?.[1]?.split(" ") ?? [];
  const simd = flags.includes("avx512f") ? "avx512" : flags.includes("avx2") ? "avx2" : "scalar";
  return {
    cpu: model,
    cores: cpus().length,
    simd,
    memGiB: Math.round(Number(/MemTotal:\s*(\d+)/.exec(readFileSync("/proc/meminfo", "utf8"))?.[1] ?? 0) / 2 ** 20),
    node: process.version,
    ...gitState(),
    date: new Date().toISOString(),
    command: `node ${process.argv.slice(1).join(" ")}`,
  };
}

function workerCfg(q: Quant, threads: number, numPages: number, maxBatchTokens: number): WorkerConfig {
  return {
    ...workerConfigFromFlags(new Flags([])),
    device: "cpu",
    quantization: q,
    groupSize: 128,
    symmetric: true,
    threads,
    numPages,
    maxBatchTokens,
    port: 0,
  };
}

let seed = 12345;
const rand = () => {
  seed = (seed * 1103515245 + 12345) % 2147483648;
  return seed / 2147483648;
};
const randomIds = (n: number, vocab: number) => Array.from({ length: n }, () => 3 + Math.floor(rand() * (vocab - 3)));

interface EngineRow {
  quant: Quant;
  threads: number;
  decode: Record<string, number>;
  prefill512: number;
  busy?: Record<string, number>;
}

/** Decode tok/s at batch B: B sequences with a 128-token prompt prefilled, then DECODE_STEPS steps; median. */
function decodeTps(e: Engine, vocab: number, B: number): number {
  const pages = (s: number) => Array.from({ length: MAXB }, (_, j) => 1 + s * MAXB + j);
  for (let s = 0; s < B; s++)
    e.forwardSync(batchOf([{ tokens: randomIds(PROMPT, vocab), ctx: PROMPT, pages: pages(s) }]));
  const times: number[] = [];
  for (let run = 0; run <= RUNS; run++) {
    const t0 = performance.now();
    for (let step = 0; step < DECODE_STEPS; step++) {
      const seqs = Array.from({ length: B }, (_, s) => ({
        tokens: [3 + ((s * 31 + step * 7) % (vocab - 3))],
        ctx: PROMPT + step + 1,
        pages: pages(s),
      }));
      e.forwardSync(batchOf(seqs));
    }
    if (run > 0) times.push(performance.now() - t0); // run 0 is the warm-up
  }
  return (B * DECODE_STEPS) / (median(times) / 1000);
}

function prefillTps(e: Engine, vocab: number): number {
  const pages = Array.from({ length: MAXB }, (_, j) => 1 + j);
  const ids = randomIds(512, vocab);
  const times: number[] = [];
  for (let run = 0; run <= RUNS; run++) {
    const t0 = performance.now();
    e.forwardSync(batchOf([{ tokens: ids, ctx: 512, pages }]));
    if (run > 0) times.push(performance.now() - t0);
  }
  return 512 / (median(times) / 1000);
}

function profileDecode(e: Engine, vocab: number): { op: string; ms: number; calls: number; pct: number }[] {
  if (!e.setProfiling || !e.profile || !e.resetProfile) return [];
  const pages = Array.from({ length: MAXB }, (_, j) => 1 + j);
  e.forwardSync(batchOf([{ tokens: randomIds(PROMPT, vocab), ctx: PROMPT, pages }]));
  e.setProfiling(true);
  e.resetProfile();
  const steps = 200;
  for (let step = 0; step < steps; step++)
    e.forwardSync(batchOf([{ tokens: [3 + step], ctx: PROMPT + 1 + (step % 64), pages }]));
  const p = e.profile();
  e.setProfiling(false);
  const total = p.forward?.ms ?? 1;
  return Object.entries(p)
    .filter(([op]) => op !== "forward")
    .map(([op, v]) => ({ op, ms: r3(v.ms / steps), calls: v.calls / steps, pct: r1((100 * v.ms) / total) }))
    .concat([{ op: "forward (step)", ms: r3(total / steps), calls: 1, pct: 100 }]);
}

function busyLoop(): ChildProcess {
  return spawn(process.execPath, ["-e", "for(;;){}"], { stdio: "ignore" });
}

async function engineBench() {
  const rows: EngineRow[] = [];
  const profiles: Record<string, ReturnType<typeof profileDecode>> = {};
  const numPages = 1 + 32 * MAXB;
  for (const q of QUANTS) {
    for (const threads of THREADS) {
      const { engine: e, model } = createEngine(workerCfg(q, threads, numPages, 512));
      const row: EngineRow = { quant: q, threads, decode: {}, prefill512: 0 };
      for (const B of BATCHES) row.decode[`b${B}`] = r1(decodeTps(e, model.vocabSize, B));
      row.prefill512 = r1(prefillTps(e, model.vocabSize));
      profiles[`${q}-t${threads}`] = profileDecode(e, model.vocabSize);
      if (busyOn) {
        const child = busyLoop();
        await new Promise((r) => setTimeout(r, 200));
        try {
          row.busy = { b1: r1(decodeTps(e, model.vocabSize, 1)), b8: r1(decodeTps(e, model.vocabSize, 8)) };
        } finally {
          child.kill();
        }
      }
      e.close();
      rows.push(row);
      console.error(`engine ${q} t${threads}: ${JSON.stringify(row)}`);
    }
  }
  return { rows, profiles };
}

interface E2ERow {
  quant: Quant;
  threads: number;
  batch: number;
  ttftMsP50: number;
  itlMsP50: number;
  itlMsP99: number;
  tpsPerSeq: number;
  tpsTotal: number;
  routerOverhead?: number;
}

async function e2eBench(): Promise<E2ERow[]> {
  const rows: E2ERow[] = [];
  const maxTokens = quick ? 48 : 96;
  for (const q of QUANTS) {
    for (const threads of THREADS) {
      const w = await startWorker(workerCfg(q, threads, 1 + 32 * 24, 512));
      const r = await startRouter({
        ...routerConfigFromFlags(new Flags([]), [w.address]),
        httpPort: null,
        logLevel: "silent",
        port: 0,
        maxBatchTokens: 512,
      });
      const client = generationClient(r.address);
      const vocab = w.describe.vocabSize ?? 4096;
      const one = async (ids: number[]) => {
        const t0 = performance.now();
        const arrivals: { t: number; n: number }[] = [];
        const out = await generate(client, { tokenIds: { ids }, maxTokens, ignoreEos: true }, (c) => {
          if (c.tokenIds.length) arrivals.push({ t: performance.now(), n: c.tokenIds.length });
        });
        const ttft = (arrivals[0]?.t ?? t0) - t0;
        const itl: number[] = [];
        for (let i = 1; i < arrivals.length; i++) {
          const gap = (arrivals[i]!.t - arrivals[i - 1]!.t) / arrivals[i]!.n;
          for (let k = 0; k < arrivals[i]!.n; k++) itl.push(gap);
        }
        const end = arrivals[arrivals.length - 1]?.t ?? t0;
        return { ttft, itl, n: out.ids.length, decodeS: (end - (arrivals[0]?.t ?? t0)) / 1000, wallMs: end - t0 };
      };
      await Promise.all([one(randomIds(PROMPT, vocab)), one(randomIds(PROMPT, vocab))]); // warm-up
      for (const B of BATCHES) {
        const statsBefore = w.executor.stats();
        const t0 = performance.now();
        const res = await Promise.all(Array.from({ length: B }, () => one(randomIds(PROMPT, vocab))));
        const wall = performance.now() - t0;
        const fwd = w.executor.stats().forwardMsTotal - statsBefore.forwardMsTotal;
        const total = res.reduce((s, x) => s + x.n, 0);
        const row: E2ERow = {
          quant: q,
          threads,
          batch: B,
          ttftMsP50: r3(median(res.map((x) => x.ttft))),
          itlMsP50: r3(
            pct(
              res.flatMap((x) => x.itl),
              50,
            ),
          ),
          itlMsP99: r3(
            pct(
              res.flatMap((x) => x.itl),
              99,
            ),
          ),
          tpsPerSeq: r1(median(res.map((x) => (x.n - 1) / x.decodeS))),
          tpsTotal: r1(total / (wall / 1000)),
        };
        if (B === 1) row.routerOverhead = r3(1 - fwd / wall);
        rows.push(row);
        console.error(`e2e ${q} t${threads} b${B}: ${JSON.stringify(row)}`);
      }
      client.close();
      await r.close();
      await w.close();
    }
  }
  return rows;
}

function table(title: string, head: string[], body: (string | number)[][]) {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => String(r[i] ?? "").length)));
  const line = (r: (string | number)[]) => `| ${r.map((c, i) => String(c).padStart(w[i]!)).join(" | ")} |`;
  console.log(
    `\n${title}\n${line(head)}\n|${w.map((n) => "-".repeat(n + 2)).join("|")}|\n${body.map(line).join("\n")}`,
  );
}

async function main() {
  const m = machine();
  const started = performance.now();
  console.log(
    `${m.cpu}, ${m.cores} cores, ${m.simd}, node ${m.node}, commit ${m.commit.slice(0, 10)}${m.dirty ? "+dirty" : ""}`,
  );
  const eng = await engineBench();
  table(
    `engine (forwardSync), decode tok/s after a ${PROMPT}-token prompt, median of ${RUNS} x ${DECODE_STEPS} steps`,
    ["quant", "threads", "b1", "b8", "b32", "prefill 512 tok/s", "b1 busy", "b8 busy"],
    eng.rows.map((r) => [
      r.quant,
      r.threads,
      r.decode.b1 ?? 0,
      r.decode.b8 ?? 0,
      r.decode.b32 ?? 0,
      r.prefill512,
      r.busy?.b1 ?? "-",
      r.busy?.b8 ?? "-",
    ]),
  );
  for (const [k, p] of Object.entries(eng.profiles))
    table(
      `batch-1 decode profile, ${k} (ms per step)`,
      ["op", "ms/step", "calls/step", "% of step"],
      p.map((x) => [x.op, x.ms, x.calls, x.pct]),
    );
  let e2e: E2ERow[] = [];
  if (e2eOn) {
    e2e = await e2eBench();
    table(
      "end to end (router + worker in this process, gRPC streaming), 128-token prompts",
      [
        "quant",
        "threads",
        "batch",
        "TTFT p50 ms",
        "ITL p50 ms",
        "ITL p99 ms",
        "tok/s/seq",
        "tok/s total",
        "router ovh",
      ],
      e2e.map((r) => [
        r.quant,
        r.threads,
        r.batch,
        r.ttftMsP50,
        r.itlMsP50,
        r.itlMsP99,
        r.tpsPerSeq,
        r.tpsTotal,
        r.routerOverhead ?? "",
      ]),
    );
  }
  const result = {
    machine: m,
    model: "tinyllama-brown (bundled)",
    settings: { prompt: PROMPT, decodeSteps: DECODE_STEPS, runs: RUNS, batches: BATCHES, threads: THREADS, quick },
    notes: [
      "engine decode: tokens/s = batch * steps / median wall time; busy = with `node -e for(;;){}` running",
      "e2e ITL: gap between streamed chunks divided by the tokens in the chunk",
      "routerOverhead (batch 1) = 1 - worker forward ms / request wall ms (prefill included)",
    ],
    engine: eng.rows,
    profiles: eng.profiles,
    e2e,
    seconds: r1((performance.now() - started) / 1000),
  };
  const dir = join(packageRoot(), "bench", "results");
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `cpu-${m.date.replace(/[:.]/g, "-")}.json`);
  writeFileSync(file, JSON.stringify(result, null, 2));
  writeFileSync(join(dir, "cpu-latest.json"), JSON.stringify(result, null, 2));
  console.log(`\nwrote ${file} (${result.seconds} s)`);
}

main().then(
  () => process.exit(0),
  (e) => {
    console.error(e);
    process.exit(1);
  },
);
