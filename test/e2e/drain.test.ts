// Graceful drain as Kubernetes drives it: SIGTERM to a router with streams in flight lets them finish, refuses new
// requests with UNAVAILABLE, then exits 0; past --drain-timeout-s the streams end cancelled and it still exits 0.
// SIGTERM to a worker: it goes NOT_SERVING (the router sends new requests nowhere else here, so UNAVAILABLE), keeps
// carrying out the sequences it holds until they finish, then exits 0. Real processes, as in containers.
import * as grpc from "@grpc/grpc-js";
import { afterEach, describe, expect, it } from "vitest";
import { type GenerateOutcome, generate, generationClient } from "../../services/common/client.js";
import type { GenerationClient } from "../../services/common/generated/tpserve/v1/Generation.js";
import { probe } from "../helpers/health.js";
import { killAll, type Proc, startRouterProcess, startWorkerProcess } from "../helpers/procs.js";

const MAX_TOKENS = 600;
const procs: Proc[] = [];
const clients: GenerationClient[] = [];

afterEach(() => {
  for (const c of clients.splice(0)) c.close();
  killAll(procs);
});

async function cluster(routerArgs: string[] = []) {
  const worker = await startWorkerProcess();
  procs.push(worker);
  const router = await startRouterProcess([worker.address], ["--decode-steps", "1", ...routerArgs]);
  procs.push(router);
  const client = generationClient(router.address);
  clients.push(client);
  return { worker, router, client };
}

/** Starts `n` long streams; resolves once every one has its first token. */
async function streamsInFlight(client: GenerationClient, n: number) {
  let started = 0;
  let firstAll: () => void = () => undefined;
  const allStarted = new Promise<void>((r) => {
    firstAll = r;
  });
  const finished: (GenerateOutcome | Error)[] = [];
  const outcomes = Array.from({ length: n }, (_, i) => {
    let first = true;
    return generate(client, { text: `Stream ${i} of the drain test:`, maxTokens: MAX_TOKENS, ignoreEos: true }, () => {
      if (first && ++started === n) firstAll();
      first = false;
    }).catch((e: Error) => e);
  });
  for (const o of outcomes) void o.then((r) => finished.push(r));
  await allStarted;
  return { outcomes: Promise.all(outcomes), finishedSoFar: () => finished.length };
}

function expectUnavailable(client: GenerationClient): Promise<void> {
  return generate(client, { text: "too late", maxTokens: 4 }).then(
    () => {
      throw new Error("a request after SIGTERM was served");
    },
    (e: grpc.ServiceError) => expect(e.code).toBe(grpc.status.UNAVAILABLE),
  );
}

describe("graceful drain on SIGTERM", () => {
  it("router: in-flight streams finish, new requests get UNAVAILABLE, exit code 0", async () => {
    const { router, client } = await cluster();
    expect(await probe(router.address, "")).toBe("SERVING");
    const { outcomes, finishedSoFar } = await streamsInFlight(client, 4);
    router.child.kill("SIGTERM");
    const m = await router.waitFor(/draining (\d+) in-flight request/);
    expect(Number(m[1])).toBe(4); // all four were still streaming when the signal came
    expect(await probe(router.address, "")).toBe("NOT_SERVING"); // readiness fails: Service endpoints drop it
    expect(finishedSoFar()).toBe(0);
    await expectUnavailable(client);
    const done = await outcomes;
    for (const o of done) {
      expect(o).not.toBeInstanceOf(Error);
      const out = o as GenerateOutcome;
      expect(out.finishReason).toBe("FINISH_REASON_LENGTH");
      expect(out.completionTokens).toBe(MAX_TOKENS);
      expect(out.ids.length).toBe(MAX_TOKENS);
    }
    expect(await router.exited).toBe(0);
    expect(router.stderr()).toMatch(/drained in \d+ ms; exiting/);
  });

  it("router: streams still running at --drain-timeout-s end cancelled, and it exits 0", async () => {
    const { router, client } = await cluster(["--drain-timeout-s", "0"]);
    const { outcomes } = await streamsInFlight(client, 2);
    router.child.kill("SIGTERM");
    const done = await outcomes;
    for (const o of done) {
      const out = o as GenerateOutcome;
      expect(out.finishReason).toBe("FINISH_REASON_CANCELLED");
      expect(out.completionTokens).toBeLessThan(MAX_TOKENS);
    }
    expect(await router.exited).toBe(0);
  });

  it("worker: goes NOT_SERVING, finishes the sequences it holds, then exits 0", async () => {
    const { worker, router, client } = await cluster();
    expect(await probe(worker.address, "tpserve.worker.v1.Worker")).toBe("SERVING"); // the readiness probe
    const { outcomes, finishedSoFar } = await streamsInFlight(client, 3);
    worker.child.kill("SIGTERM");
    // The router hears NOT_SERVING and sends nothing new to the draining worker (its only group).
    await router.waitFor(/worker draining: no new requests go to it/);
    expect(await probe(worker.address, "tpserve.worker.v1.Worker")).toBe("NOT_SERVING");
    expect(await probe(router.address, "")).toBe("NOT_SERVING"); // its only group drains: the router is not ready
    expect(finishedSoFar()).toBe(0);
    await expectUnavailable(client);
    const done = await outcomes;
    for (const o of done) {
      expect(o).not.toBeInstanceOf(Error);
      expect((o as GenerateOutcome).finishReason).toBe("FINISH_REASON_LENGTH");
      expect((o as GenerateOutcome).completionTokens).toBe(MAX_TOKENS);
    }
    expect(await worker.exited).toBe(0);
    expect(worker.stderr()).toMatch(/SIGTERM: drained in \d+ ms \(idle\); exiting/);
    expect(router.child.exitCode).toBeNull(); // the router keeps running
  });
});
