// Prefix caching end to end on the CPU worker: requests sharing a long system prompt give the same greedy ids
// with caching on and off, most of their prompt tokens are found cached, and the hit counters reach /metrics.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;
const system = Array.from({ length: 6 }, (_, i) => golden[i % golden.length]!.prompt).join(" ");
const reqs = Array.from({ length: 10 }, (_, i) => ({
  text: `${system} ${golden[(i + 2) % golden.length]!.prompt.split(" ")
    .slice(0, 2 + (i % 5))
    .join(" ")}`,
  maxTokens: 8 + ((i * 7) % 20),
  ignoreEos: true,
}));

describe("prefix caching", () => {
  let on: Cluster;
  let off: Cluster;
  beforeAll(async () => {
    on = await startCluster({}, { maxBatchTokens: 128 });
    off = await startCluster({}, { maxBatchTokens: 128, prefixCache: false });
  });
  afterAll(async () => {
    await on?.close();
    await off?.close();
  });

  it("gives the ids of an uncached run, one by one and concurrently, and counts hits", async () => {
    const want = [];
    for (const r of reqs) want.push((await generate(off.client, r)).ids);
    expect(off.router.router.counters.prefixHitTokens).toBe(0);
    for (const [i, r] of reqs.entries()) expect((await generate(on.client, r)).ids, `request ${i}`).toEqual(want[i]);
    const c = on.router.router.counters;
    // Every request after the first finds the system prompt's full blocks cached.
    expect(c.prefixHitTokens).toBeGreaterThan(0.6 * (c.prefixQueryTokens - c.prefixQueryTokens / reqs.length));
    const together = await Promise.all(reqs.map((r) => generate(on.client, r)));
    for (const [i, o] of together.entries()) expect(o.ids, `request ${i} (concurrent)`).toEqual(want[i]);
    const metrics = await (await fetch(`http://127.0.0.1:${on.router.httpPort}/metrics`)).text();
    const hits = Number(/^tpserve_prefix_cache_hits_total (\d+)/m.exec(metrics)?.[1]);
    const queries = Number(/^tpserve_prefix_cache_queries_total (\d+)/m.exec(metrics)?.[1]);
    expect(hits).toBe(on.router.router.counters.prefixHitTokens);
    expect(queries).toBe(on.router.router.counters.prefixQueryTokens);
    expect(hits / queries).toBeGreaterThan(0.7);
  });
});
