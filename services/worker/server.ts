// The worker process: one engine (one device, one shard), its KV pool, and the gRPC service the router drives.
import { basename } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { type DestinationStream, pino } from "pino";
import { type Engine, loadNative, type ModelShape, type TpGroup } from "../../native/index.js";
import type { ControlBus } from "../cluster/bus.js";
import type { PageLedger } from "../cluster/ledger.js";
import { NatsBus } from "../cluster/nats-bus.js";
import { RedisLedger } from "../cluster/redis-ledger.js";
import { ConfigError } from "../common/errors.js";
import type { DescribeResponse } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { StepPlan__Output } from "../common/generated/tpserve/worker/v1/StepPlan.js";
import type { StepResult } from "../common/generated/tpserve/worker/v1/StepResult.js";
import type { WorkerEmbedRequest__Output } from "../common/generated/tpserve/worker/v1/WorkerEmbedRequest.js";
import { serveHttp } from "../common/http.js";
import { loadModelConfig, type ModelConfig, toModelShape } from "../common/model/config.js";
import { protos, shutdownServer } from "../common/proto.js";
import { dialAddress, type WorkerConfig } from "./config.js";
import { type DrainOutcome, drainWorker, WorkerHealth } from "./drain.js";
import { Embedder } from "./embed.js";
import { StepExecutor } from "./executor.js";
import { agreeGroupPool, loadedPool, planKvPool } from "./kv-pool.js";
import { loadWeights } from "./load.js";
import { GroupMembership } from "./membership.js";
import { WorkerMetrics } from "./metrics.js";
import { readQuantConfig } from "./quant/checkpoint.js";
import { Follower, isTpFailure, joinTpGroup, tpLoadedBarrier, tpThreads } from "./tp.js";

export interface LoadProgress {
  done: number;
  total: number;
  name: string;
}

export interface WorkerHandle {
  port: number;
  address: string;
  /** Port of GET /metrics, or null when off. */
  metricsPort: number | null;
  describe: DescribeResponse;
  engine: Engine;
  executor: StepExecutor;
  /** Ranks > 0 of a tensor-parallel group: the loop that runs the leader's steps. */
  follower: Follower | undefined;
  /** How the KV pool was sized ("KV pool: N pages = T tokens, ..."). */
  kvPool: string;
  /** grpc.health.v1 status: SERVING once loaded; NOT_SERVING while draining, or once its tensor-parallel group failed. */
  health: WorkerHealth;
  /**
   * Resolves with the reason once this rank learns that its tensor-parallel group failed (a rank died or hung);
   * the rank is NOT_SERVING from then on. Never resolves at --tp 1.
   */
  groupFailed: Promise<string>;
  /** The group's current epoch (it grows when the group re-registers in the cluster ledger). */
  readonly epoch: number;
  /**
   * Goes NOT_SERVING, sends the drain notice on the control bus (routers stop sending new requests), and waits (up
   * to `timeoutMs`) for the sequences it holds to finish; see drain.ts.
   */
  drain(timeoutMs: number): Promise<DrainOutcome>;
  close(): Promise<void>;
}

/** KV bytes of one page: K and V, every layer (blockSize 1: bytes per token), float32 on the CPU backend. */
export function kvBytesPerPage(
  shape: Pick<ModelShape, "numLayers" | "numKvHeads" | "headDim">,
  blockSize: number,
  dtype: "f32" | "f16" | "int8" = "f32",
): number {
  // int8: values + one f32 scale
  const perHead = dtype === "int8" ? shape.headDim + 4 : shape.headDim * (dtype === "f16" ? 2 : 4);
  return shape.numLayers * 2 * blockSize * shape.numKvHeads * perHead;
}

export function quantizationLabel(cfg: WorkerConfig): string {
  if (cfg.quantization === "none") {
    const qc = cfg.loadFormat === "safetensors" ? readQuantConfig(cfg.model) : undefined;
    return qc ? `${qc.method}-g${qc.groupSize}${qc.descAct ? "-act-order" : ""}` : "none";
  }
  if (cfg.quantization === "nf4") return "nf4-b64-dq";
  return `int4-g${cfg.groupSize}-${cfg.symmetric ? "sym" : "asym"}`;
}

/**
 * Which device `--device` means on this machine, and why (the worker says so at start). Rank r of a tensor-parallel
 * group of `world` takes GPU r (GPU N + r with --device cuda:N); auto picks the GPUs when there are `world` of them.
 * With `sharedGpu` (TPSERVE_TP_SHARED_GPU=1, for tests: a group larger than the machine's GPUs, all on GPU N, which
 * needs MPS for the ranks' kernels to run at once) every rank takes the same GPU.
 */
export function resolveDevice(
  wanted: string,
  rank = 0,
  world = 1,
  sharedGpu = process.env["TPSERVE_TP_SHARED_GPU"] === "1",
): { device: string; reason: string } {
  const build = loadNative().buildInfo();
  if (wanted === "cpu") return { device: "cpu", reason: "--device cpu" };
  const tp =
    world > 1
      ? `, tp rank ${rank} of ${world}${sharedGpu ? ", every rank on one GPU (TPSERVE_TP_SHARED_GPU=1)" : ""}`
      : "";
  const step = sharedGpu ? 0 : rank;
  if (wanted !== "auto") {
    const base = wanted === "cuda" ? 0 : Number(wanted.slice(5));
    return { device: `cuda:${base + step}`, reason: `--device ${wanted}${tp}` };
  }
  if (!build.cuda)
    return { device: "cpu", reason: "this build has no CUDA backend (nvcc was not found at build time)" };
  if (build.cudaDevices === 0) return { device: "cpu", reason: "no CUDA device is visible" };
  if (!sharedGpu && build.cudaDevices < world)
    return {
      device: "cpu",
      reason: `--tp ${world} needs ${world} GPUs and ${build.cudaDevices} are visible: the group runs on the CPU`,
    };
  return { device: `cuda:${step}`, reason: `${build.cudaDevices} CUDA device(s) visible${tp}` };
}

/**
 * Builds the engine and loads the weights (no server). Used by the worker, `tpserve eval` and the benchmarks.
 * numPages: the router's pool (page 0 included); enginePages: that plus `extraPages`; on a GPU without a given size
 * the engine sizes its pool from memory at finalize and both come from its info() (kv-pool.ts).
 */
export function createEngine(
  cfg: WorkerConfig,
  onProgress?: (p: LoadProgress) => void,
  extraPages: (numPages: number, model: ModelConfig) => number = () => 0,
  group?: TpGroup,
): {
  engine: Engine;
  model: ModelConfig;
  numPages: number;
  enginePages: number;
  deviceReason: string;
  /** How the pool was sized, for the start log. */
  kvPool: string;
} {
  const model = loadModelConfig(cfg.model);
  const shape = toModelShape(model);
  const native = loadNative();
  const { device, reason } = resolveDevice(cfg.device, group?.rank ?? 0, group?.world ?? 1);
  const kvDtype = cfg.kvCacheDtype === "auto" ? (device !== "cpu" ? "f16" : "f32") : cfg.kvCacheDtype;
  const perPage = kvBytesPerPage(shape, cfg.blockSize, kvDtype);
  const extra = (n: number) => extraPages(n, model);
  const plan = planKvPool(cfg, device !== "cpu", perPage, extra);
  const engine = new native.Engine({
    shape,
    // From memory: forward refuses contexts past the model's (the router never sends them), which bounds the
    // attention workspace the engine holds back from the pool.
    ...(plan.kind === "fixed"
      ? { numPages: plan.enginePages }
      : { numPages: 0, gpuMemoryUtilization: plan.fraction, maxContext: model.maxPositionEmbeddings }),
    blockSize: cfg.blockSize,
    maxBatchTokens: cfg.maxBatchTokens,
    threads: tpThreads(cfg),
    device,
    ...(group ? { group } : {}),
    kvCacheDtype: kvDtype,
  });
  let pool: ReturnType<typeof loadedPool>;
  try {
    loadWeights(engine, {
      dir: cfg.model,
      config: model,
      quantization: cfg.quantization,
      groupSize: cfg.groupSize,
      symmetric: cfg.symmetric,
      loadFormat: cfg.loadFormat,
      seed: cfg.seed,
      dummyActOrder: cfg.dummyActOrder === true,
      ...(group ? { tp: { rank: group.rank, world: group.world } } : {}),
      onProgress: onProgress ? (done, total, name) => onProgress({ done, total, name }) : undefined,
    });
    pool = loadedPool(plan, engine.info(), extra, cfg.blockSize, perPage);
  } catch (err) {
    engine.close(); // e.g. NATIVE_OOM from a pool sized at finalize: give the device memory back now
    throw err;
  }
  const { routerPages: numPages, enginePages, line: kvPool } = pool;
  return { engine, model, numPages, enginePages, deviceReason: reason, kvPool };
}

export async function startWorker(
  cfg: WorkerConfig,
  onProgress?: (p: LoadProgress) => void,
  io: { logStream?: DestinationStream; ledger?: PageLedger; bus?: ControlBus } = {},
): Promise<WorkerHandle> {
  if (cfg.group && !io.ledger && !cfg.cluster.redisUrl) {
    throw new ConfigError(`--group ${cfg.group} needs REDIS_URL (the cluster ledger the group registers in)`);
  }
  const group = await joinTpGroup(cfg);
  // Pages past the router's pool serve embeddings: a prompt up to the model's context, or an eighth of the pool.
  const embedExtra = (pages: number, m: ModelConfig) =>
    Math.min(Math.ceil(m.maxPositionEmbeddings / cfg.blockSize), Math.max(1, Math.ceil(pages / 8)));
  let created: ReturnType<typeof createEngine>;
  try {
    created = createEngine(cfg, onProgress, embedExtra, group);
  } catch (err) {
    group?.abort(`rank ${cfg.tpRank} could not load its shard: ${(err as Error).message}`); // don't keep peers waiting
    throw err;
  }
  const { engine, model, deviceReason } = created;
  let { numPages, enginePages, kvPool } = created;
  if (group) {
    await tpLoadedBarrier(group);
    // Ranks that sized their pools from their own GPU's memory may differ: the group uses the smallest.
    const agreed = await agreeGroupPool(group, engine, enginePages, (n) => embedExtra(n, model));
    if (agreed) {
      ({ routerPages: numPages, enginePages } = agreed);
      kvPool += `; the group uses its smallest rank's pool: ${numPages} pages = ${(numPages - 1) * cfg.blockSize} tokens`;
    }
  }
  const maxContext = model.maxPositionEmbeddings;
  const maxBlocksPerSeq = Math.ceil(maxContext / cfg.blockSize);
  const embedPages = enginePages - numPages;
  const embedder = new Embedder(engine, {
    firstPage: numPages,
    pages: embedPages,
    blockSize: cfg.blockSize,
    hidden: model.hiddenSize,
    maxBatchTokens: cfg.maxBatchTokens,
  });
  const executorOpts = {
    vocabSize: model.vocabSize,
    eosTokenIds: model.eosTokenIds,
    blockSize: cfg.blockSize,
    maxBlocksPerSeq,
    maxBatchTokens: cfg.maxBatchTokens,
    numPages,
    epoch: () => epoch,
  };
  let epoch = cfg.epoch;
  const log = pino({ level: cfg.logLevel, base: { service: "tpserve-worker" } }, io.logStream ?? pino.destination(2));
  log.info(
    {
      backend: deviceReason,
      model: basename(cfg.model),
      num_pages: numPages,
      kv_pool: kvPool,
      tp_rank: cfg.tpRank,
      tp: cfg.tp,
    },
    "worker ready",
  );
  // A failed group cannot run another step: this rank goes NOT_SERVING (routers and readiness probes see it) and
  // `groupFailed` tells whoever started it (the launcher restarts the group: services/cli/tp-group.ts).
  const health = new WorkerHealth();
  let failedGroup: string | undefined;
  let closing = false; // a rank that closes ends its follower loop with a failure: not the group's
  let resolveGroupFailed: (reason: string) => void = () => undefined;
  const groupFailed = new Promise<string>((resolve) => {
    resolveGroupFailed = resolve;
  });
  const onGroupFailure = (reason: string) => {
    if (failedGroup !== undefined || closing) return;
    failedGroup = reason;
    health.set("NOT_SERVING");
    log.warn({ tp_rank: cfg.tpRank, reason }, "the tensor-parallel group failed: this rank is NOT_SERVING");
    resolveGroupFailed(reason);
  };
  const follower = group && cfg.tpRank > 0 ? new Follower(engine, log, onGroupFailure) : undefined;
  const metrics = new WorkerMetrics(() => ({
    sequences: executor.stats().sequences,
    weightBytes: info.weightBytes,
    kvBytes: info.kvBytes,
  }));
  let executor = new StepExecutor(engine, executorOpts, log, metrics);
  let engineChain = Promise.resolve();
  const sessions = new Set<StepExecutor>();
  const liveSequences = () => [...sessions].reduce((n, s) => n + s.stats().sequences, 0);
  const info = engine.info();
  const describe: DescribeResponse = {
    model: basename(cfg.model),
    vocabSize: model.vocabSize,
    maxContext,
    numPages,
    blockSize: cfg.blockSize,
    backend: info.device === "cpu" ? "cpu" : "cuda",
    backendReason:
      info.device === "cpu"
        ? `${deviceReason}; CPU kernels use ${info.simd} with ${info.threads} threads`
        : `${deviceReason}; ${info.device}`,
    quantization: quantizationLabel(cfg),
    eosTokenId: model.eosTokenIds[0] ?? 0,
    eosTokenIds: model.eosTokenIds,
    tpRank: cfg.tpRank,
    tpSize: cfg.tp,
    epoch: cfg.epoch,
    maxBatchTokens: cfg.maxBatchTokens,
  };

  const server = new grpc.Server({
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
  });
  let openStreams = 0; // Steps streams of live router sessions; with none, held sequences have no one to serve

  server.addService(protos().health.grpc.health.v1.Health.service, health.handlers());
  server.addService(protos().worker.tpserve.worker.v1.Worker.service, {
    Describe: (_call: unknown, cb: grpc.sendUnaryData<DescribeResponse>) => cb(null, { ...describe, epoch }),
    Stats: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, executor.stats()),
    Embed: (call: grpc.ServerUnaryCall<WorkerEmbedRequest__Output, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      embedder.embed(call.request.tokens).then(
        (values) => cb(null, { values: Array.from(values) }),
        (err: Error) => {
          if (group && isTpFailure((err as { code?: string }).code)) onGroupFailure(group.failure() || err.message);
          log.error(
            { request_id: call.request.requestId, code: (err as { code?: string }).code },
            `embed failed: ${err.message}`,
          );
          cb({
            code:
              err instanceof RangeError
                ? grpc.status.INVALID_ARGUMENT
                : isTpFailure((err as { code?: string }).code)
                  ? grpc.status.UNAVAILABLE
                  : grpc.status.INTERNAL,
            details: err.message,
          });
        },
      );
    },
    Steps: (call: grpc.ServerDuplexStream<StepPlan__Output, StepResult>) => {
      if (follower) {
        const details = `worker is rank ${cfg.tpRank} of a tensor-parallel group: send step plans to its rank 0`;
        call.emit("error", { code: grpc.status.FAILED_PRECONDITION, details });
        return;
      }
      // One stream per router session, each with its own sequences (several routers may share the group; the
      // cluster ledger keeps their pages apart). Plans of all sessions run one at a time on the engine.
      executor = new StepExecutor(engine, executorOpts, log, metrics);
      const ex = executor;
      sessions.add(ex);
      const forget = () => sessions.delete(ex);
      call.on("close", forget);
      call.on("cancelled", forget);
      let chain = Promise.resolve();
      let open = true;
      openStreams++;
      const closed = () => {
        if (open) openStreams--;
        open = false;
      };
      call.on("data", (plan: StepPlan__Output) => {
        if (plan.cutStepId > 0) {
          ex.cut(plan.cutStepId); // not a plan: ends one early, so it does not wait behind it
          return;
        }
        chain = engineChain = engineChain
          .then(() => ex.execute(plan, (r) => call.write(r)))
          .then(() => {
            // A failed TP group cannot run another step: ending the stream tells the router the group is gone.
            const failure = group?.failure() ?? "";
            if (failure !== "") {
              onGroupFailure(failure);
              call.end();
            }
          });
      });
      call.on("end", () => {
        void chain.then(() => {
          closed();
          call.end();
        });
      });
      call.on("error", closed); // the router went away; its next stream starts afresh
      call.on("cancelled", closed);
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${cfg.host}:${cfg.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(new Error(`worker cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`)) : resolve(p),
    ),
  );
  const http = cfg.metricsPort === null ? null : await serveHttp(metrics.registry, cfg.host, cfg.metricsPort);
  let membership: GroupMembership | undefined;
  if (cfg.group && (io.ledger || cfg.cluster.redisUrl)) {
    const ledger = io.ledger ?? (await RedisLedger.connect(cfg.cluster));
    const bus = io.bus ?? (cfg.cluster.natsUrl ? await NatsBus.connect(cfg.cluster, `worker-${cfg.group}`) : null);
    const address = dialAddress(cfg.advertiseHost ?? cfg.host, port);
    const spec = { id: cfg.group, address, numPages, blockSize: cfg.blockSize };
    const announcer = bus ? { bus, load: liveSequences } : undefined;
    membership = await GroupMembership.join(
      ledger,
      spec,
      cfg.cluster,
      cfg.epoch - 1,
      (e) => {
        epoch = e;
      },
      log,
      announcer,
    );
  }
  return {
    port,
    address: `${cfg.host}:${port}`,
    metricsPort: http?.port ?? null,
    describe,
    engine,
    kvPool,
    get executor() {
      return executor;
    },
    follower,
    health,
    groupFailed,
    get epoch() {
      return epoch;
    },
    drain: (timeoutMs) => {
      membership?.drain();
      return drainWorker(health, {
        timeoutMs,
        progress: () => {
          let steps = 0;
          for (const s of sessions) steps += s.stats().steps;
          return { sequences: openStreams > 0 ? liveSequences() : 0, steps };
        },
      });
    },
    async close() {
      closing = true;
      health.close();
      await membership?.leave();
      await shutdownServer(server, 1000);
      if (http) await new Promise<void>((r) => http.server.close(() => r()));
      engine.close();
      await follower?.done;
      group?.close();
    },
  };
}
