// The GPU tensor-parallel benchmark's groups behind a router (bench/gpu-tp.ts parts 3 and 4): a group of worker
// processes in the `serve --tp` layout with a router in this process, and a rank killed or stopped mid-generation.
import * as grpc from "@grpc/grpc-js";
import { startWorkerGroup, stopWorkerGroup } from "../services/cli/tp-group.js";
import { generate, generationClient, unary } from "../services/common/client.js";
import { Flags } from "../services/common/flags.js";
import type { WorkerClient } from "../services/common/generated/tpserve/worker/v1/Worker.js";
import { protos } from "../services/common/proto.js";
import { routerConfigFromFlags } from "../services/router/config.js";
import { startRouter } from "../services/router/main.js";
import type { WorkerConfig } from "../services/worker/config.js";

/** The ranks of `cfg` as worker processes (the `serve --tp` layout) behind a router on this process. */
export async function groupBehindRouter(
  cfg: WorkerConfig,
  over: { maxRunning?: number; maxBatchTokens?: number },
  model: string,
) {
  const { ranks, ready } = await startWorkerGroup(cfg);
  const router = await startRouter({
    ...routerConfigFromFlags(new Flags([]), [ready.address]),
    httpPort: null,
    logLevel: "silent",
    model,
    ...over,
    port: 0,
  });
  return { ranks, ready, router, client: generationClient(router.address) };
}

/**
 * The group of `cfg` (TP=2) behind a router on `routerModel`'s tokenizer; rank 1 gets `signal` once a long generation
 * has streamed 3 tokens: how the request ends, how soon, and whether the leader process still answers.
 */
export async function failureRow(
  signal: "SIGKILL" | "SIGSTOP",
  cfg: WorkerConfig,
  routerModel: string,
): Promise<Record<string, unknown>> {
  const tpTimeoutMs = cfg.tpTimeoutMs;
  const { ranks, ready, router, client } = await groupBehindRouter(cfg, {}, routerModel);
  const victim = ranks[1]!.child;
  try {
    let chunks = 0;
    let hurtAt = 0;
    const err = (await generate(client, { tokenIds: { ids: [1, 450, 12] }, maxTokens: 900, ignoreEos: true }, () => {
      if (++chunks === 3) {
        hurtAt = performance.now();
        victim.kill(signal);
      }
    }).then(
      () => ({ code: -1, details: "the generation finished although a rank was gone" }),
      (e: { code: number; details: string }) => e,
    )) as { code: number; details: string };
    const ms = performance.now() - hurtAt;
    // The leader process must still answer on its own endpoint.
    const wc = new (protos().worker.tpserve.worker.v1.Worker)(
      ready.address,
      grpc.credentials.createInsecure(),
    ) as unknown as WorkerClient;
    const described = await unary(wc.Describe.bind(wc), {}).then(
      (d) => d as { tpRank?: number; numPages?: number },
      () => undefined,
    );
    const leaderAlive = described?.tpRank === 0;
    wc.close();
    const next = (await generate(client, { tokenIds: { ids: [1, 2, 3] }, maxTokens: 2 }).then(
      () => ({ code: 0, details: "served" }),
      (e: { code: number; details: string }) => e,
    )) as { code: number; details: string };
    const row = {
      signal,
      tpTimeoutMs,
      chunksBefore: chunks,
      code: err.code,
      unavailable: err.code === 14,
      details: err.details,
      msToError: ms,
      leaderProcessAlive: leaderAlive,
      numPages: described?.numPages,
      nextRequestCode: next.code,
    };
    console.log(
      `failure ${signal} of rank 1: request ended with code ${err.code} after ${ms.toFixed(0)} ms (${err.details}); leader answers Describe: ${leaderAlive} (${described?.numPages} KV pages); next request code ${next.code}`,
    );
    return row;
  } finally {
    if (signal === "SIGSTOP") victim.kill("SIGCONT");
    client.close();
    await router.close(1000);
    await stopWorkerGroup(ranks);
  }
}
