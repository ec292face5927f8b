// Continuous batching does not change results: concurrent streams of different prompt and output lengths give
// the ids each gives alone, and the step log shows requests joining and leaving while others run.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GenerateOutcome, generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

function requests(n: number) {
  return Array.from({ length: n }, (_, i) => {
    const g = golden[i % golden.length]!;
    // Different prompt lengths: repeat the prompt a few times; different output lengths.
    const text = Array.from({ length: 1 + (i % 4) }, () => g.prompt).join(" ");
    return { text, maxTokens: 6 + ((i * 11) % 40), ignoreEos: true };
  });
}

describe("continuous batching", () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({}, { maxBatchTokens: 64, decodeSteps: 4 });
  });
  afterAll(async () => c?.close());

  it("16 concurrent streams each produce the ids they produce alone; requests join and leave mid-run", async () => {
    const reqs = requests(16);
    const alone: GenerateOutcome[] = [];
    for (const r of reqs) alone.push(await generate(c.client, r));
    const logStart = c.router.router.groups[0]!.stepLog.length;
    // Staggered arrivals so that some join while others decode.
    const together = await Promise.all(
      reqs.map(async (r, i) => {
        await new Promise((res) => setTimeout(res, (i % 4) * 15));
        return generate(c.client, r);
      }),
    );
    together.forEach((o, i) => {
      expect(o.ids, `request ${i}`).toEqual(alone[i]!.ids);
      expect(o.text).toBe(alone[i]!.text);
    });
    const log = c.router.router.groups[0]!.stepLog.slice(logStart);
    const maxBatch = Math.max(...log.map((e) => e.scheduled));
    expect(maxBatch).toBeGreaterThan(4);
    // Some step admits a request while others are already running, and some request leaves while others go on.
    const joinedMidRun = log.some((e, k) => k > 0 && e.joined.length > 0 && e.scheduled > e.joined.length);
    const leftMidRun = log.some((e) => e.left.length > 0 && e.scheduled > 0);
    expect(joinedMidRun).toBe(true);
    expect(leftMidRun || log.some((e) => e.scheduled > 0 && e.scheduled < maxBatch)).toBe(true);
    // A long prompt's prefill is chunked under the 64-token budget.
    expect(Math.max(...log.map((e) => e.tokens))).toBeLessThanOrEqual(64);
  });

  it("seeded sampling is reproducible alone and in a batch", async () => {
    const r = {
      text: golden[1]!.prompt,
      maxTokens: 24,
      sampling: { temperature: 0.9, topP: 0.9, topK: 40, seed: 1234 },
    };
    const a = await generate(c.client, r);
    const batch = await Promise.all([
      generate(c.client, r),
      generate(c.client, { ...r, sampling: { ...r.sampling, seed: 99 } }),
      generate(c.client, { text: golden[2]!.prompt, maxTokens: 30 }),
    ]);
    expect(batch[0]!.ids).toEqual(a.ids);
    expect(batch[1]!.ids).not.toEqual(a.ids);
  });
});
