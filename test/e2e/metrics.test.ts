// GET /metrics after a known workload: the counters and histograms carry the right counts.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";
import { waitFor } from "../helpers/multi-router.js";

const golden = loadGolden().golden;

/** The value of one sample line, e.g. metric('tpserve_generation_tokens_total'). */
function sample(text: string, name: string): number {
  const line = text.split("\n").find((l) => l.startsWith(name + " ") || (l.startsWith(name + "{") && l.includes("} ")));
  if (!line) throw new Error(`no sample ${name} in:\n${text.slice(0, 2000)}`);
  return Number(line.slice(line.lastIndexOf(" ") + 1));
}

describe("Prometheus metrics", () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({ metricsPort: 0 }, { decodeSteps: 2 });
  });
  afterAll(async () => c?.close());

  it("counts requests by outcome, tokens, and observes every latency once per token or request", async () => {
    const reqs = [
      { text: golden[0]!.prompt, maxTokens: 10, ignoreEos: true },
      { text: golden[1]!.prompt, maxTokens: 7, ignoreEos: true },
      { text: golden[0]!.prompt, maxTokens: 32, stop: ["leader"] },
    ];
    const outs = await Promise.all(reqs.map((r) => generate(c.client, r)));
    const bad = await generate(c.client, { text: "Hi", maxTokens: 0 }).catch((e: grpc.ServiceError) => e);
    expect((bad as grpc.ServiceError).code).toBe(grpc.status.INVALID_ARGUMENT);

    const res = await fetch(`http://127.0.0.1:${c.router.httpPort}/metrics`);
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/text\/plain/);
    const text = await res.text();
    const generated = outs.reduce((n, o) => n + o.ids.length, 0);
    const prompt = outs.reduce((n, o) => n + o.promptTokens, 0);
    expect(sample(text, 'tpserve_request_success_total{finished_reason="length"}')).toBe(2);
    expect(sample(text, 'tpserve_request_success_total{finished_reason="stop"}')).toBe(1);
    expect(sample(text, 'tpserve_request_success_total{finished_reason="INVALID_ARGUMENT"}')).toBe(1);
    expect(sample(text, "tpserve_generation_tokens_total")).toBe(generated);
    expect(sample(text, "tpserve_prompt_tokens_total")).toBe(prompt);
    expect(sample(text, "tpserve_time_to_first_token_seconds_count")).toBe(3);
    expect(sample(text, "tpserve_e2e_request_latency_seconds_count")).toBe(3);
    expect(sample(text, "tpserve_request_queue_time_seconds_count")).toBe(3);
    expect(sample(text, "tpserve_time_per_output_token_seconds_count")).toBe(generated - 3);
    expect(sample(text, "tpserve_num_requests_running")).toBe(0);
    expect(sample(text, "tpserve_num_requests_waiting")).toBe(0);
    expect(sample(text, "tpserve_kv_cache_usage_perc")).toBe(0);
    expect(sample(text, 'tpserve_batch_size_count{phase="prefill"}')).toBeGreaterThan(0);
    expect(sample(text, 'tpserve_batch_size_count{phase="decode"}')).toBeGreaterThan(0);
    expect(sample(text, 'tpserve_worker_forward_seconds_count{phase="decode"}')).toBeGreaterThan(0);
    expect(sample(text, "tpserve_num_preemptions_total")).toBe(0);
    expect((await fetch(`http://127.0.0.1:${c.router.httpPort}/nope`)).status).toBe(404);

    // The worker process serves its own metrics: every forward pass and token it computed. A sequence the router
    // ended at a stop string leaves the worker when the plan it is in ends (the next plan drops it): wait for that.
    await waitFor(() => c.worker.executor.stats().sequences === 0, "the worker to drop the stopped sequence", 5000);
    const w = await (await fetch(`http://127.0.0.1:${c.worker.metricsPort}/metrics`)).text();
    const steps = c.worker.executor.stats();
    const fwd =
      sample(w, 'tpserve_worker_forward_seconds_count{phase="prefill"}') +
      sample(w, 'tpserve_worker_forward_seconds_count{phase="decode"}');
    expect(fwd).toBe(steps.steps);
    expect(sample(w, "tpserve_worker_tokens_computed_total")).toBe(steps.tokensComputed);
    expect(sample(w, "tpserve_worker_weight_bytes")).toBeGreaterThan(1e6);
    expect(sample(w, "tpserve_worker_sequences")).toBe(0);
  });
});
