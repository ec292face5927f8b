// A tensor-parallel group for end-to-end tests: `tp` worker processes started the way `tpserve serve --tp N` starts
// them (compiled dist/, one process per rank), and a router in this process that talks to rank 0 only.
import * as grpc from "@grpc/grpc-js";
import { type RankProcess, startWorkerGroup, stopWorkerGroup } from "../../services/cli/tp-group.js";
import { generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import type { DescribeResponse__Output } from "../../services/common/generated/tpserve/worker/v1/DescribeResponse.js";
import { protos } from "../../services/common/proto.js";
import { type RouterConfig, routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";
import { type WorkerConfig, workerConfigFromFlags } from "../../services/worker/config.js";

export interface TpCluster {
  ranks: RankProcess[];
  router: RouterHandle;
  client: GenerationClient;
  /** Describe on one rank's own gRPC endpoint (rejects if the process does not answer within 5 s). */
  describe(rank: number): Promise<DescribeResponse__Output>;
  close(): Promise<void>;
}

export async function startTpCluster(
  worker: Partial<WorkerConfig> & { tp: number },
  router: Partial<RouterConfig> = {},
): Promise<TpCluster> {
  const wcfg: WorkerConfig = {
    ...workerConfigFromFlags(new Flags([])),
    threads: 1,
    kvCacheMiB: 16,
    logLevel: "silent",
    device: "cpu",
    ...worker,
    port: 0,
  };
  const { ranks } = await startWorkerGroup(wcfg);
  const leader = ranks[0]!.address!;
  let r: RouterHandle;
  try {
    r = await startRouter({
      ...routerConfigFromFlags(new Flags([]), [leader]),
      maxBatchTokens: wcfg.maxBatchTokens,
      httpPort: null,
      logLevel: "silent",
      ...router,
      workers: [leader],
      port: 0,
    });
  } catch (err) {
    await stopWorkerGroup(ranks);
    throw err;
  }
  const client = generationClient(r.address);
  const Worker = protos().worker.tpserve.worker.v1.Worker;
  return {
    ranks,
    router: r,
    client,
    describe(rank) {
      const c = new Worker(ranks[rank]!.address!, grpc.credentials.createInsecure());
      return new Promise((resolve, reject) => {
        c.Describe({}, { deadline: Date.now() + 5000 }, (err, res) => {
          c.close();
          if (err || !res) reject(err ?? new Error("no response"));
          else resolve(res);
        });
      });
    },
    async close() {
      client.close();
      await r.close(1000);
      await stopWorkerGroup(ranks);
    },
  };
}
