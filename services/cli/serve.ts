// `tpserve serve`: a worker as a child process plus the router in this process, on this machine.
import { type ChildProcess, fork } from "node:child_process";
import { join } from "node:path";
import { generate, generationClient } from "../common/client.js";
import type { Flags } from "../common/flags.js";
import { packageRoot } from "../common/paths.js";
import { routerConfigFromFlags } from "../router/config.js";
import { startRouter } from "../router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../worker/config.js";
import { type LoadProgress, startWorker } from "../worker/server.js";
import { progressBar } from "./progress.js";

type WorkerMessage =
  | { type: "progress"; progress: LoadProgress }
  | { type: "ready"; address: string; backend: string; reason: string; quantization: string }
  | { type: "error"; message: string };

/** The worker's own flags, rebuilt from its validated config. */
export function workerArgv(cfg: WorkerConfig): string[] {
  const argv = [
    "--model", cfg.model,
    "--quantization", cfg.quantization,
    "--group-size", String(cfg.groupSize),
    "--load-format", cfg.loadFormat,
    "--kv-cache-mib", String(cfg.kvCacheMiB),
    "--kv-cache-dtype", cfg.kvCacheDtype,
    "--num-pages", String(cfg.numPages),
    "--block-size", String(cfg.blockSize),
    "--max-batch-tokens", String(cfg.maxBatchTokens),
    "--threads", String(cfg.threads),
    "--device", cfg.device,
    "--worker-log-level", cfg.logLevel,
    ...(cfg.metricsPort !== null ? ["--worker-metrics-port", String(cfg.metricsPort)] : []),
    "--worker-host", cfg.host,
    "--worker-port", String(cfg.port),
    "--epoch", String(cfg.epoch),
    "--seed", String(cfg.seed),
  ]; // biome-ignore format: pairs read better one per line
  if (!cfg.symmetric) argv.push("--asym");
  return argv;
}

/** Runs inside the child process that `serve` forks. */
export async function workerCommand(f: Flags): Promise<number> {
  const cfg = workerConfigFromFlags(f);
  f.rejectUnknown();
  const send = (m: WorkerMessage) => (process.send ? process.send(m) : console.error(JSON.stringify(m)));
  let handle: Awaited<ReturnType<typeof startWorker>>;
  try {
    handle = await startWorker(cfg, (progress) => send({ type: "progress", progress }));
  } catch (err) {
    send({ type: "error", message: `${(err as { code?: string }).code ?? "ERROR"}: ${(err as Error).message}` });
    return 2;
  }
  send({
    type: "ready",
    address: handle.address,
    backend: handle.describe.backend ?? "cpu",
    reason: handle.describe.backendReason ?? "",
    quantization: handle.describe.quantization ?? "none",
  });
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once("SIGTERM", stop);
    process.once("SIGINT", stop);
    process.once("disconnect", stop);
  });
  await handle.close();
  if (process.connected) process.disconnect(); // the IPC channel would keep this process alive
  return 0;
}

function startWorkerProcess(
  cfg: WorkerConfig,
): Promise<{ child: ChildProcess; ready: Extract<WorkerMessage, { type: "ready" }> }> {
  const bin = join(packageRoot(), "bin", "tpserve.js");
  const child = fork(bin, ["worker", ...workerArgv(cfg)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  const bar = progressBar("loading model");
  return new Promise((resolve, reject) => {
    child.on("message", (m: WorkerMessage) => {
      if (m.type === "progress") bar(m.progress.done, m.progress.total, m.progress.name);
      else if (m.type === "ready") resolve({ child, ready: m });
      else reject(new Error(`worker failed to start: ${m.message}`));
    });
    child.on("exit", (code) => reject(new Error(`worker exited with code ${code} before it was ready`)));
  });
}

export async function serveCommand(f: Flags): Promise<number> {
  const workerCfg = { ...workerConfigFromFlags(f), port: 0 };
  const demo = !f.bool("no-demo");
  const routerCfg = routerConfigFromFlags(f, ["pending"]);
  f.rejectUnknown();
  const t0 = performance.now();
  const { child, ready } = await startWorkerProcess(workerCfg);
  const handle = await startRouter({
    ...routerCfg,
    workers: [ready.address],
    maxBatchTokens: workerCfg.maxBatchTokens,
  });
  const secs = ((performance.now() - t0) / 1000).toFixed(1);
  console.log(
    `tpserve ready in ${secs}s: gRPC on ${handle.address} (tpserve.v1.Generation, grpc.health.v1); ` +
      `model ${handle.router.groups.length > 0 ? workerCfg.model.split("/").pop() : "?"}, quantization ${ready.quantization}, ` +
      `backend ${ready.backend} (${ready.reason}); worker at ${ready.address}` +
      (handle.httpPort !== null ? `; metrics at http://${routerCfg.host}:${handle.httpPort}/metrics` : ""),
  );
  let stopping = false;
  const stopped = new Promise<void>((resolve) => {
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      console.error("tpserve: draining (up to 10 s for in-flight streams)...");
      await handle.close(10_000);
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000).unref())]);
      if (child.exitCode === null) child.kill("SIGKILL");
      if (child.connected) child.disconnect();
      resolve();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
    child.once("exit", (code) => {
      if (!stopping) console.error(`tpserve: the worker exited (code ${code}); requests will fail with UNAVAILABLE`);
    });
  });
  if (demo && (routerCfg.apiKeys || routerCfg.tls)) {
    console.log("API keys or TLS are on: the demo completion is skipped");
  } else if (demo) {
    const prompt = "The committee said that";
    const client = generationClient(handle.address);
    process.stdout.write(`demo over gRPC> ${prompt}`);
    const out = await generate(client, { text: prompt, maxTokens: 48 }, (c) => process.stdout.write(c.text));
    client.close();
    console.log(`\n[${out.completionTokens} tokens, ${out.finishReason.replace("FINISH_REASON_", "").toLowerCase()}]`);
    console.log(`try: npx tpserve generate --address ${handle.address} --prompt "Once upon a time" --max-tokens 40`);
  }
  await stopped;
  return 0;
}
