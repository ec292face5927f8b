// `tpserve serve`: a worker (or a tensor-parallel group of --tp workers) as child processes plus the router in this
// process, on this machine. A group that loses a rank or fails is started again on the same port (supervise.ts).
import { type ChildProcess, fork } from "node:child_process";
import { hostname } from "node:os";
import { join } from "node:path";
import { generate, generationClient } from "../common/client.js";
import { TpserveError } from "../common/errors.js";
import type { Flags } from "../common/flags.js";
import { packageRoot } from "../common/paths.js";
import { routerConfigFromFlags } from "../router/config.js";
import { startRouter } from "../router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../worker/config.js";
import { type LoadProgress, startWorker } from "../worker/server.js";
import { progressBar } from "./progress.js";
import { GroupSupervisor } from "./supervise.js";
import { startWorkerGroup } from "./tp-group.js";
import { runWorkerGroup } from "./worker-group.js";

/** What a forked `tpserve worker` tells its parent over IPC. */
export type WorkerMessage =
  | { type: "progress"; progress: LoadProgress }
  | { type: "ready"; address: string; backend: string; reason: string; quantization: string; kvPool?: string }
  | { type: "error"; code?: string; message: string }
  /** This rank's tensor-parallel group failed (a rank died or hung); the rank stays up, NOT_SERVING. */
  | { type: "group-failed"; reason: string }
  /** The answer to the launcher's heartbeat ping (tp-group.ts, watchWorkerGroup). */
  | { type: "pong" };

/** What the launcher sends a forked worker: a heartbeat ping, answered with "pong". */
export type LauncherMessage = { type: "ping" };

/** The error's string code (NATIVE_*, CONFIG_*, ...), for the parent to report as its own. */
function errorCode(err: unknown): { code?: string } {
  const code = (err as { code?: unknown }).code;
  return typeof code === "string" ? { code } : {};
}

/** The worker's own flags, rebuilt from its validated config. */
export function workerArgv(cfg: WorkerConfig): string[] {
  const argv = [
    "--model", cfg.model,
    "--quantization", cfg.quantization,
    "--group-size", String(cfg.groupSize),
    "--load-format", cfg.loadFormat,
    ...(cfg.kvCacheMiB !== null ? ["--kv-cache-mib", String(cfg.kvCacheMiB)] : []),
    "--gpu-memory-utilization", String(cfg.gpuMemoryUtilization),
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
    "--tp", String(cfg.tp),
    "--tp-rank", String(cfg.tpRank),
    ...(cfg.tpGroup !== "" ? ["--tp-group", cfg.tpGroup] : []),
    "--tp-timeout-ms", String(cfg.tpTimeoutMs),
    "--drain-timeout-s", String(cfg.drainTimeoutMs / 1000),
  ]; // biome-ignore format: pairs read better one per line
  if (!cfg.symmetric) argv.push("--asym");
  if (cfg.group) argv.push("--group", cfg.group);
  if (cfg.advertiseHost) argv.push("--advertise-host", cfg.advertiseHost);
  return argv;
}

/**
 * `tpserve worker`: one worker process (the child that `serve` forks, or a container's), or with --tp N and no
 * --tp-rank the whole group of N ranks (worker-group.ts).
 */
export async function workerCommand(f: Flags): Promise<number> {
  const cfg = workerConfigFromFlags(f);
  const wholeGroup = cfg.tp > 1 && !f.has("tp-rank");
  f.rejectUnknown();
  const send = (m: WorkerMessage) => (process.send ? process.send(m) : console.error(JSON.stringify(m)));
  if (wholeGroup) {
    try {
      return await runWorkerGroup(cfg, send);
    } catch (err) {
      send({ type: "error", ...errorCode(err), message: (err as Error).message });
      return 2;
    }
  }
  let handle: Awaited<ReturnType<typeof startWorker>>;
  try {
    handle = await startWorker(cfg, (progress) => send({ type: "progress", progress }));
  } catch (err) {
    send({ type: "error", ...errorCode(err), message: (err as Error).message });
    return 2;
  }
  send({
    type: "ready",
    address: handle.address,
    backend: handle.describe.backend ?? "cpu",
    reason: handle.describe.backendReason ?? "",
    quantization: handle.describe.quantization ?? "none",
    kvPool: handle.kvPool,
  });
  let stopping = false;
  process.on("message", (m: LauncherMessage) => {
    if (m?.type === "ping" && process.connected) send({ type: "pong" });
  });
  // The launcher (serve, or `worker --tp N`) stops the group and starts another, or exits for its container to restart.
  void handle.groupFailed.then((reason) => {
    if (!stopping && process.send && process.connected) send({ type: "group-failed", reason });
  });
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
    process.once("disconnect", () => resolve("disconnect"));
  });
  stopping = true;
  if (signal !== "disconnect") {
    const out = await handle.drain(cfg.drainTimeoutMs);
    const held = out.sequences > 0 ? `, ${out.sequences} sequence(s) still held` : "";
    console.error(`tpserve worker: ${signal}: drained in ${out.ms} ms (${out.reason}${held}); exiting`);
  }
  await handle.close();
  if (process.connected) process.disconnect(); // the IPC channel would keep this process alive
  return 0;
}

/** Forks `tpserve worker` with this configuration and resolves once it serves (its address in `ready`). */
export function startWorkerProcess(
  cfg: WorkerConfig,
  onSpawn?: (child: ChildProcess) => void,
): Promise<{ child: ChildProcess; ready: Extract<WorkerMessage, { type: "ready" }> }> {
  const bin = join(packageRoot(), "bin", "tpserve.js");
  const child = fork(bin, ["worker", ...workerArgv(cfg)], { stdio: ["ignore", "inherit", "inherit", "ipc"] });
  onSpawn?.(child);
  // One progress bar per group: the leader's.
  const bar = cfg.tpRank === 0 ? progressBar(cfg.tp > 1 ? `loading shard 0 of ${cfg.tp}` : "loading model") : () => {};
  return new Promise((resolve, reject) => {
    child.on("message", (m: WorkerMessage) => {
      if (m.type === "progress") bar(m.progress.done, m.progress.total, m.progress.name);
      else if (m.type === "ready") resolve({ child, ready: m });
      else if (m.type === "error")
        reject(new TpserveError(m.code ?? "WORKER_START_FAILED", `worker failed to start: ${m.message}`));
    });
    child.on("exit", (code) =>
      reject(new TpserveError("WORKER_START_FAILED", `worker exited with code ${code} before it was ready`)),
    );
  });
}

export async function serveCommand(f: Flags): Promise<number> {
  const base = workerConfigFromFlags(f);
  // With REDIS_URL the router finds groups in the ledger: this machine's worker registers as one.
  const group = base.group ?? (base.cluster.redisUrl ? `serve-${hostname()}-${process.pid}` : null);
  const workerCfg = { ...base, port: 0, group };
  const demo = !f.bool("no-demo");
  // The supervisor restarts a failed group on the same port: requests wait for it (--group-wait-ms) by default.
  const routerCfg = routerConfigFromFlags(f, ["pending"], { groupWaitMs: 30_000 });
  f.rejectUnknown();
  const t0 = performance.now();
  const { ready, ranks } = await startWorkerGroup(workerCfg);
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
      (ready.kvPool ? `; ${ready.kvPool}` : "") +
      (ranks.length > 1
        ? `; tensor-parallel group of ${ranks.length} ${ready.backend === "cuda" ? "GPU" : "CPU"} ranks (pids ${ranks.map((r) => r.pid)})`
        : "") +
      (handle.httpPort !== null ? `; metrics at http://${routerCfg.host}:${handle.httpPort}/metrics` : ""),
  );
  // A rank that exits or reports that its group failed: the group is stopped and started again on the same port,
  // and the router puts it back in service once it serves (supervise.ts).
  const supervisor = new GroupSupervisor(workerCfg, ranks);
  let stopping = false;
  const stopped = new Promise<void>((resolve) => {
    const stop = async () => {
      if (stopping) return;
      stopping = true;
      supervisor.stopSupervising();
      console.error(`tpserve: draining (up to ${routerCfg.drainTimeoutMs / 1000} s for in-flight streams)...`);
      await handle.close(routerCfg.drainTimeoutMs);
      await supervisor.stop();
      resolve();
    };
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
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
