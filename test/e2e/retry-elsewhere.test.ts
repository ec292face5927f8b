// A worker group that goes out of service: the router runs its requests on in the other group, and each client sees
// one ordinary stream (the golden greedy ids), whether the group failed before a request's first token or in the
// middle of its generation (the other group computes the prompt and the streamed tokens again and goes on). A
// tensor-parallel group with a dead rank: tp-retry.test.ts. Real worker processes, an in-process router.
import { describe, expect, it } from "vitest";
import { loadGolden } from "../helpers/golden.js";
import {
  expectGoldenEnds,
  midwayIn,
  routerOver,
  startGoldenStreams,
  untilOneStreamed,
} from "../helpers/moved-requests.js";
import { restartFixture } from "../helpers/worker-restarts.js";

const golden = loadGolden().golden;
const fx = restartFixture();

/** Two worker processes behind an in-process router; `onA` is the router's group of worker a. */
async function twoWorkers() {
  const [a, b] = await Promise.all([fx.worker(), fx.worker()]);
  const { router: r, first: onA } = await routerOver([a.address, b.address]);
  return { a, onA, r: r.router, client: fx.use(r) };
}

describe("a group that fails before its requests' first token", () => {
  it("has those requests finished by the other group, with the same tokens", async () => {
    const { a, onA, r: rt, client } = await twoWorkers();
    a.child.kill("SIGSTOP"); // worker a hangs: the requests the router sends it make no progress
    const outcomes = startGoldenStreams(client);
    await new Promise((r) => setTimeout(r, 500));
    expect(onA.scheduler.stats().running).toBeGreaterThan(0); // the least-loaded pick sent it some of them
    a.child.kill("SIGKILL"); // its step stream breaks: the group goes out of service
    await expectGoldenEnds(outcomes);
    expect(rt.counters.requestsRetried).toBeGreaterThan(0);
    expect(rt.counters.requestsRetried).toBeLessThan(golden.length);
  }, 60_000);
});

describe("a group that fails in the middle of its requests' generation", () => {
  it("has the other group go on from the streamed tokens, with the same tokens in the end", async () => {
    const { a, onA, r: rt, client } = await twoWorkers();
    const outcomes = startGoldenStreams(client);
    // Stop worker a as soon as one of its sequences has streamed a token, then check that one is midway.
    await untilOneStreamed(onA);
    a.child.kill("SIGSTOP");
    await new Promise((r) => setTimeout(r, 200)); // tokens already on the wire arrive
    const midway = midwayIn(onA);
    expect(midway).toBeGreaterThan(0);
    a.child.kill("SIGKILL");
    await expectGoldenEnds(outcomes);
    expect(rt.counters.requestsRetried).toBeGreaterThanOrEqual(midway);
  }, 60_000);
});
