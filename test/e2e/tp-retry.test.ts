// A tensor-parallel group whose rank dies while another group serves beside it: the leader reports the failed
// step (UNAVAILABLE), the router takes the group out of service at once and its requests run on in the other group
// from the tokens they streamed, so every client gets the golden greedy ids. (With no other group they end with
// UNAVAILABLE: tp-failure.test.ts.) Real worker processes (a `--tp 2` group and a single worker), an in-process router.
import { afterEach, describe, expect, it } from "vitest";
import { type RankProcess, startWorkerGroup, stopWorkerGroup } from "../../services/cli/tp-group.js";
import { generate, generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import { loadGolden } from "../helpers/golden.js";
import { type Proc, startWorkerProcess } from "../helpers/procs.js";

const golden = loadGolden().golden;
let ranks: RankProcess[] = [];
let single: Proc | undefined;
let router: RouterHandle | undefined;
let client: GenerationClient | undefined;

afterEach(async () => {
  client?.close();
  await router?.close(1000);
  await stopWorkerGroup(ranks);
  if (single?.child.exitCode === null) single.child.kill("SIGKILL");
});

describe("a tensor-parallel group whose rank dies, beside another group", () => {
  it("is taken out of service and its requests run on in the other group, with the golden tokens", async () => {
    ({ ranks } = await startWorkerGroup({
      ...workerConfigFromFlags(new Flags([])),
      threads: 1,
      kvCacheMiB: 16,
      logLevel: "silent",
      device: "cpu",
      tp: 2,
      tpTimeoutMs: 2000,
      port: 0,
    }));
    single = await startWorkerProcess();
    const leader = ranks[0]!.address!;
    const workers = [leader, single.address];
    router = await startRouter({
      ...routerConfigFromFlags(new Flags([]), workers),
      workers,
      port: 0,
      httpPort: 0,
      logLevel: "silent",
    });
    client = generationClient(router.address);
    const tpGroup = router.router.groups.find((g) => g.name.includes(leader.split(":").pop()!))!;
    // Sequence ids are 1..6 in submission order; the group's scheduler holds those it runs, with their tokens.
    const generatedOnTp = () =>
      golden.map((g, i) => {
        const s = tpGroup.scheduler.get(i + 1);
        return s ? s.tokens.length - g.prompt_ids.length : 0;
      });
    const outcomes = golden.map((g) =>
      generate(client!, { tokenIds: { ids: g.prompt_ids }, maxTokens: 32, ignoreEos: true }).catch((e: Error) => e),
    );
    const t0 = Date.now();
    while (!generatedOnTp().some((n) => n > 0) && Date.now() - t0 < 20_000) await new Promise((r) => setImmediate(r));
    const midway = generatedOnTp().filter((n) => n > 0 && n < 32).length;
    ranks[1]!.child.kill("SIGKILL"); // the follower: the leader's next collective notices its pid gone
    expect(midway).toBeGreaterThan(0);
    const results = await Promise.all(outcomes);
    for (const [i, r] of results.entries()) {
      if (r instanceof Error) throw new Error(`prompt ${i} failed: ${r.message}`);
      expect(r.ids, `prompt ${i}`).toEqual(golden[i]!.greedy_ids);
    }
    expect(router.router.counters.requestsRetried).toBeGreaterThanOrEqual(midway);
    expect(tpGroup.healthy).toBe(false);
  }, 60_000);
});
