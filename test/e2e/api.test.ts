// The rest of the public API: health, model info, tokenize, queue limits, dummy weights.
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { generate, unary } from "../../services/common/client.js";
import type { ModelInfoResponse__Output } from "../../services/common/generated/tpserve/v1/ModelInfoResponse.js";
import type { TokenizeResponse__Output } from "../../services/common/generated/tpserve/v1/TokenizeResponse.js";
import { protos } from "../../services/common/proto.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";
import { loadGolden } from "../helpers/golden.js";

const golden = loadGolden().golden;

describe("public API", () => {
  let c: Cluster;
  beforeAll(async () => {
    c = await startCluster({}, { maxRunning: 2, maxQueue: 2, decodeSteps: 1 });
  });
  afterAll(async () => c?.close());

  it("grpc.health.v1 reports SERVING", async () => {
    const Health = protos().health.grpc.health.v1.Health;
    const h = new Health(c.router.address, grpc.credentials.createInsecure());
    const r = await unary<{ service: string }, { status: string }>((req, cb) => h.Check(req, cb), { service: "" });
    expect(r.status).toBe("SERVING");
    const err = await unary<{ service: string }, unknown>((req, cb) => h.Check(req, cb), { service: "nope" }).catch(
      (e: grpc.ServiceError) => e,
    );
    expect((err as grpc.ServiceError).code).toBe(grpc.status.NOT_FOUND);
    h.close();
  });

  it("ModelInfo and Tokenize describe the served model", async () => {
    const info = await unary<object, ModelInfoResponse__Output>((r, cb) => c.client.ModelInfo(r, cb), {});
    expect(info).toMatchObject({
      model: "tinyllama-brown",
      vocabSize: 4096,
      maxContext: 1024,
      eosTokenId: 2,
      blockSize: 16,
    });
    expect(info.backend).toBe("cpu");
    expect(info.chatTemplate).toContain("add_generation_prompt");
    const tok = await unary<{ text: string }, TokenizeResponse__Output>((r, cb) => c.client.Tokenize(r, cb), {
      text: golden[0]!.prompt,
    });
    expect(tok.ids).toEqual(golden[0]!.prompt_ids);
    expect(tok.tokens[0]).toBe("<s>");
  });

  it("beyond the queue limit requests get RESOURCE_EXHAUSTED naming max_queue; the others complete", async () => {
    const reqs = Array.from({ length: 6 }, () =>
      generate(c.client, { text: golden[3]!.prompt, maxTokens: 24, ignoreEos: true }).then(
        (o) => ({ ok: true as const, o }),
        (e: grpc.ServiceError) => ({ ok: false as const, e }),
      ),
    );
    const out = await Promise.all(reqs);
    const rejected = out.filter((r) => !r.ok);
    expect(rejected.length).toBeGreaterThan(0);
    for (const r of rejected) {
      expect(r.e.code).toBe(grpc.status.RESOURCE_EXHAUSTED);
      expect(r.e.details).toMatch(/max_queue 2/);
    }
    for (const r of out) if (r.ok) expect(r.o.ids).toEqual(golden[3]!.greedy_ids.slice(0, 24));
  });
});

describe("dummy weights", () => {
  it("serves random weights for the config with --load-format dummy", async () => {
    const c = await startCluster({ loadFormat: "dummy", quantization: "int4" });
    try {
      const out = await generate(c.client, { text: "Hello", maxTokens: 8, ignoreEos: true });
      expect(out.ids.length).toBe(8);
      expect(out.finishReason).toBe("FINISH_REASON_LENGTH");
    } finally {
      await c.close();
    }
  });
});
