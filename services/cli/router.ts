// `tpserve router`: the router alone, in front of workers started elsewhere (`tpserve worker`), as in a container.
// Its worker groups come from --workers / --workers-dns, or, with REDIS_URL set, from the cluster ledger at run
// time (`tpserve worker --group NAME` registers them). SIGTERM or SIGINT drains it: new requests get UNAVAILABLE
// and health goes NOT_SERVING, in-flight streams get up to --drain-timeout-s to finish, then it exits 0.
import { ConfigError } from "../common/errors.js";
import type { Flags } from "../common/flags.js";
import { routerConfigFromFlags } from "../router/config.js";
import { resolveWorkers, type WorkerSource } from "../router/discovery.js";
import { startRouter } from "../router/main.js";

export const ROUTER_COMMAND_HELP = `router command options:
  --workers HOST:PORT[,...]      worker group leaders to serve with (not with REDIS_URL: groups come from the ledger)
  --workers-dns NAME:PORT[,...]  or: every address NAME resolves to (a headless Service), with each port
  --min-workers N                with --workers-dns: wait for at least N addresses (default 1)
  --workers-wait-s N             with --workers-dns: give up after N s; with REDIS_URL: wait this long for the
                                 first group in the ledger (default 300)`;

/** Flags of `tpserve router` that take no value. */
export const ROUTER_BOOLEAN_FLAGS = [
  "log-steps",
  "no-http",
  "auth-health-metrics",
  "log-prompts",
  "no-prefix-cache",
  "no-prefix-routing",
] as const;

/** Where `tpserve router` finds its workers, from its flags (`clustered`: REDIS_URL is set, flags optional). */
export function workerSourceFromFlags(f: Flags, clustered = false): WorkerSource {
  const src: WorkerSource = {
    workers: f.string("workers"),
    workersDns: f.string("workers-dns"),
    minWorkers: f.int("min-workers", 1, 1, 4096),
    waitMs: f.int("workers-wait-s", 300, 0, 86400) * 1000,
  };
  const fixed = src.workers !== undefined || src.workersDns !== undefined;
  if (!fixed && !clustered) {
    throw new ConfigError(
      "tpserve router needs --workers HOST:PORT[,...] or --workers-dns NAME:PORT[,...], or REDIS_URL (cluster ledger)",
    );
  }
  if (fixed && clustered) {
    throw new ConfigError(
      `--${src.workers !== undefined ? "workers" : "workers-dns"} is not used with REDIS_URL (the router finds ` +
        "worker groups in the cluster ledger, where `tpserve worker --group NAME` registers them): drop the flag",
    );
  }
  if (clustered && f.has("min-workers")) {
    throw new ConfigError("--min-workers is for --workers-dns; with REDIS_URL groups join the ledger at any time");
  }
  return src;
}

export async function routerCommand(f: Flags): Promise<number> {
  const clustered = (process.env["REDIS_URL"] ?? "") !== "";
  const src = workerSourceFromFlags(f, clustered);
  const workers = src.workers === undefined && src.workersDns === undefined ? [] : await resolveWorkers(src);
  const cfg = routerConfigFromFlags(f, workers);
  f.rejectUnknown();
  const handle = await startRouter(cfg, clustered ? { joinWaitMs: src.waitMs } : {});
  if (process.send)
    process.send({ type: "ready", address: handle.address, routerId: handle.cluster?.routerId ?? null });
  console.error(
    `tpserve router ready: gRPC on ${handle.address}` +
      (handle.httpPort !== null ? `, HTTP on ${cfg.host}:${handle.httpPort}` : "") +
      (handle.cluster
        ? ` (cluster ${cfg.cluster.cluster}, router id ${handle.cluster.routerId}; groups from the ledger)`
        : `; ${workers.length} worker group(s): ${workers.join(", ")}`),
  );
  const signal = await new Promise<string>((resolve) => {
    process.once("SIGTERM", () => resolve("SIGTERM"));
    process.once("SIGINT", () => resolve("SIGINT"));
  });
  const inFlight = handle.router.inFlight;
  console.error(
    `tpserve router: ${signal}: draining ${inFlight} in-flight request(s), up to ${cfg.drainTimeoutMs / 1000} s`,
  );
  const t0 = Date.now();
  await handle.close(cfg.drainTimeoutMs);
  console.error(`tpserve router: drained in ${Date.now() - t0} ms; exiting`);
  if (process.connected) process.disconnect();
  return 0;
}
