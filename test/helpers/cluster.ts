// Starts a worker and a router in this process on free loopback ports, for end-to-end tests over real gRPC.

import type { DestinationStream } from "pino";
import { generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { type RouterConfig, routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, type RouterIo, startRouter } from "../../services/router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../../services/worker/config.js";
import { startWorker, type WorkerHandle } from "../../services/worker/server.js";

export interface Cluster {
  worker: WorkerHandle;
  router: RouterHandle;
  client: GenerationClient;
  close(): Promise<void>;
}

export async function startCluster(
  worker: Partial<WorkerConfig> = {},
  router: Partial<RouterConfig> = {},
  io: RouterIo & { workerLogStream?: DestinationStream } = {},
): Promise<Cluster> {
  const wcfg: WorkerConfig = { ...workerConfigFromFlags(new Flags([])), threads: 2, ...worker, port: 0 };
  const w = await startWorker(wcfg, undefined, io.workerLogStream ? { logStream: io.workerLogStream } : {});
  const rcfg: RouterConfig = {
    ...routerConfigFromFlags(new Flags([]), [w.address]),
    maxBatchTokens: wcfg.maxBatchTokens,
    httpPort: 0,
    logLevel: "silent",
    ...router,
    workers: [w.address],
    port: 0,
  };
  const r = await startRouter(rcfg, io);
  const client = generationClient(r.address);
  return {
    worker: w,
    router: r,
    client,
    async close() {
      client.close();
      await r.close();
      await w.close();
    },
  };
}
