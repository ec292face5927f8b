// The TypeScript client against a real router + worker (and, for retries, a scripted server).
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { AbortError, Client } from "../../services/client/index.js";
import { unary } from "../../services/common/client.js";
import type { StatsResponse__Output } from "../../services/common/generated/tpserve/v1/StatsResponse.js";
import { protos } from "../../services/common/proto.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe("Client", () => {
  let c: Cluster;
  let client: Client;
  beforeAll(async () => {
    c = await startCluster({}, { decodeSteps: 1 });
    client = new Client({ address: c.router.address });
  });
  afterAll(async () => {
    client?.close();
    await c?.close();
  });

  it("generate() is an async iterator of chunks; complete() gathers them", async () => {
    const g = golden[0]!;
    const ids: number[] = [];
    let last: string | undefined;
    for await (const chunk of client.generate({ prompt: g.prompt, maxTokens: 32, ignoreEos: true })) {
      ids.push(...chunk.tokenIds);
      last = chunk.finishReason ?? last;
    }
    expect(ids).toEqual(g.greedy_ids);
    expect(last).toBe("length");
    const done = await client.complete({ tokenIds: g.prompt_ids, maxTokens: 32, ignoreEos: true });
    expect(done.ids).toEqual(g.greedy_ids);
    expect(done.text).toBe(g.text);
    expect(done.usage).toEqual({ promptTokens: g.prompt_ids.length, completionTokens: 32, preemptions: 0 });
    expect(await client.tokenize(g.prompt)).toEqual(g.prompt_ids);
    expect((await client.modelInfo()).vocabSize).toBe(4096);
  });

  it("an AbortSignal cancels the stream on the server; breaking out of the loop does too", async () => {
    const stats = () => unary<object, StatsResponse__Output>((r, cb) => c.client.Stats(r, cb), {});
    const ac = new AbortController();
    let n = 0;
    const run = async () => {
      for await (const _ of client.generate(
        { prompt: golden[1]!.prompt, maxTokens: 800, ignoreEos: true },
        { signal: ac.signal },
      )) {
        if (++n === 3) ac.abort();
      }
    };
    await expect(run()).rejects.toBeInstanceOf(AbortError);
    for await (const _ of client.generate({ prompt: golden[2]!.prompt, maxTokens: 800, ignoreEos: true })) break;
    let s = await stats();
    for (let i = 0; i < 200 && (s.running !== 0 || s.pagesFree !== s.pagesTotal); i++) {
      await new Promise((r) => setTimeout(r, 10));
      s = await stats();
    }
    expect(s.running).toBe(0);
    expect(s.pagesFree).toBe(s.pagesTotal);
  });

  it("deadlines end a call with DEADLINE_EXCEEDED; bad input is not retried", async () => {
    const slow = client.complete({ prompt: golden[3]!.prompt, maxTokens: 900, ignoreEos: true }, { deadlineMs: 30 });
    await expect(slow).rejects.toMatchObject({ code: grpc.status.DEADLINE_EXCEEDED });
    await expect(client.complete({ prompt: "Hi", maxTokens: 0 })).rejects.toMatchObject({
      code: grpc.status.INVALID_ARGUMENT,
    });
    await expect(client.generate({ maxTokens: 3 }).next()).rejects.toThrow(/exactly one of `prompt` and `tokenIds`/);
  });
});

describe("Client retries", () => {
  /** A Generation server that answers the first `failures` Generate calls with `code`, then one chunk. */
  async function scripted(failures: number, code: grpc.status, failAfterChunk = false) {
    let calls = 0;
    const server = new grpc.Server();
    server.addService(protos().generation.tpserve.v1.Generation.service, {
      Generate: (call: grpc.ServerWritableStream<unknown, unknown>) => {
        calls++;
        if (failAfterChunk) {
          call.write({ requestId: "r", tokenIds: [5], text: "x" });
          call.emit("error", { code, details: "went away mid-stream" });
          return;
        }
        if (calls <= failures) {
          call.emit("error", { code, details: "try again" });
          return;
        }
        call.write({ requestId: "r", tokenIds: [7], text: "ok", finishReason: "FINISH_REASON_LENGTH" });
        call.end();
      },
    });
    const port = await new Promise<number>((res, rej) =>
      server.bindAsync("127.0.0.1:0", grpc.ServerCredentials.createInsecure(), (e, p) => (e ? rej(e) : res(p))),
    );
    return { server, port, calls: () => calls };
  }

  it("retries UNAVAILABLE before the first chunk, up to `retries` times", async () => {
    const s = await scripted(2, grpc.status.UNAVAILABLE);
    const cl = new Client({ address: `127.0.0.1:${s.port}`, retries: 2, retryDelayMs: 1 });
    expect((await cl.complete({ prompt: "a" })).ids).toEqual([7]);
    expect(s.calls()).toBe(3);
    cl.close();
    s.server.forceShutdown();
  });

  it("gives up after `retries`, and never retries once output was streamed", async () => {
    const s = await scripted(5, grpc.status.RESOURCE_EXHAUSTED);
    const cl = new Client({ address: `127.0.0.1:${s.port}`, retries: 1, retryDelayMs: 1 });
    await expect(cl.complete({ prompt: "a" })).rejects.toMatchObject({ code: grpc.status.RESOURCE_EXHAUSTED });
    expect(s.calls()).toBe(2);
    cl.close();
    s.server.forceShutdown();
    const m = await scripted(0, grpc.status.UNAVAILABLE, true);
    const cm = new Client({ address: `127.0.0.1:${m.port}`, retries: 3, retryDelayMs: 1 });
    await expect(cm.complete({ prompt: "a" })).rejects.toMatchObject({ code: grpc.status.UNAVAILABLE });
    expect(m.calls()).toBe(1);
    cm.close();
    m.server.forceShutdown();
  });
});
