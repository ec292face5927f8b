// Cancellation frees pages within a step; bad input gets INVALID_ARGUMENT naming the limit while other streams
// carry on unharmed.
import { spawn } from "node:child_process";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate, unary } from "../../services/common/client.js";
import type { GenerateRequest } from "../../services/common/generated/tpserve/v1/GenerateRequest.js";
import type { StatsResponse__Output } from "../../services/common/generated/tpserve/v1/StatsResponse.js";
import { packageRoot } from "../../services/common/paths.js";
import { protoDir } from "../../services/common/proto.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe("cancel and bad input", () => {
  let c: Cluster;
  const stats = () => unary<object, StatsResponse__Output>((r, cb) => c.client.Stats(r, cb), {});
  beforeAll(async () => {
    c = await startCluster({}, { decodeSteps: 1 });
  });
  afterAll(async () => c?.close());

  it("a cancelled stream's pages are free within one step", async () => {
    const total = (await stats()).pagesTotal;
    const ac = new AbortController();
    let chunks = 0;
    const p = generate(
      c.client,
      { text: golden[0]!.prompt, maxTokens: 500, ignoreEos: true },
      () => {
        if (++chunks === 5) ac.abort();
      },
      { signal: ac.signal },
    );
    await expect(p).rejects.toMatchObject({ code: grpc.status.CANCELLED });
    const stepAtCancel = (await stats()).steps;
    // Poll until the server has seen the cancellation; it must not take more than one further step.
    let s = await stats();
    for (let i = 0; i < 100 && s.pagesFree !== total; i++) {
      await new Promise((r) => setTimeout(r, 5));
      s = await stats();
    }
    expect(s.pagesFree).toBe(total);
    expect(s.running).toBe(0);
    expect(s.steps - stepAtCancel).toBeLessThanOrEqual(1);
  });

  it("a client killed mid-stream (connection dropped) has its pages freed", async () => {
    const script = join(packageRoot(), "test", "helpers", "stream-client.mjs");
    const child = spawn(process.execPath, [script, c.router.address, protoDir(), golden[1]!.prompt], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let chunks = 0;
    await new Promise<void>((resolve) => {
      child.stdout.on("data", (d: Buffer) => {
        chunks += d
          .toString()
          .split("\n")
          .filter((l) => l.startsWith("chunk")).length;
        if (chunks >= 3) resolve();
      });
    });
    expect((await stats()).running).toBe(1);
    child.kill("SIGKILL");
    let s = await stats();
    for (let i = 0; i < 200 && (s.pagesFree !== s.pagesTotal || s.running !== 0); i++) {
      await new Promise((r) => setTimeout(r, 10));
      s = await stats();
    }
    expect(s.running).toBe(0);
    expect(s.pagesFree).toBe(s.pagesTotal);
  });

  const bad: [string, GenerateRequest, RegExp][] = [
    ["empty prompt", { text: "" }, /prompt is empty/],
    ["no prompt at all", {}, /prompt is empty/],
    ["too-long prompt", { tokenIds: { ids: Array.from({ length: 1024 }, () => 263) } }, /context limit is 1024/],
    ["max_tokens 0", { text: "Hello", maxTokens: 0 }, /max_tokens must be >= 1/],
    [
      "max_tokens beyond the context",
      { text: "Hello", maxTokens: 5000 },
      /exceeds the context limit of 1024.*max_tokens <= 102\d/,
    ],
    ["negative temperature", { text: "Hello", sampling: { temperature: -1 } }, /temperature must be >= 0/],
    ["top_p 0", { text: "Hello", sampling: { topP: 0 } }, /top_p must be in \(0, 1\]/],
    ["top_p above 1", { text: "Hello", sampling: { topP: 1.5 } }, /top_p must be in \(0, 1\]/],
    [
      "token id out of range",
      { tokenIds: { ids: [1, 5000] } },
      /token id 5000 at position 1 is outside the vocabulary 0..4095/,
    ],
    ["invalid UTF-8 (lone surrogate)", { text: "caf\uD800e" }, /text is not valid UTF-8/],
    ["empty stop string", { text: "Hello", stop: [""] }, /stop strings must not be empty/],
  ];

  it.each(bad)("%s: INVALID_ARGUMENT naming the limit, other streams unharmed", async (_name, req, msg) => {
    const good = generate(c.client, { text: golden[2]!.prompt, maxTokens: 32, ignoreEos: true });
    const err = await generate(c.client, req).then(
      () => null,
      (e: grpc.ServiceError) => e,
    );
    expect(err?.code).toBe(grpc.status.INVALID_ARGUMENT);
    expect(err?.details).toMatch(msg);
    expect((await good).ids).toEqual(golden[2]!.greedy_ids);
  });

  it("stop strings end the stream without returning the stop string", async () => {
    const g = golden[0]!; // " the President said the Presidential leaderial campaign ..."
    const out = await generate(c.client, { text: g.prompt, maxTokens: 32, stop: ["leader"] });
    expect(out.finishReason).toBe("FINISH_REASON_STOP");
    expect(out.text).toBe(g.text.slice(0, g.text.indexOf("leader")));
  });
});
