// API keys: gRPC metadata and HTTP Authorization, constant-time checked; health and metrics open unless asked.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../services/client/index.js";
import { ConfigError } from "../../services/common/errors.js";
import { protos } from "../../services/common/proto.js";
import { ApiKeys } from "../../services/router/auth.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";

function health(address: string, key?: string): Promise<grpc.ServiceError | { status: string }> {
  const h = new (protos().health.grpc.health.v1.Health)(address, grpc.credentials.createInsecure());
  const md = new grpc.Metadata();
  if (key) md.set("authorization", `Bearer ${key}`);
  return new Promise((resolve) =>
    h.Check({ service: "" }, md, (err, res) => {
      h.close();
      resolve(err ?? (res as { status: string }));
    }),
  );
}

describe("ApiKeys", () => {
  it("loads keys from a file (comments, blank lines) and the environment; checks Bearer values", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpserve-keys-"));
    const file = join(dir, "keys");
    writeFileSync(file, "# team keys\nalpha-key\n\nbeta-key\n");
    const keys = ApiKeys.load(file, "gamma-key, delta-key")!;
    for (const k of ["alpha-key", "beta-key", "gamma-key", "delta-key"]) expect(keys.allows(`Bearer ${k}`)).toBe(true);
    expect(keys.allows("Bearer alpha")).toBe(false);
    expect(keys.allows("alpha-key")).toBe(false);
    expect(keys.allows(undefined)).toBe(false);
    expect(ApiKeys.load(undefined, undefined)).toBeNull();
    expect(() => ApiKeys.load(join(dir, "missing"), undefined)).toThrow(ConfigError);
    writeFileSync(file, "# nothing\n");
    expect(() => ApiKeys.load(file, undefined)).toThrow(/holds no key/);
  });
});

describe.each([false, true])("auth on the public APIs (health and metrics guarded: %s)", (guardAll) => {
  let c: Cluster;
  const logs: string[] = [];
  beforeAll(async () => {
    const logStream = new Writable({
      write(chunk: Buffer, _enc, cb) {
        logs.push(chunk.toString());
        cb();
      },
    });
    c = await startCluster(
      { logLevel: "debug" },
      { apiKeys: new ApiKeys(["secret-key-one", "k2"]), authHealthAndMetrics: guardAll, logLevel: "debug" },
      { logStream, workerLogStream: logStream },
    );
  });
  afterAll(async () => c?.close());

  it("gRPC: UNAUTHENTICATED without or with a wrong key, served with a right one", async () => {
    for (const apiKey of [undefined, "nope"]) {
      const cl = new Client({ address: c.router.address, ...(apiKey ? { apiKey } : {}) });
      await expect(cl.complete({ prompt: "Hi", maxTokens: 2 })).rejects.toMatchObject({
        code: grpc.status.UNAUTHENTICATED,
        details: expect.stringMatching(/authorization: Bearer/),
      });
      await expect(cl.tokenize("Hi")).rejects.toMatchObject({ code: grpc.status.UNAUTHENTICATED });
      cl.close();
    }
    const ok = new Client({ address: c.router.address, apiKey: "secret-key-one" });
    expect((await ok.complete({ prompt: "Hi", maxTokens: 2 })).ids.length).toBe(2);
    ok.close();
    expect(logs.join("").length).toBeGreaterThan(0);
    expect(logs.join("").includes("secret-key-one")).toBe(false); // the key is never logged
    const h = await health(c.router.address);
    if (guardAll) expect((h as grpc.ServiceError).code).toBe(grpc.status.UNAUTHENTICATED);
    else expect((h as { status: string }).status).toBe("SERVING");
    expect(((await health(c.router.address, "k2")) as { status: string }).status).toBe("SERVING");
  });

  it("HTTP: 401 in OpenAI's shape without a key; /metrics open unless guarded", async () => {
    const base = `http://127.0.0.1:${c.router.httpPort}`;
    const denied = await fetch(`${base}/v1/models`);
    expect(denied.status).toBe(401);
    expect(((await denied.json()) as { error: { type: string } }).error.type).toBe("authentication_error");
    expect((await fetch(`${base}/v1/models`, { headers: { authorization: "Bearer k2" } })).status).toBe(200);
    expect((await fetch(`${base}/metrics`)).status).toBe(guardAll ? 401 : 200);
    expect((await fetch(`${base}/metrics`, { headers: { authorization: "Bearer k2" } })).status).toBe(200);
  });
});
