// A tensor-parallel group whose rank dies while another group serves beside it: the leader reports the failed
// step (UNAVAILABLE), the router takes the group out of service at once and its requests run on in the other group
// from the tokens they streamed, so every client gets the golden greedy ids. (With no other group they end with
// UNAVAILABLE: tp-failure.test.ts.) Real worker processes (a `--tp 2` group and a single worker), an in-process router.
import { afterEach, describe, expect, it } from "vitest";
import { type RankProcess, startWorkerGroup, stopWorkerGroup } from "../../services/cli/tp-group.js";
import { generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import type { RouterHandle } from "../../services/router/main.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import {
  expectGoldenEnds,
  midwayIn,
  routerOver,
  startGoldenStreams,
  untilOneStreamed,
} from "../helpers/moved-requests.js";
import { type Proc, startWorkerProcess } from "../helpers/procs.js";

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
    const { router: r, first: tpGroup } = await routerOver([ranks[0]!.address!, single.address]);
    router = r;
    client = generationClient(r.address);
    const outcomes = startGoldenStreams(client);
    await untilOneStreamed(tpGroup);
    const midway = midwayIn(tpGroup);
    ranks[1]!.child.kill("SIGKILL"); // the follower: the leader's next collective notices its pid gone
    expect(midway).toBeGreaterThan(0);
    await expectGoldenEnds(outcomes);
    expect(router.router.counters.requestsRetried).toBeGreaterThanOrEqual(midway);
    expect(tpGroup.healthy).toBe(false);
  }, 60_000);
});
