// A worker that goes away: its in-flight requests end with UNAVAILABLE, the router keeps serving (health says
// NOT_SERVING, new requests get UNAVAILABLE) instead of hanging.
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { generate } from "../../services/common/client.js";
import { startCluster } from "../helpers/cluster.js";

describe("worker failure", () => {
  it("fails in-flight streams with UNAVAILABLE and refuses new ones clearly", async () => {
    const c = await startCluster({}, { decodeSteps: 1 });
    try {
      let chunks = 0;
      let killed: Promise<void> | undefined;
      const inflight = generate(c.client, { text: "The committee said that", maxTokens: 900, ignoreEos: true }, () => {
        if (++chunks === 3) killed = c.worker.close();
      });
      const err = (await inflight.catch((e: grpc.ServiceError) => e)) as grpc.ServiceError;
      await killed;
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(c.router.router.healthy).toBe(false);
      const next = (await generate(c.client, { text: "Hello", maxTokens: 4 }).catch((e) => e)) as grpc.ServiceError;
      expect(next.code).toBe(grpc.status.UNAVAILABLE);
      expect(next.details).toMatch(/no healthy worker group/);
    } finally {
      c.client.close();
      await c.router.close();
    }
  });
});
