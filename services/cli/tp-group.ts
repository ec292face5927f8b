// `tpserve serve --tp N`: N worker processes on this machine, one shard each, joined as one tensor-parallel group
// under a fresh group name. The router talks to rank 0 only.
import type { ChildProcess } from "node:child_process";
import { randomBytes } from "node:crypto";
import type { WorkerConfig } from "../worker/config.js";
import { type LauncherMessage, startWorkerProcess, type WorkerMessage } from "./serve.js";

export interface RankProcess {
  rank: number;
  pid: number;
  child: ChildProcess;
  /** The rank's gRPC address (set once it is ready; the router uses rank 0's). */
  address?: string;
}

type Ready = Awaited<ReturnType<typeof startWorkerProcess>>["ready"];

/** Rank `rank`'s configuration: the leader keeps the group's host, port, metrics and ledger name; followers
 * listen on loopback (only their leader talks to them), on any free port, and do not register. */
export function rankConfig(cfg: WorkerConfig, rank: number, tpGroup: string): WorkerConfig {
  if (rank === 0) return { ...cfg, tpRank: 0, tpGroup };
  return {
    ...cfg,
    tpRank: rank,
    tpGroup,
    host: "127.0.0.1",
    port: 0,
    metricsPort: cfg.metricsPort === null ? null : 0,
    group: null,
    advertiseHost: null,
  };
}

/** Starts every rank (concurrently: they join and load together) and resolves once all are ready. */
export async function startWorkerGroup(cfg: WorkerConfig): Promise<{ ready: Ready; ranks: RankProcess[] }> {
  const group = cfg.tp > 1 ? cfg.tpGroup || `g${process.pid}-${randomBytes(4).toString("hex")}` : "";
  const ranks: RankProcess[] = [];
  const started = Array.from({ length: cfg.tp }, (_, rank) =>
    startWorkerProcess(rankConfig(cfg, rank, group), (child) => ranks.push({ rank, pid: child.pid ?? 0, child })),
  );
  try {
    const all = await Promise.all(started);
    ranks.sort((a, b) => a.rank - b.rank);
    for (const r of ranks) r.address = all[r.rank]!.ready.address;
    return { ready: all[0]!.ready, ranks };
  } catch (err) {
    // One rank failing to start leaves the others waiting for it: stop them all.
    for (const p of started) p.catch(() => undefined);
    await stopWorkerGroup(ranks);
    throw err;
  }
}

/** Heartbeats over each rank's IPC channel: a ping every `everyMs`; a rank silent for `timeoutMs` is lost. */
export interface Heartbeat {
  everyMs: number;
  timeoutMs: number;
}

/**
 * The heartbeat a group of this configuration gets: it finds a rank that hangs while the group is idle (no step
 * runs into the collective timeout then). Three collective timeouts, at least 5 s: a rank that hangs during a step
 * is found by the step's timeout first, and reported as such.
 */
export function heartbeatFor(cfg: Pick<WorkerConfig, "tpTimeoutMs">): Heartbeat {
  return { everyMs: 1000, timeoutMs: Math.max(5000, 3 * cfg.tpTimeoutMs) };
}

/**
 * Calls `onLost` once, for the first rank that exits, reports that its group failed (a "group-failed" message:
 * a rank died or hung, and the ranks still alive cannot run another step), or, with `heartbeat`, answers no ping for
 * its timeout (the process is stopped or its event loop is blocked; ranks without an IPC channel are not pinged).
 * The returned function stops watching.
 */
export function watchWorkerGroup(
  ranks: RankProcess[],
  onLost: (rank: RankProcess, why: string) => void,
  heartbeat?: Heartbeat,
): () => void {
  let watching = true;
  const offs: (() => void)[] = [];
  const stop = () => {
    watching = false;
    for (const off of offs.splice(0)) off();
  };
  const lost = (r: RankProcess, why: string) => {
    if (!watching) return;
    stop();
    onLost(r, why);
  };
  const lastHeard = new Map<RankProcess, number>();
  for (const r of ranks) {
    const { child } = r;
    const onExit = (code: number | null, signal: NodeJS.Signals | null) =>
      lost(r, `exited (${signal ?? `code ${code}`})`);
    const onMessage = (m: WorkerMessage) => {
      if (m.type === "group-failed") lost(r, `reports that its group failed: ${m.reason}`);
      if (m.type === "pong" && lastHeard.has(r)) lastHeard.set(r, Date.now());
    };
    child.once("exit", onExit);
    child.on("message", onMessage);
    offs.push(() => {
      child.off("exit", onExit);
      child.off("message", onMessage);
    });
    if (child.exitCode !== null || child.signalCode !== null) {
      queueMicrotask(() => lost(r, `exited (${child.signalCode ?? `code ${child.exitCode}`})`));
    }
    if (heartbeat && typeof child.send === "function" && child.connected) lastHeard.set(r, Date.now());
  }
  if (heartbeat && lastHeard.size > 0) {
    const timer = setInterval(() => {
      const now = Date.now();
      for (const [r, at] of lastHeard) {
        if (now - at > heartbeat.timeoutMs) {
          lost(r, `answered no heartbeat for ${now - at} ms (stopped, or its event loop is blocked)`);
          return;
        }
        if (r.child.connected) r.child.send({ type: "ping" } satisfies LauncherMessage, () => undefined);
      }
    }, heartbeat.everyMs);
    timer.unref();
    offs.push(() => clearInterval(timer));
  }
  return stop;
}

/**
 * SIGTERM to every rank, the leader first (it tells its followers to stop); SIGKILL after 5 s. A stopped rank
 * (SIGSTOP) gets SIGCONT first, so that it can take the SIGTERM.
 */
export async function stopWorkerGroup(ranks: RankProcess[]): Promise<void> {
  await Promise.all(
    ranks.map(async ({ child }) => {
      if (child.exitCode !== null || child.signalCode !== null) return;
      const gone = new Promise((r) => child.once("exit", r));
      child.kill("SIGCONT");
      child.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, 5000).unref())]);
      if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL");
      if (child.connected) child.disconnect();
    }),
  );
}

/**
 * Drains a group that serves routers other than this process's: SIGTERM to the leader only (it goes NOT_SERVING
 * and finishes the sequences it holds, up to `drainTimeoutMs`), and once it is gone, the followers.
 */
export async function drainWorkerGroup(ranks: RankProcess[], drainTimeoutMs: number): Promise<number | null> {
  const [leader, ...followers] = ranks;
  let code: number | null = null;
  if (leader) {
    const { child } = leader;
    if (child.exitCode === null && child.signalCode === null) {
      const gone = new Promise<void>((r) => child.once("exit", () => r()));
      child.kill("SIGTERM");
      await Promise.race([gone, new Promise((r) => setTimeout(r, drainTimeoutMs + 10_000).unref())]);
    }
    code = child.exitCode;
  }
  await stopWorkerGroup(leader && code === null ? ranks : followers);
  return code;
}
