// Memory pressure: a KV pool too small for every running sequence. Sequences are preempted and recomputed; every
// request still gets the ids it gets alone, and an invariant check after every plan sees no page owned twice.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GenerateOutcome, generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe("KV pool pressure", () => {
  let c: Cluster;
  beforeAll(async () => {
    // 24 usable pages of 16 tokens = 384 token slots for 10 sequences of up to ~90 tokens each.
    c = await startCluster({ numPages: 25 }, { maxBatchTokens: 128, decodeSteps: 2 });
  });
  afterAll(async () => c?.close());

  it("preempts and recomputes without changing any request's ids or sharing a page", async () => {
    const scheduler = c.router.router.groups[0]!.scheduler;
    const violations: string[] = [];
    const schedule = scheduler.schedule.bind(scheduler);
    scheduler.schedule = () => {
      const plan = schedule();
      const bad = scheduler.checkInvariants();
      if (bad) violations.push(bad);
      return plan;
    };
    const reqs = Array.from({ length: 10 }, (_, i) => ({
      text: `${golden[i % 6]!.prompt} ${golden[(i + 1) % 6]!.prompt}`,
      maxTokens: 60 + (i % 3) * 10,
      ignoreEos: true,
    }));
    const alone: GenerateOutcome[] = [];
    for (const r of reqs) alone.push(await generate(c.client, r));
    const before = scheduler.stats().preemptions;
    const together = await Promise.all(reqs.map((r) => generate(c.client, r)));
    for (const [i, o] of together.entries()) expect(o.ids, `request ${i}`).toEqual(alone[i]!.ids);
    expect(scheduler.stats().preemptions).toBeGreaterThan(before);
    expect(together.some((o) => o.preemptions > 0)).toBe(true);
    expect(violations).toEqual([]);
    expect(scheduler.stats().pagesFree).toBe(24);
  });
});
