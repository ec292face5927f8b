// `tpserve serve --tp 2` as a user runs it: a group of two CPU worker processes behind the router, the golden
// completion through `tpserve generate`; a follower killed, then one stopped (SIGSTOP) while the group is idle: each
// time the group is started again on the same worker port and the router serves again (a request sent while it is
// down waits for it); and a clean stop of every rank on SIGTERM.
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../services/common/paths.js";
import { loadGolden } from "../helpers/golden.js";
import { probe } from "../helpers/health.js";
import { waitFor } from "../helpers/multi-router.js";

const run = promisify(execFile);
const bin = join(packageRoot(), "bin", "tpserve.js");
const golden = loadGolden().golden;

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe("tpserve serve --tp 2", () => {
  let serve: ChildProcess;
  let output = "";
  let address = "";
  let workerAddress = "";
  let pids: number[] = [];
  let exited: Promise<number | null>;

  beforeAll(async () => {
    const args = ["serve", "--tp", "2", "--no-demo", "--port", "0", "--no-http", "--kv-cache-mib", "16"];
    args.push("--tp-timeout-ms", "1000"); // the heartbeat's bound: 5 s (tp-group.ts heartbeatFor)
    serve = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "pipe", "pipe"] });
    exited = new Promise((resolve) => serve.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        output += d.toString();
        const m = /gRPC on (\S+) .*worker at (\S+?);.*tensor-parallel group of 2 CPU ranks \(pids (\d+),(\d+)\)/.exec(
          output,
        );
        if (m && !address) {
          // Only the first ready line: this listener stays on, and the tests below take the pids of later groups.
          address = m[1]!;
          workerAddress = m[2]!;
          pids = [Number(m[3]), Number(m[4])];
          resolve();
        }
      };
      serve.stdout!.on("data", onData);
      serve.stderr!.on("data", onData);
      serve.once("exit", (code) => reject(new Error(`serve exited early (${code}):\n${output}`)));
    });
  }, 120_000);

  afterAll(() => {
    if (serve.exitCode === null) serve.kill("SIGKILL");
    for (const pid of pids) if (alive(pid)) process.kill(pid, "SIGKILL");
  });

  /** Golden prompt 1 through `tpserve generate` against the router. */
  const generateGolden = async () => {
    const g = golden[1]!;
    const args = ["generate", "--address", address, "--prompt", g.prompt, "--max-tokens", "32", "--json"];
    const { stdout } = await run(process.execPath, [bin, ...args]);
    return { g, out: JSON.parse(stdout.trim()) as { ids: number[]; text: string } };
  };

  /** Waits for serve's `restart`th new group (epoch restart + 1) and checks it took the same worker address. */
  const waitRestart = async (restart: number, timeoutMs: number) => {
    const re = new RegExp(
      `worker group restarted \\(restart ${restart}, epoch ${restart + 1}\\): rank 0 serves on (\\S+) \\(pids (\\d+),(\\d+)\\)`,
    );
    await waitFor(() => re.test(output), "the group to start again", timeoutMs);
    const m = re.exec(output)!;
    expect(m[1]).toBe(workerAddress);
    return [Number(m[2]), Number(m[3])];
  };

  /** The router serves again within `boundMs` of t0, and gives the golden ids. */
  const servesGoldenAgain = async (t0: number, boundMs: number) => {
    await waitFor(async () => (await probe(address, "")) === "SERVING", "the router to serve again", 30_000);
    expect(Date.now() - t0).toBeLessThan(boundMs);
    const { g, out } = await generateGolden();
    expect(out.ids).toEqual(g.greedy_ids);
  };

  it("starts two ranks and serves the golden greedy completion through rank 0", async () => {
    expect(output).toMatch(/loading shard 0 of 2/);
    expect(output).toMatch(/no CUDA device is visible|has no CUDA backend/); // --device auto: CPU ranks here
    expect(pids.every(alive)).toBe(true);
    const { g, out } = await generateGolden();
    expect(out.ids).toEqual(g.greedy_ids);
    expect(out.text).toBe(g.text);
  });

  it("starts the group again on the same worker port when a follower is killed, and serves again", async () => {
    const t0 = Date.now();
    process.kill(pids[1]!, "SIGKILL");
    // Sent while the group is down: it waits for the restarted group (serve's --group-wait-ms) instead of failing.
    const during = generateGolden();
    const next = await waitRestart(1, 30_000);
    expect(output).toMatch(/rank 1 of the worker group \(pid \d+\) exited \(SIGKILL\); restarting the group/);
    expect(pids.some(alive)).toBe(false); // the old leader was stopped
    pids = next;
    const { g, out } = await during;
    expect(out.ids).toEqual(g.greedy_ids);
    await servesGoldenAgain(t0, 30_000);
  }, 60_000);

  it("starts the group again when a follower hangs while the group is idle (no heartbeat answered)", async () => {
    const t0 = Date.now();
    process.kill(pids[1]!, "SIGSTOP");
    const next = await waitRestart(2, 40_000);
    expect(output).toMatch(/rank 1 of the worker group \(pid \d+\) answered no heartbeat for \d+ ms/);
    await waitFor(() => !pids.some(alive), "the stopped group's ranks to exit", 10_000);
    pids = next;
    await servesGoldenAgain(t0, 40_000);
  }, 60_000);

  it("stops every rank on SIGTERM and exits 0", async () => {
    serve.kill("SIGTERM");
    expect(await exited).toBe(0);
    expect(pids.some(alive)).toBe(false);
  });
});
