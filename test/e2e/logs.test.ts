// Structured logs: one JSON line per request at its end, with id, tokens, timings and status; never the prompt
// text unless --log-prompts.
import { describe, expect, it } from "vitest";
import { Client } from "../../services/client/index.js";
import { startCluster } from "../helpers/cluster.js";
import { logSink as sink } from "../helpers/log-sink.js";

describe("request logs", () => {
  it.each([false, true])("one line per request; prompt text only with --log-prompts (%s)", async (logPrompts) => {
    const s = sink();
    const w = sink();
    const c = await startCluster(
      { logLevel: "debug" },
      { logLevel: "info", logPrompts },
      { logStream: s.stream, workerLogStream: w.stream },
    );
    const client = new Client({ address: c.router.address });
    try {
      await client.complete({
        prompt: "The secret plan of the committee",
        maxTokens: 5,
        ignoreEos: true,
        requestId: "req-42",
      });
      await client.complete({ prompt: "Hi", maxTokens: 0 }).catch(() => undefined); // refused: logged too
      const reqs = s.lines.filter((l) => l["msg"] === "request");
      expect(reqs).toHaveLength(2);
      expect(reqs[1]).toMatchObject({ status: "INVALID_ARGUMENT", error: expect.stringMatching(/max_tokens/) });
      const line = reqs[0]!;
      expect(line).toMatchObject({
        request_id: "req-42",
        status: "length",
        completion_tokens: 5,
        service: "tpserve-router",
      });
      expect(line["prompt_tokens"]).toBeGreaterThan(3);
      expect(typeof line["ttft_ms"]).toBe("number");
      expect(typeof line["e2e_ms"]).toBe("number");
      const all = JSON.stringify(s.lines);
      expect(all.includes("secret plan")).toBe(logPrompts);
      // The request id followed the request to the worker.
      expect(w.lines.find((l) => l["msg"] === "sequence finished")).toMatchObject({
        request_id: "req-42",
        service: "tpserve-worker",
        generated: 5,
      });
      expect(JSON.stringify(w.lines).includes("secret plan")).toBe(false);
    } finally {
      client.close();
      await c.close();
    }
  });
});
