// The worker process: one engine (one device, one shard), its KV pool, and the gRPC service the router drives.
import { basename } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { type DestinationStream, pino } from "pino";
import { type Engine, loadNative, type ModelShape } from "../../native/index.js";
import type { DescribeResponse } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { StepPlan__Output } from "../common/generated/tpserve/worker/v1/StepPlan.js";
import type { StepResult } from "../common/generated/tpserve/worker/v1/StepResult.js";
import type { WorkerEmbedRequest__Output } from "../common/generated/tpserve/worker/v1/WorkerEmbedRequest.js";
import { serveHttp } from "../common/http.js";
import { loadModelConfig, type ModelConfig, toModelShape } from "../common/model/config.js";
import { protos, shutdownServer } from "../common/proto.js";
import type { WorkerConfig } from "./config.js";
import { Embedder } from "./embed.js";
import { StepExecutor } from "./executor.js";
import { loadWeights } from "./load.js";
import { WorkerMetrics } from "./metrics.js";
import { readQuantConfig } from "./quant/checkpoint.js";

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
  close(): Promise<void>;
}

/** KV bytes of one page: K and V, every layer, float32 on the CPU backend. */
export function kvBytesPerPage(shape: ModelShape, blockSize: number, dtype: "f32" | "int8" = "f32"): number {
  const perHead = dtype === "int8" ? shape.headDim + 4 : shape.headDim * 4; // int8: values + one f32 scale
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

/** Which device `--device` means on this machine, and why (the worker says so at start). */
export function resolveDevice(wanted: string): { device: string; reason: string } {
  const build = loadNative().buildInfo();
  if (wanted === "cpu") return { device: "cpu", reason: "--device cpu" };
  if (wanted !== "auto") return { device: wanted, reason: `--device ${wanted}` };
  if (!build.cuda)
    return { device: "cpu", reason: "this build has no CUDA backend (nvcc was not found at build time)" };
  if (build.cudaDevices === 0) return { device: "cpu", reason: "no CUDA device is visible" };
  return { device: "cuda:0", reason: `${build.cudaDevices} CUDA device(s) visible` };
}

/** Builds the engine and loads the weights (no server). Used by the worker, `tpserve eval` and the benchmarks. */
export function createEngine(
  cfg: WorkerConfig,
  onProgress?: (p: LoadProgress) => void,
  extraPages: (numPages: number, model: ModelConfig) => number = () => 0,
): { engine: Engine; model: ModelConfig; numPages: number; enginePages: number; deviceReason: string } {
  const model = loadModelConfig(cfg.model);
  const shape = toModelShape(model);
  const perPage = kvBytesPerPage(shape, cfg.blockSize, cfg.kvCacheDtype);
  const numPages = cfg.numPages > 0 ? cfg.numPages : Math.max(2, Math.floor((cfg.kvCacheMiB * 2 ** 20) / perPage) + 1);
  const native = loadNative();
  const { device, reason } = resolveDevice(cfg.device);
  const enginePages = numPages + extraPages(numPages, model);
  const engine = new native.Engine({
    shape,
    numPages: enginePages,
    blockSize: cfg.blockSize,
    maxBatchTokens: cfg.maxBatchTokens,
    threads: cfg.threads,
    device,
    ...(cfg.kvCacheDtype === "int8" ? { kvCacheDtype: "int8" as const } : {}),
  });
  loadWeights(engine, {
    dir: cfg.model,
    config: model,
    quantization: cfg.quantization,
    groupSize: cfg.groupSize,
    symmetric: cfg.symmetric,
    loadFormat: cfg.loadFormat,
    seed: cfg.seed,
    onProgress: onProgress ? (done, total, name) => onProgress({ done, total, name }) : undefined,
  });
  return { engine, model, numPages, enginePages, deviceReason: reason };
}

export async function startWorker(
  cfg: WorkerConfig,
  onProgress?: (p: LoadProgress) => void,
  io: { logStream?: DestinationStream } = {},
): Promise<WorkerHandle> {
  // Pages past the router's pool serve embeddings: a prompt up to the model's context, or an eighth of the pool.
  const { engine, model, numPages, enginePages, deviceReason } = createEngine(cfg, onProgress, (pages, m) =>
    Math.min(Math.ceil(m.maxPositionEmbeddings / cfg.blockSize), Math.max(1, Math.ceil(pages / 8))),
  );
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
    epoch: cfg.epoch,
  };
  const log = pino({ level: cfg.logLevel, base: { service: "tpserve-worker" } }, io.logStream ?? pino.destination(2));
  log.info({ backend: deviceReason, model: basename(cfg.model), num_pages: numPages }, "worker ready");
  const metrics = new WorkerMetrics(() => ({
    sequences: executor.stats().sequences,
    weightBytes: info.weightBytes,
    kvBytes: info.kvBytes,
  }));
  let executor = new StepExecutor(engine, executorOpts, log, metrics);
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
    tpRank: 0,
    tpSize: 1,
    epoch: cfg.epoch,
    maxBatchTokens: cfg.maxBatchTokens,
  };

  const server = new grpc.Server({
    "grpc.max_receive_message_length": 64 << 20,
    "grpc.max_send_message_length": 64 << 20,
  });
  server.addService(protos().worker.tpserve.worker.v1.Worker.service, {
    Describe: (_call: unknown, cb: grpc.sendUnaryData<DescribeResponse>) => cb(null, describe),
    Stats: (_call: unknown, cb: grpc.sendUnaryData<unknown>) => cb(null, executor.stats()),
    Embed: (call: grpc.ServerUnaryCall<WorkerEmbedRequest__Output, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      embedder.embed(call.request.tokens).then(
        (values) => cb(null, { values: Array.from(values) }),
        (err: Error) => {
          log.error(
            { request_id: call.request.requestId, code: (err as { code?: string }).code },
            `embed failed: ${err.message}`,
          );
          cb({
            code: err instanceof RangeError ? grpc.status.INVALID_ARGUMENT : grpc.status.INTERNAL,
            details: err.message,
          });
        },
      );
    },
    Steps: (call: grpc.ServerDuplexStream<StepPlan__Output, StepResult>) => {
      // A new stream means a new router session: the previous one's sequences are gone.
      executor = new StepExecutor(engine, executorOpts, log, metrics);
      const ex = executor;
      let chain = Promise.resolve();
      call.on("data", (plan: StepPlan__Output) => {
        chain = chain.then(() => ex.execute(plan, (r) => call.write(r)));
      });
      call.on("end", () => void chain.then(() => call.end()));
      call.on("error", () => undefined); // the router went away; its next stream starts afresh
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(`${cfg.host}:${cfg.port}`, grpc.ServerCredentials.createInsecure(), (err, p) =>
      err ? reject(new Error(`worker cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`)) : resolve(p),
    ),
  );
  const http = cfg.metricsPort === null ? null : await serveHttp(metrics.registry, cfg.host, cfg.metricsPort);
  return {
    port,
    address: `${cfg.host}:${port}`,
    metricsPort: http?.port ?? null,
    describe,
    engine,
    get executor() {
      return executor;
    },
    async close() {
      await shutdownServer(server, 1000);
      if (http) await new Promise<void>((r) => http.server.close(() => r()));
      engine.close();
    },
  };
}
