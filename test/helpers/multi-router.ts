// Several routers and worker groups sharing one page ledger, for cluster tests. Workers run in this process
// (with an injected ledger) or as `tpserve worker` child processes (with REDIS_URL), routers in this process.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { type ClusterConfig, clusterConfigFromEnv } from "../../services/cluster/config.js";
import type { PageLedger } from "../../services/cluster/ledger.js";
import { generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { packageRoot } from "../../services/common/paths.js";
import { type RouterConfig, routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";

export interface RouterNode {
  handle: RouterHandle;
  client: GenerationClient;
  close(): Promise<void>;
}

export async function startRouterNode(
  cluster: ClusterConfig,
  over: Partial<RouterConfig> = {},
  ledger?: PageLedger,
): Promise<RouterNode> {
  const cfg: RouterConfig = {
    ...routerConfigFromFlags(new Flags([]), ["unused"]),
    httpPort: null,
    logLevel: "silent",
    port: 0,
    cluster,
    ...over,
  };
  const handle = await startRouter(cfg, ledger ? { ledger } : {});
  const client = generationClient(handle.address);
  return {
    handle,
    client,
    async close() {
      client.close();
      await handle.close();
    },
  };
}

/** Waits until `pred` holds (polling), or throws naming `what`. */
export async function waitFor(pred: () => boolean | Promise<boolean>, what: string, timeoutMs = 20_000) {
  const until = Date.now() + timeoutMs;
  while (!(await pred())) {
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

export interface WorkerProcess {
  child: ChildProcess;
  group: string;
  address: string;
  /** SIGKILL, and wait for the exit. */
  kill(): Promise<void>;
}

/** `tpserve worker --group NAME` as a child process registered in the Redis ledger at `env.REDIS_URL`. */
export function startWorkerProcess(group: string, env: Record<string, string>, args: string[] = []) {
  const bin = join(packageRoot(), "bin", "tpserve.js");
  const child = spawn(
    process.execPath,
    [bin, "worker", "--group", group, "--threads", "1", "--kv-cache-mib", "16", "--worker-log-level", "error", ...args],
    { stdio: ["ignore", "ignore", "pipe", "ipc"], env: { ...process.env, ...env } },
  );
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += String(d);
  });
  return new Promise<WorkerProcess>((resolve, reject) => {
    child.on("message", (m: { type: string; address?: string; message?: string }) => {
      if (m.type === "ready") {
        resolve({
          child,
          group,
          address: m.address!,
          async kill() {
            if (child.exitCode !== null || child.signalCode !== null) return;
            const gone = new Promise((r) => child.once("exit", r));
            if (child.pid) process.kill(child.pid, "SIGKILL");
            await gone;
          },
        });
      } else if (m.type === "error") reject(new Error(`worker ${group}: ${m.message}`));
    });
    child.on("exit", (code) => reject(new Error(`worker ${group} exited with ${code} before ready: ${stderr}`)));
  });
}

export function redisCluster(url: string, name: string, extra: Record<string, string> = {}): ClusterConfig {
  return clusterConfigFromEnv({ REDIS_URL: url, TPSERVE_CLUSTER: name, ...extra });
}

export interface RouterProcess {
  child: ChildProcess;
  address: string;
  routerId: string;
  kill(): Promise<void>;
}

/** `tpserve router` as a child process (REDIS_URL in `env`). */
export function startRouterProcess(env: Record<string, string>, args: string[] = []): Promise<RouterProcess> {
  const bin = join(packageRoot(), "bin", "tpserve.js");
  const child = spawn(process.execPath, [bin, "router", "--port", "0", "--no-http", "--log-level", "error", ...args], {
    stdio: ["ignore", "ignore", "pipe", "ipc"],
    env: { ...process.env, ...env },
  });
  let stderr = "";
  child.stderr?.on("data", (d) => {
    stderr += String(d);
  });
  return new Promise((resolve, reject) => {
    child.on("message", (m: { type: string; address: string; routerId: string }) => {
      if (m.type !== "ready") return;
      resolve({
        child,
        address: m.address,
        routerId: m.routerId,
        async kill() {
          if (child.exitCode !== null || child.signalCode !== null) return;
          const gone = new Promise((r) => child.once("exit", r));
          if (child.pid) process.kill(child.pid, "SIGKILL");
          await gone;
        },
      });
    });
    child.on("exit", (code) => reject(new Error(`router exited with ${code} before ready: ${stderr}`)));
  });
}
