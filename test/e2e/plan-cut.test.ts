// Long multi-step decode plans end early when new work arrives: a request that comes in while a 64-step plan runs
// joins after the step in progress (the router sends the worker a cut), and a plan whose only sequence ended at a
// stop string stops there. Results stay what they are without cuts.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { type GenerateOutcome, generate } from "../../services/common/client.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;
const STEPS = 64;

describe("cutting multi-step decode plans", () => {
  let c: Cluster;
  beforeAll(async () => {
    // Every decode-only plan asks for 64 steps (no adaptive lookahead).
    c = await startCluster({}, { decodeSteps: STEPS, decodeLookaheadMs: 0 });
  });
  afterAll(async () => c?.close());
  const log = () => c.router.router.groups[0]!.stepLog;

  it("a request arriving during a long plan joins after the step in progress; ids as alone", async () => {
    const a = { text: golden[0]!.prompt, maxTokens: 150, ignoreEos: true };
    const b = { text: golden[3]!.prompt, maxTokens: 6, ignoreEos: true };
    const aloneA = await generate(c.client, a);
    const aloneB = await generate(c.client, b);
    const start = log().length;
    let n = 0;
    let second: Promise<GenerateOutcome> | undefined;
    let aTokensWhenBDone = -1;
    const first = await generate(c.client, a, (chunk) => {
      n += chunk.tokenIds.length;
      if (n >= 10 && !second)
        second = generate(c.client, b).then((o) => {
          aTokensWhenBDone = n;
          return o;
        });
    });
    const other = await second!;
    expect(first.ids).toEqual(aloneA.ids);
    expect(other.ids).toEqual(aloneB.ids);
    const entries = log().slice(start);
    const cut = entries.filter((e) => e.cut);
    expect(cut.length).toBeGreaterThan(0);
    for (const e of cut) expect(e.subSteps).toBeLessThan(STEPS);
    // B joined (A joined in the first entry) in the plan right after a cut one, and was done long before A was.
    const joinedAt = entries.findIndex((e, k) => k > 0 && e.joined.length > 0);
    expect(joinedAt).toBeGreaterThan(0);
    expect(entries[joinedAt - 1]!.cut).toBe(true);
    expect(aTokensWhenBDone).toBeGreaterThan(0);
    expect(aTokensWhenBDone).toBeLessThan(10 + STEPS);
  });

  it("a plan whose only sequence ends at a stop string stops there instead of running its 64 steps", async () => {
    const probe = await generate(c.client, { text: golden[1]!.prompt, maxTokens: 40, ignoreEos: true });
    // Stop at the text of the 5th generated token onward: the sequence ends early at the router.
    const stopAt = probe.text.slice(probe.text.length / 4, probe.text.length / 4 + 3);
    expect(stopAt.trim().length).toBeGreaterThan(0);
    const start = log().length;
    const out = await generate(c.client, { text: golden[1]!.prompt, maxTokens: 200, ignoreEos: true, stop: [stopAt] });
    expect(out.finishReason).toBe("FINISH_REASON_STOP");
    await new Promise((r) => setTimeout(r, 50)); // the cut plan's last result
    const entries = log().slice(start);
    const decodePlans = entries.filter((e) => e.decodeSteps === STEPS);
    expect(decodePlans.length).toBeGreaterThan(0);
    expect(decodePlans.some((e) => e.cut && e.subSteps < STEPS)).toBe(true);
    // Tokens computed for it in all: far fewer than the 200 it was allowed, or the 64 of one plan past the stop.
    const computed = entries.reduce((k, e) => k + (e.decodeSteps === STEPS ? e.subSteps : 1), 0);
    expect(computed).toBeLessThan(out.ids.length + STEPS);
  });
});
