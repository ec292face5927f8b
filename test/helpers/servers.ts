// Starts real redis-server and nats-server processes on free loopback ports for integration tests, and stops them
// by PID. Redis runs without persistence, so a restart starts empty (the case docs/cluster-state.md describes).
import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { createServer, Socket } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      const port = typeof a === "object" && a ? a.port : 0;
      s.close(() => resolve(port));
    });
  });
}

async function waitForPort(port: number, child: ChildProcess, what: string, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (child.exitCode !== null) throw new Error(`${what} exited with code ${child.exitCode}`);
    const ok = await new Promise<boolean>((resolve) => {
      const sock = new Socket();
      sock.once("connect", () => {
        sock.destroy();
        resolve(true);
      });
      sock.once("error", () => resolve(false));
      sock.connect(port, "127.0.0.1");
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`${what} did not listen on ${port} within ${timeoutMs} ms`);
}

export interface ServerProcess {
  port: number;
  url: string;
  child: ChildProcess;
  /** Stops the process (SIGTERM, then SIGKILL) and waits for it to exit. */
  stop(): Promise<void>;
  /** Stops it and starts a new process on the same port. */
  restart(): Promise<void>;
}

async function startProcess(
  what: string,
  scheme: string,
  cmd: string,
  args: (port: number, dir: string) => string[],
  port?: number,
): Promise<ServerProcess> {
  const p = port ?? (await freePort());
  const dir = mkdtempSync(join(tmpdir(), `tpserve-${what}-`));
  const child = spawn(cmd, args(p, dir), { stdio: "ignore", cwd: dir });
  await waitForPort(p, child, what);
  const handle: ServerProcess = {
    port: p,
    url: `${scheme}://127.0.0.1:${p}`,
    child,
    async stop() {
      const c = handle.child;
      if (c.exitCode === null && c.signalCode === null) {
        const gone = new Promise((r) => c.once("exit", r));
        if (c.pid) process.kill(c.pid, "SIGTERM");
        const t = setTimeout(() => c.pid && c.exitCode === null && process.kill(c.pid, "SIGKILL"), 3000);
        await gone;
        clearTimeout(t);
      }
      rmSync(dir, { recursive: true, force: true });
    },
    async restart() {
      await handle.stop();
      const next = await startProcess(what, scheme, cmd, args, p);
      handle.child = next.child;
      handle.stop = next.stop;
    },
  };
  return handle;
}

export function startRedis(): Promise<ServerProcess> {
  return startProcess("redis", "redis", "redis-server", (port) => [
    "--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
  ]); // biome-ignore format: flag pairs
}

export function startNats(): Promise<ServerProcess> {
  return startProcess("nats", "nats", "nats-server", (port) => ["-a", "127.0.0.1", "-p", String(port)]);
}
