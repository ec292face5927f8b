// A tensor-parallel group whose rank dies or hangs: the leader's collective notices (a dead pid within ~20 ms, a
// hung rank after --tp-timeout-ms), the step's requests end with UNAVAILABLE, the router marks the group failed,
// and every process still alive keeps answering. Also: int4 groups that would straddle a shard are refused.
import { execFile } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import * as grpc from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";
import { generate, unary } from "../../services/common/client.js";
import { packageRoot } from "../../services/common/paths.js";
import { startTpCluster, type TpCluster } from "../helpers/tp-cluster.js";

const TIMEOUT_MS = 2000;

/** Starts a long generation, runs `hurt` once 3 tokens have streamed, resolves to the error and its delay. */
async function failMidGeneration(
  c: TpCluster,
  hurt: () => void,
): Promise<{ err: grpc.ServiceError; chunks: number; ms: number }> {
  let chunks = 0;
  let hurtAt = 0;
  const err = (await generate(c.client, { text: "The committee said that", maxTokens: 900, ignoreEos: true }, () => {
    if (++chunks === 3) {
      hurtAt = performance.now();
      hurt();
    }
  }).then(
    () => new Error("the generation finished although a rank was gone"),
    (e: grpc.ServiceError) => e,
  )) as grpc.ServiceError;
  return { err, chunks, ms: performance.now() - hurtAt };
}

async function expectRouterResponsive(c: TpCluster): Promise<void> {
  const tok = await unary(c.client.Tokenize.bind(c.client), { text: "Hello there" });
  expect(tok.ids.length).toBeGreaterThan(0);
  // The leader ends its Steps stream right after the failed step's result; the router marks the group failed then.
  const t0 = performance.now();
  while (c.router.router.healthy && performance.now() - t0 < 2000) await new Promise((r) => setTimeout(r, 10));
  expect(c.router.router.healthy).toBe(false);
  const next = (await generate(c.client, { text: "Hello", maxTokens: 4 }).catch((e) => e)) as grpc.ServiceError;
  expect(next.code).toBe(grpc.status.UNAVAILABLE);
}

describe("tensor-parallel group failure", () => {
  it("a rank killed mid-generation fails the request with UNAVAILABLE at once; the other processes answer", async () => {
    const c = await startTpCluster({ tp: 4, tpTimeoutMs: TIMEOUT_MS }, { decodeSteps: 1 });
    try {
      const victim = c.ranks[2]!;
      const { err, chunks, ms } = await failMidGeneration(c, () => victim.child.kill("SIGKILL"));
      expect(chunks).toBeGreaterThanOrEqual(3);
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toMatch(/NATIVE_TP_(PEER_DEAD|FAILED).*rank 2 \(pid \d+\) exited/);
      // A dead peer is seen by its pid, well before the collective timeout.
      expect(ms).toBeLessThan(TIMEOUT_MS);
      await expectRouterResponsive(c);
      for (const r of [0, 1, 3]) expect((await c.describe(r)).tpRank).toBe(r);
      await expect(c.describe(2)).rejects.toThrow();
    } finally {
      await c.close();
    }
  });

  it("a hung rank (SIGSTOP) fails the request with UNAVAILABLE after the collective timeout", async () => {
    const c = await startTpCluster({ tp: 2, tpTimeoutMs: TIMEOUT_MS }, { decodeSteps: 1 });
    const victim = c.ranks[1]!;
    try {
      const { err, ms } = await failMidGeneration(c, () => victim.child.kill("SIGSTOP"));
      expect(err.code).toBe(grpc.status.UNAVAILABLE);
      expect(err.details).toMatch(/NATIVE_TP_TIMEOUT.*rank 1 did not reach collective/);
      expect(ms).toBeGreaterThanOrEqual(TIMEOUT_MS - 500); // the missed collective may have begun just before the stop
      expect(ms).toBeLessThan(TIMEOUT_MS + 3000);
      await expectRouterResponsive(c);
      expect((await c.describe(0)).tpRank).toBe(0);
      victim.child.kill("SIGCONT");
      // Resumed, the follower finds its group failed, and still answers.
      expect((await c.describe(1)).tpRank).toBe(1);
    } finally {
      victim.child.kill("SIGCONT");
      await c.close();
    }
  });
});

describe("int4 groups and shard boundaries", () => {
  const bin = join(packageRoot(), "bin", "tpserve.js");
  const worker = (args: string[]) =>
    promisify(execFile)(process.execPath, [bin, "worker", "--device", "cpu", "--threads", "1", ...args]).then(
      () => ({ code: 0, stderr: "" }),
      (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
    );

  it("refuses group size 128 at --tp 4 (o_proj has 64 input columns per rank) and names one that works", async () => {
    const tp = ["--tp", "4", "--tp-rank", "0", "--tp-group", `straddle${process.pid}`];
    const out = await worker([...tp, "--quantization", "int4"]);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/int4 group size 128 would straddle a tensor-parallel shard boundary/);
    expect(out.stderr).toMatch(/use --group-size 64/);
  });

  it("refuses a --tp that does not divide the heads", async () => {
    const out = await worker(["--tp", "3", "--tp-rank", "0", "--tp-group", `odd${process.pid}`]);
    expect(out.code).toBe(2);
    expect(out.stderr).toMatch(/--tp 3: the 4 attention heads do not split over 3 ranks/);
  });
});
