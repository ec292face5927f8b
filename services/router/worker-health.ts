// The router watches each worker's grpc.health.v1 status. A worker that goes NOT_SERVING is draining (SIGTERM, a
// node being emptied): the router stops placing new requests on it and lets the sequences it holds finish there.
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckResponse__Output } from "../common/generated/grpc/health/v1/HealthCheckResponse.js";
import { protos } from "../common/proto.js";

/**
 * Calls `onChange(serving)` whenever the worker at `address` reports a status. A worker without the health service
 * or a broken watch changes nothing (the Steps stream reports real failures). Returns a function that stops watching.
 */
export function watchWorkerHealth(address: string, onChange: (serving: boolean) => void): () => void {
  const client = new (protos().health.grpc.health.v1.Health)(address, grpc.credentials.createInsecure());
  const call = client.Watch({ service: "tpserve.worker.v1.Worker" });
  call.on("data", (r: HealthCheckResponse__Output) => onChange(r.status === "SERVING"));
  call.on("error", () => undefined);
  return () => {
    call.cancel();
    client.close();
  };
}
