// The restart policy of `tpserve serve` (GroupSupervisor) with stand-in groups and short pauses: a rank that exits or
// reports "group-failed" stops the group and starts a new one on the first group's port, after a pause that doubles
// up to the cap and starts over once a group has served long enough; events of a replaced group are ignored; stop()
// ends it all. Real groups: test/e2e/tp-serve.test.ts.
import type { ChildProcess } from "node:child_process";
import { EventEmitter } from "node:events";
import { afterEach, describe, expect, it } from "vitest";
import { GroupSupervisor } from "../../services/cli/supervise.js";
import type { RankProcess } from "../../services/cli/tp-group.js";
import { Flags } from "../../services/common/flags.js";
import { type WorkerConfig, workerConfigFromFlags } from "../../services/worker/config.js";
import { waitFor } from "../helpers/multi-router.js";

const PORT = 43210;
type FakeChild = EventEmitter & { exitCode: number | null; signalCode: NodeJS.Signals | null };

function fakeGroup(port: number): RankProcess[] {
  return [0, 1].map((rank) => {
    const child: FakeChild = Object.assign(new EventEmitter(), { exitCode: null, signalCode: null });
    return { rank, pid: 1000 + rank, child: child as unknown as ChildProcess, address: `127.0.0.1:${rank ? 1 : port}` };
  });
}

function kill(g: RankProcess[], rank: number): void {
  const child = g[rank]!.child as unknown as FakeChild;
  child.signalCode = "SIGKILL";
  child.emit("exit", null, "SIGKILL");
}

let sup: GroupSupervisor | undefined;
afterEach(async () => {
  await sup?.stop();
  sup = undefined;
});

function supervise(failStarts = 0) {
  const first = fakeGroup(PORT);
  const started: { cfg: WorkerConfig; ranks: RankProcess[] }[] = [];
  const stopped: RankProcess[][] = [];
  const lines: string[] = [];
  const cfg = { ...workerConfigFromFlags(new Flags([])), tp: 2, port: 0 };
  sup = new GroupSupervisor(cfg, first, {
    firstDelayMs: 20,
    maxDelayMs: 80,
    resetAfterMs: 400,
    log: (l) => lines.push(l),
    start: async (c) => {
      if (failStarts-- > 0) throw new Error("port in use");
      const ranks = fakeGroup(c.port);
      started.push({ cfg: c, ranks });
      return { ranks };
    },
    stop: async (ranks) => {
      stopped.push(ranks);
    },
  });
  /** The pauses the supervisor announced, in seconds. */
  const pauses = () => lines.flatMap((l) => /in ([\d.]+) s$/.exec(l)?.[1] ?? []);
  return { first, started, stopped, lines, pauses };
}

describe("GroupSupervisor", () => {
  it("restarts on the same port after pauses that double up to the cap", async () => {
    const s = supervise();
    let t0 = Date.now();
    kill(s.first, 1);
    await waitFor(() => s.started.length === 1, "the first restart", 2000);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(19);
    expect(s.stopped[0]).toBe(s.first);
    expect(s.started[0]!.cfg).toMatchObject({ port: PORT, tpGroup: "", epoch: 2 });
    expect(s.lines[0]).toMatch(/rank 1 of the worker group \(pid 1001\) exited \(SIGKILL\); restarting the group/);
    for (let n = 2; n <= 4; n++) {
      t0 = Date.now();
      kill(s.started[n - 2]!.ranks, 0);
      await waitFor(() => s.started.length === n, `restart ${n}`, 2000);
      expect(Date.now() - t0).toBeGreaterThanOrEqual(Math.min(20 * 2 ** (n - 1), 80) - 1);
    }
    expect(s.pauses()).toEqual(["0.02", "0.04", "0.08", "0.08"]);
    expect(s.started.map((g) => g.cfg.epoch)).toEqual([2, 3, 4, 5]);
    expect(sup!.ranks).toBe(s.started[3]!.ranks);
  });

  it("restarts when a rank reports that its group failed, and ignores the replaced group", async () => {
    const s = supervise();
    s.first[0]!.child.emit("message", { type: "group-failed", reason: "rank 1 did not reach collective #5" });
    await waitFor(() => s.started.length === 1, "the restart", 2000);
    expect(s.lines[0]).toMatch(/rank 0 .* reports that its group failed: rank 1 did not reach collective #5/);
    kill(s.first, 1); // the old group's ranks exit as they are stopped
    await new Promise((r) => setTimeout(r, 100));
    expect(s.started).toHaveLength(1);
  });

  it("starts over at the first pause after a group that served long enough", async () => {
    const s = supervise();
    kill(s.first, 1);
    await waitFor(() => s.started.length === 1, "restart 1", 2000);
    kill(s.started[0]!.ranks, 1);
    await waitFor(() => s.started.length === 2, "restart 2", 2000);
    await new Promise((r) => setTimeout(r, 450));
    kill(s.started[1]!.ranks, 1);
    await waitFor(() => s.started.length === 3, "restart 3", 2000);
    expect(s.pauses()).toEqual(["0.02", "0.04", "0.02"]);
  });

  it("tries a start that failed again after the next pause", async () => {
    const s = supervise(2);
    kill(s.first, 0);
    await waitFor(() => s.started.length === 1, "the restart", 2000);
    expect(s.lines.filter((l) => /did not start: port in use/.test(l))).toHaveLength(2);
    expect(s.pauses()).toEqual(["0.02", "0.04", "0.08"]);
    expect(s.started[0]!.cfg.epoch).toBe(2);
  });

  it("stop() during a pause starts nothing and stops the group", async () => {
    const s = supervise();
    kill(s.first, 1);
    await sup!.stop();
    await new Promise((r) => setTimeout(r, 60));
    expect(s.started).toHaveLength(0);
    expect(s.stopped.every((g) => g === s.first)).toBe(true);
  });
});
