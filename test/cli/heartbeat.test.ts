// watchWorkerGroup's heartbeat (services/cli/tp-group.ts): a rank that answers the pings stays, one that stops
// answering is lost after the timeout, and a rank with no IPC channel is not pinged (nor lost for silence).
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { describe, expect, it } from "vitest";
import { type RankProcess, watchWorkerGroup } from "../../services/cli/tp-group.js";

/** A rank whose child answers each ping while `answering` holds (or has no IPC channel at all). */
function fakeRank(rank: number, ipc: boolean) {
  const state = { answering: true, pings: 0 };
  const child = Object.assign(new EventEmitter(), { exitCode: null, signalCode: null, connected: ipc });
  if (ipc) {
    Object.assign(child, {
      send: (m: { type: string }, cb?: () => void) => {
        if (m.type === "ping") state.pings++;
        if (m.type === "ping" && state.answering) setImmediate(() => child.emit("message", { type: "pong" }));
        cb?.();
        return true;
      },
    });
  }
  const r: RankProcess = { rank, pid: 100 + rank, child: child as unknown as ChildProcess };
  return { r, state };
}

const sleep = (ms: number) => new Promise((res) => setTimeout(res, ms));

describe("watchWorkerGroup heartbeat", () => {
  it("keeps ranks that answer, and loses the first that stops answering after the timeout", async () => {
    const a = fakeRank(0, true);
    const b = fakeRank(1, true);
    const lost: string[] = [];
    const stop = watchWorkerGroup([a.r, b.r], (r, why) => lost.push(`${r.rank}: ${why}`), {
      everyMs: 20,
      timeoutMs: 150,
    });
    try {
      await sleep(400);
      expect(lost).toEqual([]);
      expect(a.state.pings).toBeGreaterThan(5);
      b.state.answering = false;
      const t0 = Date.now();
      while (lost.length === 0 && Date.now() - t0 < 2000) await sleep(10);
      expect(lost).toHaveLength(1);
      expect(lost[0]).toMatch(/^1: answered no heartbeat for \d+ ms/);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
      await sleep(200);
      expect(lost).toHaveLength(1); // once
    } finally {
      stop();
    }
  });

  it("does not ping a rank without an IPC channel, nor lose it for silence", async () => {
    const a = fakeRank(0, false);
    const lost: string[] = [];
    const stop = watchWorkerGroup([a.r], (r, why) => lost.push(`${r.rank}: ${why}`), { everyMs: 10, timeoutMs: 50 });
    await sleep(200);
    stop();
    expect(lost).toEqual([]);
  });

  it("stops pinging once unwatched", async () => {
    const a = fakeRank(0, true);
    const stop = watchWorkerGroup([a.r], () => undefined, { everyMs: 10, timeoutMs: 1000 });
    await sleep(100);
    stop();
    const n = a.state.pings;
    await sleep(100);
    expect(a.state.pings).toBe(n);
  });
});
