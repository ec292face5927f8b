// Worker health and graceful drain. The worker serves grpc.health.v1: SERVING once the model is loaded (the server
// only binds after loading), NOT_SERVING while it drains. Routers watch it and stop placing new sequences on a
// draining worker; Kubernetes probes read it too. On SIGTERM the worker drains: it keeps carrying out the plans of
// the sequences it already holds until none is left (or no plan has come for `quietMs`, or the deadline passes),
// then closes.
import * as grpc from "@grpc/grpc-js";
import type { HealthCheckRequest__Output } from "../common/generated/grpc/health/v1/HealthCheckRequest.js";
import type { HealthCheckResponse } from "../common/generated/grpc/health/v1/HealthCheckResponse.js";

type Status = "SERVING" | "NOT_SERVING";

/** Service names the worker answers for ("" is the whole server). */
const SERVICES = new Set(["", "tpserve.worker.v1.Worker"]);

export class WorkerHealth {
  private current: Status = "SERVING";
  private readonly watchers = new Set<grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>>();

  get status(): Status {
    return this.current;
  }

  set(status: Status): void {
    if (status === this.current) return;
    this.current = status;
    for (const w of this.watchers) w.write({ status });
  }

  /** Ends open Watch streams (the server is closing). */
  close(): void {
    for (const w of this.watchers) w.end();
    this.watchers.clear();
  }

  /** The grpc.health.v1.Health implementation. */
  handlers(): grpc.UntypedServiceImplementation {
    return {
      Check: (
        call: grpc.ServerUnaryCall<HealthCheckRequest__Output, HealthCheckResponse>,
        cb: grpc.sendUnaryData<HealthCheckResponse>,
      ) => {
        if (!SERVICES.has(call.request.service)) {
          cb({ code: grpc.status.NOT_FOUND, details: `unknown service "${call.request.service}"` });
          return;
        }
        cb(null, { status: this.current });
      },
      Watch: (call: grpc.ServerWritableStream<HealthCheckRequest__Output, HealthCheckResponse>) => {
        if (!SERVICES.has(call.request.service)) {
          call.write({ status: "SERVICE_UNKNOWN" });
          return;
        }
        call.write({ status: this.current });
        this.watchers.add(call);
        call.on("cancelled", () => this.watchers.delete(call));
      },
    };
  }
}

export interface DrainOptions {
  /** The longest the drain may take; past it the worker closes with sequences still held. */
  timeoutMs: number;
  /** No plan for this long means the router has nothing more for this worker (default 2 s). */
  quietMs?: number;
  /** Sequences the worker holds and steps it has run so far (read each poll). */
  progress: () => { sequences: number; steps: number };
}

export interface DrainOutcome {
  reason: "idle" | "quiet" | "deadline";
  /** Sequences still held when the drain ended (0 when idle). */
  sequences: number;
  ms: number;
}

/** Marks the worker NOT_SERVING and waits until its sequences are done (see the file comment). */
export async function drainWorker(health: WorkerHealth, opts: DrainOptions): Promise<DrainOutcome> {
  health.set("NOT_SERVING");
  const t0 = Date.now();
  const quietMs = opts.quietMs ?? 2000;
  let lastSteps = opts.progress().steps;
  let lastChange = t0;
  for (;;) {
    const { sequences, steps } = opts.progress();
    const now = Date.now();
    if (steps !== lastSteps) {
      lastSteps = steps;
      lastChange = now;
    }
    if (sequences === 0) return { reason: "idle", sequences, ms: now - t0 };
    if (now - lastChange >= quietMs) return { reason: "quiet", sequences, ms: now - t0 };
    if (now - t0 >= opts.timeoutMs) return { reason: "deadline", sequences, ms: now - t0 };
    await new Promise((r) => setTimeout(r, 25));
  }
}
