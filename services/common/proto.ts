// Loads the .proto contracts at run time. The options match the generated types in ./generated
// (regenerate them with `npm run gen:proto` after changing a .proto file).
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { ProtoGrpcType as GenerationProto } from "./generated/generation.js";
import type { ProtoGrpcType as HealthProto } from "./generated/health.js";
import type { ProtoGrpcType as WorkerProto } from "./generated/worker.js";

export const PROTO_LOADER_OPTIONS: protoLoader.Options = {
  keepCase: false,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

export function protoDir(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    const candidate = join(dir, "proto");
    if (existsSync(join(candidate, "tpserve", "v1", "generation.proto"))) return candidate;
    dir = dirname(dir);
  }
  throw new Error("proto/ folder not found above " + fileURLToPath(import.meta.url));
}

function load<T>(file: string): T {
  const def = protoLoader.loadSync(file, { ...PROTO_LOADER_OPTIONS, includeDirs: [protoDir()] });
  return grpc.loadPackageDefinition(def) as unknown as T;
}

let cache: { generation: GenerationProto; worker: WorkerProto; health: HealthProto } | undefined;

export function protos(): { generation: GenerationProto; worker: WorkerProto; health: HealthProto } {
  cache ??= {
    generation: load<GenerationProto>("tpserve/v1/generation.proto"),
    worker: load<WorkerProto>("tpserve/worker/v1/worker.proto"),
    health: load<HealthProto>("grpc/health/v1/health.proto"),
  };
  return cache;
}

/** Graceful shutdown of a gRPC server, forced after `graceMs` (open streams would otherwise hold it forever). */
export function shutdownServer(server: grpc.Server, graceMs: number): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
