// Prometheus metrics of the router (prom-client), named `tpserve_*` after their vLLM `vllm:*` counterparts so that
// existing dashboards translate: request outcomes, running/waiting requests, TTFT, inter-token latency, end-to-end
// latency, queue time, prompt/generated tokens, batch size and step duration by phase, KV usage, preemptions, and
// the workers' forward time (reported with every step result).
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

/** Latency buckets (seconds) suited to LLM serving: sub-millisecond decode steps up to minute-long requests. */
const TOKEN_LATENCY = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5];
const REQUEST_LATENCY = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 40, 60, 120];
const BATCH = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512];

export interface SchedulerGauges {
  running: number;
  waiting: number;
  pagesTotal: number;
  pagesFree: number;
}

export class RouterMetrics {
  readonly registry = new Registry();
  readonly requests: Counter<"finished_reason">;
  readonly ttft: Histogram;
  readonly itl: Histogram;
  readonly e2e: Histogram;
  readonly queue: Histogram;
  readonly promptTokens: Counter;
  readonly generationTokens: Counter;
  readonly batchSize: Histogram<"phase">;
  readonly stepDuration: Histogram<"phase">;
  readonly forward: Histogram<"phase">;
  readonly preemptions: Counter;
  readonly retries: Counter;
  readonly readmissions: Counter;
  readonly prefixQueries: Counter;
  readonly prefixHits: Counter;

  constructor(gauges: () => SchedulerGauges, opts: { defaultMetrics?: boolean } = {}) {
    const registers = [this.registry];
    this.requests = new Counter({
      name: "tpserve_request_success_total",
      help: "Requests that ended, by finish reason (length, stop, eos, cancelled) or gRPC error name",
      labelNames: ["finished_reason"],
      registers,
    });
    const gauge = (name: string, help: string, read: (g: SchedulerGauges) => number) =>
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read(gauges()));
        },
      });
    gauge("tpserve_num_requests_running", "Requests in the running batch", (g) => g.running);
    gauge("tpserve_num_requests_waiting", "Requests waiting for a slot", (g) => g.waiting);
    gauge("tpserve_kv_cache_usage_perc", "Fraction of KV pages in use (0..1)", (g) =>
      g.pagesTotal > 0 ? 1 - g.pagesFree / g.pagesTotal : 0,
    );
    gauge("tpserve_kv_pages_free", "Free KV pages", (g) => g.pagesFree);
    gauge("tpserve_kv_pages_total", "Usable KV pages (page 0 excluded)", (g) => g.pagesTotal);
    this.ttft = new Histogram({
      name: "tpserve_time_to_first_token_seconds",
      help: "Time from arrival to the first generated token",
      buckets: REQUEST_LATENCY,
      registers,
    });
    this.itl = new Histogram({
      name: "tpserve_time_per_output_token_seconds",
      help: "Inter-token latency: time between consecutive generated tokens of a request",
      buckets: TOKEN_LATENCY,
      registers,
    });
    this.e2e = new Histogram({
      name: "tpserve_e2e_request_latency_seconds",
      help: "Time from arrival to the last chunk",
      buckets: REQUEST_LATENCY,
      registers,
    });
    this.queue = new Histogram({
      name: "tpserve_request_queue_time_seconds",
      help: "Time from arrival to the first step that runs the request",
      buckets: REQUEST_LATENCY,
      registers,
    });
    this.promptTokens = new Counter({ name: "tpserve_prompt_tokens_total", help: "Prompt tokens", registers });
    this.generationTokens = new Counter({
      name: "tpserve_generation_tokens_total",
      help: "Generated tokens",
      registers,
    });
    this.batchSize = new Histogram({
      name: "tpserve_batch_size",
      help: "Sequences in one step, by phase (prefill: the step computes a prompt chunk; decode: only decodes)",
      labelNames: ["phase"],
      buckets: BATCH,
      registers,
    });
    this.stepDuration = new Histogram({
      name: "tpserve_step_duration_seconds",
      help: "Wall time of one plan round trip to the worker, by phase",
      labelNames: ["phase"],
      buckets: TOKEN_LATENCY,
      registers,
    });
    this.forward = new Histogram({
      name: "tpserve_worker_forward_seconds",
      help: "Worker-side forward time of one step, by phase",
      labelNames: ["phase"],
      buckets: TOKEN_LATENCY,
      registers,
    });
    this.preemptions = new Counter({
      name: "tpserve_num_preemptions_total",
      help: "Sequences preempted (pages freed, recomputed later)",
      registers,
    });
    this.retries = new Counter({
      name: "tpserve_request_retries_total",
      help: "Requests moved to another worker group after theirs went out of service (from the tokens they had streamed)",
      registers,
    });
    this.readmissions = new Counter({
      name: "tpserve_worker_group_readmissions_total",
      help: "Failed worker groups (static workers) put back in service after their worker served again",
      registers,
    });
    this.prefixQueries = new Counter({
      name: "tpserve_prefix_cache_queries_total",
      help: "Prompt tokens looked up in the prefix cache (at each request's first admission)",
      registers,
    });
    this.prefixHits = new Counter({
      name: "tpserve_prefix_cache_hits_total",
      help: "Prompt tokens found in the prefix cache (their KV was not computed again)",
      registers,
    });
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: "tpserve_router_" });
  }
}
