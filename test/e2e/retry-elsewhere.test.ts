// A worker group that goes out of service before its requests produced a token: the router runs those requests
// again on the other group, and each client sees one ordinary stream (the golden greedy ids). A request that already
// streamed tokens still fails with UNAVAILABLE (tp-failure.test.ts). Real worker processes, an in-process router.
import { afterEach, describe, expect, it } from "vitest";
import { generate, generationClient } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";
import { loadGolden } from "../helpers/golden.js";
import { type Proc, startWorkerProcess } from "../helpers/procs.js";

const golden = loadGolden().golden;
const procs: Proc[] = [];
let router: RouterHandle | undefined;
let client: GenerationClient | undefined;

afterEach(async () => {
  client?.close();
  await router?.close();
  for (const p of procs.splice(0)) if (p.child.exitCode === null) p.child.kill("SIGKILL");
});

describe("a group that fails before its requests' first token", () => {
  it("has those requests finished by the other group, with the same tokens", async () => {
    const [a, b] = await Promise.all([startWorkerProcess(), startWorkerProcess()]);
    procs.push(a!, b!);
    const workers = [a!.address, b!.address];
    router = await startRouter({
      ...routerConfigFromFlags(new Flags([]), workers),
      workers,
      port: 0,
      httpPort: 0,
      logLevel: "silent",
    });
    client = generationClient(router.address);
    a!.child.kill("SIGSTOP"); // worker a hangs: the requests the router sends it make no progress
    const outcomes = golden.map((g) =>
      generate(client!, { tokenIds: { ids: g.prompt_ids }, maxTokens: 32, ignoreEos: true }).catch((e: Error) => e),
    );
    await new Promise((r) => setTimeout(r, 500));
    const onA = router.router.groups.find((g) => g.name.includes(a!.address.split(":").pop()!));
    expect(onA?.scheduler.stats().running ?? 0).toBeGreaterThan(0); // the least-loaded pick sent it some of them
    a!.child.kill("SIGKILL"); // its step stream breaks: the group goes out of service
    const results = await Promise.all(outcomes);
    for (const [i, r] of results.entries()) {
      if (r instanceof Error) throw new Error(`prompt ${i} failed: ${r.message}`);
      expect(r.ids, `prompt ${i}`).toEqual(golden[i]!.greedy_ids);
    }
    expect(router.router.counters.requestsRetried).toBeGreaterThan(0);
    expect(router.router.counters.requestsRetried).toBeLessThan(golden.length);
  }, 60_000);
});
