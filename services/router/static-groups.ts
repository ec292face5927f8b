// Static workers (--workers, --workers-dns, `tpserve serve`): the router follows each worker's grpc.health.v1 status,
// by address. NOT_SERVING (a drain, or a failed tensor-parallel group) stops new requests going to it. SERVING while
// the router's group for that address is out of service (its Steps stream broke, or a step said its tensor-parallel
// group failed) means a worker serves there again, e.g. a restarted process or container: once its Describe shows it
// can serve with the router (admission.ts), the failed group is replaced by a fresh one at the worker's epoch. The
// requests the failed group had are not touched: they ended or moved to another group when it failed.
import type { Logger } from "pino";
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import { describeFields, groupMismatch } from "./admission.js";
import { describeWorker } from "./cluster.js";
import type { RouterConfig } from "./config.js";
import { staticGroupName, staticGroupPages } from "./embedded.js";
import type { WorkerGroup } from "./group.js";
import type { Router } from "./server.js";
import { watchWorkerHealth } from "./worker-health.js";

/** While a worker reports SERVING but does not answer Describe, try again this often. */
const RETRY_MS = 1000;

interface StaticWorker {
  address: string;
  name: string;
  client: WorkerClient;
  /** The last status its health watch reported. */
  serving: boolean;
  /** A re-admission is in progress. */
  busy: boolean;
  retry?: NodeJS.Timeout;
  unwatch: () => void;
}

export class StaticGroups {
  private readonly workers: StaticWorker[];
  private closed = false;

  /** `clients[i]` is the client of `cfg.workers[i]`, whose group the router already serves with. */
  constructor(
    private readonly router: Router,
    private readonly cfg: RouterConfig,
    clients: readonly WorkerClient[],
    private readonly log: Logger,
  ) {
    this.workers = cfg.workers.map((address, i) => ({
      address,
      name: staticGroupName(address),
      client: clients[i]!,
      serving: true,
      busy: false,
      unwatch: () => {},
    }));
    for (const w of this.workers) w.unwatch = watchWorkerHealth(w.address, (serving) => this.onHealth(w, serving));
  }

  close(): void {
    this.closed = true;
    for (const w of this.workers) {
      w.unwatch();
      clearTimeout(w.retry);
    }
  }

  private group(w: StaticWorker): WorkerGroup | undefined {
    return this.router.groups.find((g) => g.name === w.name);
  }

  private onHealth(w: StaticWorker, serving: boolean): void {
    w.serving = serving;
    const g = this.group(w);
    if (g && g.draining === serving) {
      g.draining = !serving;
      if (!serving) this.log.info({ worker: w.address }, "worker draining: no new requests go to it");
      else if (g.healthy) this.log.info({ worker: w.address }, "worker serving again");
    }
    if (serving) void this.readmit(w);
  }

  /** Replaces the failed group of `w` by a fresh one (see the file comment). */
  private async readmit(w: StaticWorker): Promise<void> {
    const failed = this.group(w);
    if (this.closed || w.busy || !w.serving || !failed || failed.healthy) return;
    w.busy = true;
    clearTimeout(w.retry);
    try {
      let d: DescribeResponse__Output;
      try {
        d = await describeWorker(w.client, 5000);
      } catch (e) {
        this.log.warn({ worker: w.address, error: (e as Error).message }, "worker reports SERVING but not Describe");
        w.retry = setTimeout(() => void this.readmit(w), RETRY_MS);
        w.retry.unref();
        return;
      }
      const mismatch = groupMismatch(this.router, d);
      if (mismatch) {
        this.log.error(
          { worker: w.address, ...describeFields(d) },
          `worker ${w.address} serves again, but ${mismatch}: not put back in service`,
        );
        return;
      }
      const { name, epoch, pages } = await staticGroupPages(this.cfg, w.address, d);
      if (this.closed || this.group(w) !== failed) return;
      this.router.removeGroup(failed, `worker ${w.address} was replaced by a new group at epoch ${epoch}`);
      this.router.addGroup(name, w.client, d, epoch, pages);
      this.router.metrics.readmissions.inc();
      this.log.info(
        { worker: w.address, epoch },
        `worker ${w.address} serving again: back in service at epoch ${epoch}`,
      );
    } finally {
      w.busy = false;
    }
  }
}
