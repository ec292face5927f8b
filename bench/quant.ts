// Quantization quality table on the bundled model: perplexity on brown.test.txt (the golden file's definition)
// and the multiple-choice next-word check, with checkpoint size on disk, bytes the engine holds and load time,
// for every format. Quantized checkpoints are made with `tpserve quantize` (calibration: brown.train.txt) into
// bench/quant-models/ (ignored) unless already there. Writes bench/results/quant-<date>.json, quant-latest.json
// and quant-latest.md. Flags: --items N (choice items, default 300), --nsamples N (calibration windows, 64),
// --only name,name (rows to remeasure; the others are kept from quant-latest.json), --threads N.
import { execFileSync } from "node:child_process";
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { encodeDocuments, perplexity, readText } from "../services/cli/eval.js";
import { buildChoiceItems, scoreChoices } from "../services/cli/eval-choice.js";
import { Flags } from "../services/common/flags.js";
import { loadTokenizer } from "../services/common/model/tokenizer.js";
import { packageRoot } from "../services/common/paths.js";
import { type WorkerConfig, workerConfigFromFlags } from "../services/worker/config.js";
import { createEngine } from "../services/worker/server.js";

const f = new Flags(process.argv.slice(2));
const ITEMS = f.int("items", 300, 1, 100_000);
const NSAMPLES = f.int("nsamples", 64, 1, 4096);
const THREADS = f.int("threads", 0, 0, 1024);
const ONLY = f.string("only")?.split(",");
f.rejectUnknown();

const root = packageRoot();
const base = join(root, "models", "tinyllama-brown");
const calib = join(root, "data", "brown", "brown.train.txt");
const testText = readText(join(root, "data", "brown", "brown.test.txt"));
const qdir = join(root, "bench", "quant-models");

interface Row {
  name: string;
  /** What produced the weights. */
  how: string;
  model: string;
  quantization: "none" | "int4" | "nf4";
  groupSize?: 32 | 64 | 128;
  symmetric?: boolean;
  kv?: "int8";
  /** tpserve quantize arguments when the checkpoint must be made first. */
  make?: string[];
}

const ROWS: Row[] = [
  { name: "none", how: "bf16 checkpoint as stored", model: base, quantization: "none" },
  { name: "rtn-g32", how: "RTN sym at load", model: base, quantization: "int4", groupSize: 32, symmetric: true },
  { name: "rtn-g64", how: "RTN sym at load", model: base, quantization: "int4", groupSize: 64, symmetric: true },
  { name: "rtn-g128", how: "RTN sym at load", model: base, quantization: "int4", groupSize: 128, symmetric: true },
  {
    name: "rtn-g128-file",
    how: "tpserve quantize --method rtn (GPTQ file, fp16 scales)",
    model: join(qdir, "rtn-g128"),
    quantization: "none",
    make: ["--method", "rtn", "--group-size", "128", "--sym"],
  },
  {
    name: "gptq-g128",
    how: "GPTQ asym, calibrated",
    model: join(qdir, "gptq-g128"),
    quantization: "none",
    make: ["--method", "gptq", "--group-size", "128", "--asym"],
  },
  {
    name: "gptq-g128-act-order",
    how: "GPTQ asym, act-order (g_idx)",
    model: join(qdir, "gptq-g128-act-order"),
    quantization: "none",
    make: ["--method", "gptq", "--group-size", "128", "--asym", "--act-order"],
  },
  {
    name: "gptq-g128-sym",
    how: "GPTQ sym, calibrated",
    model: join(qdir, "gptq-g128-sym"),
    quantization: "none",
    make: ["--method", "gptq", "--group-size", "128", "--sym"],
  },
  {
    name: "awq-g128",
    how: "AWQ asym (scale + clip search, grid 40, q/k clipped)",
    model: join(qdir, "awq-g128"),
    quantization: "none",
    make: ["--method", "awq", "--group-size", "128"],
  },
  { name: "nf4", how: "NF4 block 64, double-quantized absmax, at load", model: base, quantization: "nf4" },
  {
    name: "kv-int8",
    how: "bf16 weights, int8 KV cache (per token and head)",
    model: base,
    quantization: "none",
    kv: "int8",
  },
  {
    name: "gptq-g128+kv-int8",
    how: "GPTQ asym g128 with int8 KV cache",
    model: join(qdir, "gptq-g128"),
    quantization: "none",
    kv: "int8",
  },
];

const dirBytes = (d: string): number =>
  readdirSync(d)
    .filter((n) => n.endsWith(".safetensors"))
    .reduce((a, n) => a + statSync(join(d, n)).size, 0);

function ensureModel(row: Row): void {
  if (!row.make || existsSync(join(row.model, "model.safetensors"))) return;
  process.stderr.write(`making ${row.name}: tpserve quantize ${row.make.join(" ")}\n`);
  execFileSync(
    process.execPath,
    [
      join(root, "bin", "tpserve.js"),
      "quantize",
      ...row.make,
      "--calib",
      calib,
      "--nsamples",
      String(NSAMPLES),
      "--out",
      row.model,
    ],
    { stdio: ["ignore", "inherit", "inherit"] },
  );
}

async function measure(row: Row): Promise<Record<string, unknown>> {
  ensureModel(row);
  const args = ["--model", row.model, "--quantization", row.quantization, "--threads", String(THREADS)];
  if (row.groupSize) args.push("--group-size", String(row.groupSize));
  if (row.symmetric === false) args.push("--asym");
  if (row.kv) args.push("--kv-cache-dtype", row.kv);
  const cfg: WorkerConfig = { ...workerConfigFromFlags(new Flags(args, ["asym"])), maxBatchTokens: 512, numPages: 33 };
  const t0 = performance.now();
  const { engine, model } = createEngine(cfg);
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const tok = loadTokenizer(row.model);
    const ids = encodeDocuments(testText, tok, model.eosTokenIds[0] ?? 2);
    const ppl = await perplexity(engine, ids, { window: 512, blockSize: cfg.blockSize, vocab: model.vocabSize });
    const choice = await scoreChoices(engine, tok, buildChoiceItems(testText, ITEMS, 1), {
      blockSize: cfg.blockSize,
      vocab: model.vocabSize,
      maxContext: 128,
    });
    const info = engine.info();
    const r = {
      name: row.name,
      how: row.how,
      perplexity: ppl.perplexity,
      choice_accuracy: choice.accuracy,
      choice_margin: choice.meanMargin,
      choice_items: choice.items,
      file_bytes: dirBytes(row.model),
      weight_bytes: info.weightBytes,
      kv_bytes_per_token: info.kvBytes / (33 * cfg.blockSize),
      load_seconds: loadSeconds,
      eval_seconds: ppl.seconds + choice.seconds,
    };
    process.stderr.write(`${JSON.stringify(r)}\n`);
    return r;
  } finally {
    engine.close();
  }
}

// With --only, the other rows come from the previous quant-latest.json (so one row can be remeasured).
const out = join(root, "bench", "results");
const latest = join(out, "quant-latest.json");
const previous = new Map<string, Record<string, unknown>>();
if (ONLY && existsSync(latest)) {
  for (const r of (JSON.parse(readFileSync(latest, "utf8")) as { rows: Record<string, unknown>[] }).rows) {
    previous.set(r["name"] as string, r);
  }
}
const rows: Record<string, unknown>[] = [];
for (const row of ROWS) {
  if (!ONLY || ONLY.includes(row.name)) rows.push(await measure(row));
  else if (previous.has(row.name)) rows.push(previous.get(row.name)!);
}

const ref = rows.find((r) => r["name"] === "none")?.["perplexity"] as number | undefined;
const mb = (b: unknown) => `${((b as number) / 1e6).toFixed(2)} MB`;
const md = [
  "| format | how | perplexity | vs none | next-word choice | file | engine weights | KV bytes/token | load |",
  "|---|---|---|---|---|---|---|---|---|",
  ...rows.map((r) => {
    const p = r["perplexity"] as number;
    const vs = ref ? `${p >= ref ? "+" : ""}${((100 * (p - ref)) / ref).toFixed(2)}%` : "-";
    return `| ${r["name"]} | ${r["how"]} | ${p.toFixed(2)} | ${vs} | ${(100 * (r["choice_accuracy"] as number)).toFixed(1)}% | ${mb(r["file_bytes"])} | ${mb(r["weight_bytes"])} | ${Math.round(r["kv_bytes_per_token"] as number)} | ${(r["load_seconds"] as number).toFixed(2)} s |`;
  }),
].join("\n");
console.log(md);
mkdirSync(out, { recursive: true });
const doc = {
  date: new Date().toISOString(),
  command: `node dist/bench/quant.js ${process.argv.slice(2).join(" ")}`.trim(),
  eval: "perplexity: brown.test.txt, 512-token windows (golden definition); choice: eval-choice.ts, seed 1",
  calibration: `brown.train.txt, ${NSAMPLES} windows of 512 tokens`,
  rows,
};
const stamp = doc.date.replace(/[:.]/g, "-");
writeFileSync(join(out, `quant-${stamp}.json`), `${JSON.stringify(doc, null, 2)}\n`);
writeFileSync(join(out, "quant-latest.json"), `${JSON.stringify(doc, null, 2)}\n`);
writeFileSync(
  join(out, "quant-latest.md"),
  `# Quantization results (${doc.date})\n\n${doc.calibration}; ${doc.eval}.\n\n${md}\n`,
);
