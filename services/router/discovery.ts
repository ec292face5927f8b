// Where the router's worker groups are: a fixed list (--workers host:port,...) or the addresses a DNS name resolves
// to (--workers-dns name:port[,port...]), e.g. a Kubernetes headless Service over the worker pods, which lists
// only ready pods. DNS is read at start only: groups that appear later are picked up when the router restarts
// (the cluster-state work replaces this with registration over NATS).
import { lookup } from "node:dns/promises";
import { ConfigError } from "../common/errors.js";

export interface WorkerSource {
  /** Fixed leader addresses (host:port). */
  workers?: string;
  /** name:port[,port...]: every address of `name`, with every port (one group leader per port on each pod). */
  workersDns?: string;
  /** Wait until DNS yields at least this many addresses (default 1). */
  minWorkers: number;
  /** Give up after this long (ms). */
  waitMs: number;
}

/** Parses "name:p1,p2" into the name and its ports; throws a ConfigError naming --workers-dns. */
export function parseWorkersDns(spec: string): { name: string; ports: number[] } {
  const colon = spec.lastIndexOf(":");
  const name = colon > 0 ? spec.slice(0, colon) : "";
  const ports =
    colon > 0
      ? spec
          .slice(colon + 1)
          .split(",")
          .map(Number)
      : [];
  if (!name || ports.length === 0 || ports.some((p) => !Number.isInteger(p) || p < 1 || p > 65535)) {
    throw new ConfigError(`--workers-dns must be NAME:PORT[,PORT...] with ports in 1..65535, got "${spec}"`);
  }
  return { name, ports };
}

/** The worker group leaders' addresses, sorted (the same order in every router replica). */
export async function resolveWorkers(src: WorkerSource): Promise<string[]> {
  if (src.workers !== undefined && src.workersDns !== undefined) {
    throw new ConfigError("give either --workers or --workers-dns, not both");
  }
  if (src.workers !== undefined) {
    const list = src.workers
      .split(",")
      .map((w) => w.trim())
      .filter((w) => w.length > 0);
    for (const w of list) {
      if (!/^.+:\d{1,5}$/.test(w)) throw new ConfigError(`--workers takes host:port[,host:port...], got "${w}"`);
    }
    return list;
  }
  if (src.workersDns === undefined) return [];
  const { name, ports } = parseWorkersDns(src.workersDns);
  const until = Date.now() + src.waitMs;
  let last = "";
  for (;;) {
    try {
      const ips = [...new Set((await lookup(name, { all: true })).map((a) => a.address))].sort();
      const out = ips.flatMap((ip) => ports.map((p) => `${ip.includes(":") ? `[${ip}]` : ip}:${p}`));
      if (out.length >= src.minWorkers) return out;
      last = `${out.length} address(es), fewer than --min-workers ${src.minWorkers}`;
    } catch (e) {
      last = (e as Error).message;
    }
    if (Date.now() >= until) {
      throw new ConfigError(
        `--workers-dns ${src.workersDns}: no workers after ${Math.round(src.waitMs / 1000)} s (${last}); ` +
          "check the worker pods are ready, or raise --workers-wait-s",
      );
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
}
