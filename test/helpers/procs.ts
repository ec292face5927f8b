// Starts `tpserve worker` and `tpserve router` as separate processes (as in containers), each on a free loopback
// port, and collects their stderr. Tests stop them by PID.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { packageRoot } from "../../services/common/paths.js";

export interface Proc {
  child: ChildProcess;
  /** host:port it serves gRPC on. */
  address: string;
  /** Everything it wrote to stderr so far. */
  stderr(): string;
  /** Resolves with the exit code. */
  exited: Promise<number | null>;
  /** Resolves when stderr matches `re`. */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpExecArray>;
}

const BIN = join(packageRoot(), "bin", "tpserve.js");

function start(args: string[], ready: RegExp, bin: string): Promise<Proc> {
  const child = spawn(process.execPath, [bin, ...args], { stdio: ["ignore", "ignore", "pipe"] });
  let err = "";
  const listeners = new Set<() => void>();
  child.stderr!.on("data", (d: Buffer) => {
    err += d.toString();
    for (const l of [...listeners]) l();
  });
  const exited = new Promise<number | null>((resolve) => child.once("exit", (code) => resolve(code)));
  const waitFor = (re: RegExp, timeoutMs = 60_000) =>
    new Promise<RegExpExecArray>((resolve, reject) => {
      const check = () => {
        const m = re.exec(err);
        if (m) {
          listeners.delete(check);
          clearTimeout(timer);
          resolve(m);
        }
      };
      const timer = setTimeout(() => {
        listeners.delete(check);
        reject(new Error(`no ${re} on stderr of tpserve ${args[0]} within ${timeoutMs} ms:\n${err}`));
      }, timeoutMs);
      listeners.add(check);
      void exited.then((code) => {
        if (listeners.has(check)) {
          check();
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(timer);
            reject(new Error(`tpserve ${args[0]} exited (${code}) before ${re}:\n${err}`));
          }
        }
      });
      check();
    });
  return waitFor(ready).then((m) => ({ child, address: m[1]!, stderr: () => err, exited, waitFor }));
}

/** `tpserve worker` on a free port; resolves once it is ready. `bin`: another copy of bin/tpserve.js. */
export function startWorkerProcess(extra: string[] = [], bin = BIN): Promise<Proc> {
  return start(
    ["worker", "--worker-port", "0", "--threads", "1", "--kv-cache-mib", "64", ...extra],
    /"address":"([^"]+)"/,
    bin,
  );
}

/** `tpserve router` in front of `workers`; resolves once it is ready. */
export function startRouterProcess(workers: string[], extra: string[] = [], bin = BIN): Promise<Proc> {
  return start(
    ["router", "--workers", workers.join(","), "--port", "0", "--no-http", ...extra],
    /tpserve router ready: gRPC on (\S+?)[,;]/,
    bin,
  );
}

/** SIGKILL to every process of `procs` still running, and empties the list (tests' afterEach). */
export function killAll(procs: Proc[]): void {
  for (const p of procs.splice(0))
    if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill("SIGKILL");
}
