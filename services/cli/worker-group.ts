// `tpserve worker --tp N` without --tp-rank: the whole tensor-parallel group from one command, as in one
// container. Every rank is a child process (tp-group.ts, as `serve --tp` starts them); rank 0 serves the given
// --worker-host/--worker-port, its metrics and its ledger registration (--group), the others listen on loopback.
// SIGTERM or SIGINT drains rank 0 (it finishes the sequences it holds) and then stops the followers; a rank that
// exits on its own, reports that its group failed (a rank hung: every process is alive, none can run a step), or
// answers no heartbeat (it hangs while the group is idle), stops the group, and this process exits 1 so that the
// container restarts.
import type { WorkerConfig } from "../worker/config.js";
import {
  drainWorkerGroup,
  heartbeatFor,
  type RankProcess,
  startWorkerGroup,
  stopWorkerGroup,
  watchWorkerGroup,
} from "./tp-group.js";

type Send = (m: { type: "ready"; address: string; backend: string; reason: string; quantization: string }) => void;

export async function runWorkerGroup(cfg: WorkerConfig, send: Send): Promise<number> {
  const { ready, ranks } = await startWorkerGroup(cfg);
  send(ready);
  console.error(
    `tpserve worker: tensor-parallel group of ${ranks.length} ranks (pids ${ranks.map((r) => r.pid)}); ` +
      `rank 0 serves on ${ready.address}` +
      (cfg.group ? `, registered as group ${cfg.group}` : ""),
  );
  let unwatch = () => {};
  const event = await new Promise<{ signal: string } | { lost: RankProcess; why: string }>((resolve) => {
    process.once("SIGTERM", () => resolve({ signal: "SIGTERM" }));
    process.once("SIGINT", () => resolve({ signal: "SIGINT" }));
    process.once("disconnect", () => resolve({ signal: "disconnect" }));
    unwatch = watchWorkerGroup(ranks, (lost, why) => resolve({ lost, why }), heartbeatFor(cfg));
  });
  unwatch();
  if ("lost" in event) {
    console.error(`tpserve worker: rank ${event.lost.rank} (pid ${event.lost.pid}) ${event.why}; stopping the group`);
    await stopWorkerGroup(ranks);
    return 1;
  }
  console.error(`tpserve worker: ${event.signal}: draining rank 0, then stopping ranks 1..${ranks.length - 1}`);
  const code = await drainWorkerGroup(ranks, cfg.drainTimeoutMs);
  if (process.connected) process.disconnect();
  return code === 0 ? 0 : 1;
}
