// --group-wait-ms (the default of `tpserve serve`): while no worker group is in service (the only worker's process
// died), requests wait for one to come back on the same port instead of failing at once. Those the dead group was
// running go on from the tokens they had streamed, those that arrived meanwhile start there, and every client sees
// one ordinary stream with the golden ids (an embedding request waits too); one cancelled while it waits never runs;
// a wait that ends first gives UNAVAILABLE naming the flag. Real worker processes, an in-process router.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import { type RouterHandle, startRouter } from "../../services/router/main.js";
import { loadGolden } from "../helpers/golden.js";
import {
  expectGoldenEnds,
  GOLDEN_TOKENS,
  midwayIn,
  startGoldenStreams,
  untilOneStreamed,
} from "../helpers/moved-requests.js";
import { waitFor } from "../helpers/multi-router.js";
import { killOutOfService, restartFixture } from "../helpers/worker-restarts.js";

const golden = loadGolden().golden;
const fx = restartFixture();
const worker = fx.worker;

/** A worker behind an in-process router with --group-wait-ms `ms`: the router, its client, the worker and its port. */
async function routerWaiting(ms: number) {
  const first = await worker();
  const address = first.address;
  const cfg = routerConfigFromFlags(new Flags(["--group-wait-ms", String(ms)]), [address]);
  const r: RouterHandle = await startRouter({ ...cfg, workers: [address], port: 0, httpPort: 0, logLevel: "silent" });
  return { r, client: fx.use(r), first, port: address.split(":").pop()! };
}

/** routerWaiting, with its worker killed and its group out of service. */
async function routerWithWorkerDown(ms: number) {
  const setup = await routerWaiting(ms);
  await killOutOfService(setup.first, setup.r);
  return setup;
}

/** Golden prompt i, its 32 greedy tokens (EOS ignored). */
const goldenGen = (client: GenerationClient, i: number) =>
  generate(client, { tokenIds: { ids: golden[i]!.prompt_ids }, maxTokens: GOLDEN_TOKENS, ignoreEos: true });

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("requests while the only worker group restarts (--group-wait-ms)", () => {
  it("go on in the restarted group: those it was running from their streamed tokens, new ones from the start", async () => {
    const { r, client, first, port } = await routerWaiting(30_000);
    const dying = r.router.groups[0]!;
    const outcomes = startGoldenStreams(client);
    await untilOneStreamed(dying);
    first.child.kill("SIGSTOP");
    await sleep(200); // tokens already on the wire arrive
    const midway = midwayIn(dying);
    expect(midway).toBeGreaterThan(0);
    await killOutOfService(first, r);
    // Arrive while no group is in service: wait instead of UNAVAILABLE.
    const late = goldenGen(client, 0);
    const embedding = r.router.embed({ text: golden[3]!.prompt });
    await sleep(300);
    await worker(["--worker-port", port]);
    await expectGoldenEnds(outcomes);
    const l = await late;
    expect(l.ids).toEqual(golden[0]!.greedy_ids);
    expect((await embedding).values.length).toBeGreaterThan(0);
    expect(r.router.counters.requestsRetried).toBeGreaterThanOrEqual(midway);
    expect(r.router.groups).toHaveLength(1);
    expect(r.router.groups[0]).not.toBe(dying);
  }, 60_000);

  it("drops a request whose client cancels while it waits", async () => {
    const { r, client, port } = await routerWithWorkerDown(30_000);
    const call = client.Generate({ text: "Hello", maxTokens: 4 });
    const ended = new Promise((resolve) => {
      call.on("error", resolve);
      call.on("end", resolve);
    });
    call.on("data", () => undefined);
    await sleep(200);
    call.cancel();
    await ended;
    await worker(["--worker-port", port]);
    await waitFor(() => r.router.healthy, "the router to put the worker back in service", 10_000);
    await sleep(300);
    expect(r.router.counters.promptTokens).toBe(0); // the cancelled request never reached the group
    expect(r.router.inFlight).toBe(0);
    const ok = await goldenGen(client, 2);
    expect(ok.ids).toEqual(golden[2]!.greedy_ids);
  }, 60_000);

  it("ends with UNAVAILABLE naming --group-wait-ms when no group comes back in time, and serves after", async () => {
    const { r, client, port } = await routerWithWorkerDown(400);
    const t0 = Date.now();
    const err = (await generate(client, { text: "Hello", maxTokens: 4 }).catch((e) => e)) as grpc.ServiceError;
    const waited = Date.now() - t0;
    expect(err.code).toBe(grpc.status.UNAVAILABLE);
    expect(err.details).toMatch(/no healthy worker group came into service within 400 ms \(--group-wait-ms\)/);
    expect(waited).toBeGreaterThanOrEqual(350);
    expect(waited).toBeLessThan(5000);
    await expect(r.router.embed({ text: "Hello" })).rejects.toMatchObject({
      code: grpc.status.UNAVAILABLE,
      details: "no healthy worker group came into service within 400 ms (--group-wait-ms)",
    });
    await worker(["--worker-port", port]);
    await waitFor(() => r.router.healthy, "the router to put the worker back in service", 10_000);
    const ok = await goldenGen(client, 1);
    expect(ok.ids).toEqual(golden[1]!.greedy_ids);
  }, 60_000);
});
