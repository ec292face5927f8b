// The router watches each worker's grpc.health.v1 status. A worker that goes NOT_SERVING is draining (SIGTERM, a
// node being emptied) or its tensor-parallel group failed: the router stops placing new requests on it and lets the
// sequences it holds finish there. A worker that reports SERVING again after its group failed is put back in service
// (static-groups.ts).
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckResponse__Output } from "../common/generated/grpc/health/v1/HealthCheckResponse.js";
import { protos } from "../common/proto.js";

/** Pauses before a watch that ended is opened again: the first, and the longest (each one doubles). */
const REWATCH_FIRST_MS = 500;
const REWATCH_MAX_MS = 2000;

/**
 * Calls `onChange(serving)` whenever the worker at `address` reports a status: when a watch opens and at every
 * change. A watch that ends (the worker went away or restarts) is opened again after a short pause and waits for
 * the connection, which the channel retries at most 2 s apart: a worker that serves again at the same address is
 * seen. A worker without the health service changes nothing (the Steps stream reports real failures). Returns a
 * function that stops watching.
 */
export function watchWorkerHealth(address: string, onChange: (serving: boolean) => void): () => void {
  const client = new (protos().health.grpc.health.v1.Health)(address, grpc.credentials.createInsecure(), {
    // The channel's own reconnect backoff grows to 2 minutes by default: a restarted worker would wait that long.
    "grpc.initial_reconnect_backoff_ms": REWATCH_FIRST_MS,
    "grpc.max_reconnect_backoff_ms": REWATCH_MAX_MS,
  });
  let stopped = false;
  let call: grpc.ClientReadableStream<HealthCheckResponse__Output> | undefined;
  let timer: NodeJS.Timeout | undefined;
  let pauseMs = REWATCH_FIRST_MS;
  const open = () => {
    if (stopped) return;
    // Wait for the connection (the channel retries it) rather than fail at once while the worker is away.
    const c = client.Watch({ service: "tpserve.worker.v1.Worker" }, new grpc.Metadata({ waitForReady: true }));
    call = c;
    c.on("data", (r: HealthCheckResponse__Output) => {
      pauseMs = REWATCH_FIRST_MS;
      onChange(r.status === "SERVING");
    });
    c.on("error", () => undefined);
    c.on("status", () => {
      if (stopped || call !== c) return;
      timer = setTimeout(open, pauseMs);
      timer.unref();
      pauseMs = Math.min(2 * pauseMs, REWATCH_MAX_MS);
    });
  };
  open();
  return () => {
    stopped = true;
    clearTimeout(timer);
    call?.cancel();
    client.close();
  };
}
