// TLS on the gRPC and HTTP listeners with a certificate made for this test (openssl, self-signed for localhost).
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync } from "node:fs";
import { request } from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Client } from "../../services/client/index.js";
import { type Cluster, startCluster } from "../helpers/cluster.js";

describe("TLS", () => {
  let c: Cluster;
  let cert: Buffer;
  beforeAll(async () => {
    const dir = mkdtempSync(join(tmpdir(), "tpserve-tls-"));
    // biome-ignore format: one flag and its value per pair
    execFileSync("openssl", [
      "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
      "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
      "-keyout", join(dir, "key.pem"), "-out", join(dir, "cert.pem"),
    ], { stdio: "ignore" });
    cert = readFileSync(join(dir, "cert.pem"));
    c = await startCluster({}, { tls: { cert, key: readFileSync(join(dir, "key.pem")) } });
  });
  afterAll(async () => c?.close());

  it("gRPC: a client that trusts the certificate is served; a plaintext client is not", async () => {
    const tls = new Client({ address: `localhost:${c.router.port}`, credentials: grpc.credentials.createSsl(cert) });
    expect((await tls.complete({ prompt: "Once upon a time", maxTokens: 4, ignoreEos: true })).ids).toHaveLength(4);
    tls.close();
    const plain = new Client({ address: `localhost:${c.router.port}`, retries: 0 });
    await expect(plain.complete({ prompt: "Hi", maxTokens: 2 }, { deadlineMs: 2000 })).rejects.toMatchObject({
      code: expect.any(Number),
    });
    plain.close();
  });

  it("HTTP: the OpenAI API answers over HTTPS", async () => {
    const status = await new Promise<number>((resolve, reject) => {
      const req = request({ host: "localhost", port: c.router.httpPort!, path: "/v1/models", ca: cert }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      });
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(200);
  });
});
