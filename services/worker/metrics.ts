// Prometheus metrics of a worker process (GET /metrics on --worker-metrics-port): forward passes, tokens computed,
// live sequences, weight and KV memory, plus Node's process metrics.
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

const STEP = [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1];

export class WorkerMetrics {
  readonly registry = new Registry();
  readonly forward: Histogram<"phase">;
  readonly tokens: Counter;

  constructor(gauges: () => { sequences: number; weightBytes: number; kvBytes: number }) {
    const registers = [this.registry];
    this.forward = new Histogram({
      name: "tpserve_worker_forward_seconds",
      help: "Forward pass time of one step on this worker, by phase (prefill: prompt tokens in the step)",
      labelNames: ["phase"],
      buckets: STEP,
      registers,
    });
    this.tokens = new Counter({
      name: "tpserve_worker_tokens_computed_total",
      help: "Tokens run through the model (prompt and generated)",
      registers,
    });
    const gauge = (name: string, help: string, read: () => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    gauge("tpserve_worker_sequences", "Sequences the worker holds state for", () => gauges().sequences);
    gauge("tpserve_worker_weight_bytes", "Bytes of model weights on this worker's device", () => gauges().weightBytes);
    gauge("tpserve_worker_kv_cache_bytes", "Bytes of the KV pool on this worker's device", () => gauges().kvBytes);
    collectDefaultMetrics({ register: this.registry, prefix: "tpserve_worker_" });
  }
}
