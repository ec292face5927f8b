// `tpserve serve` keeps its worker group running: when a rank exits, reports that its group failed (a rank died or
// hung), or answers no heartbeat (it hangs while the group is idle: tp-group.ts), the other ranks are stopped and a new group starts with the same configuration on the same worker port,
// after a backoff (1 s, doubling up to 30 s; back to 1 s once a group has served for 60 s). The router puts the new
// group in service when its health watch sees the port serve again (services/router/static-groups.ts).
import type { WorkerConfig } from "../worker/config.js";
import { heartbeatFor, type RankProcess, startWorkerGroup, stopWorkerGroup, watchWorkerGroup } from "./tp-group.js";

export interface SuperviseOptions {
  firstDelayMs: number;
  maxDelayMs: number;
  /** A group that served this long before it failed restarts after `firstDelayMs` again. */
  resetAfterMs: number;
  log: (line: string) => void;
  /** How a group starts and stops (tests pass stand-ins). */
  start: (cfg: WorkerConfig) => Promise<{ ranks: RankProcess[] }>;
  stop: (ranks: RankProcess[]) => Promise<void>;
}

const DEFAULTS: SuperviseOptions = {
  firstDelayMs: 1000,
  maxDelayMs: 30_000,
  resetAfterMs: 60_000,
  log: (line) => console.error(line),
  start: startWorkerGroup,
  stop: stopWorkerGroup,
};

export class GroupSupervisor {
  /** Groups started after the first. */
  restarts = 0;
  private ranksNow: RankProcess[];
  private readonly cfg: WorkerConfig;
  private readonly opts: SuperviseOptions;
  private startedAt = Date.now();
  private delayMs: number;
  private stopped = false;
  private unwatch: () => void = () => {};
  private restarting: Promise<void> | undefined;
  /** Ends a backoff wait early (stop()). */
  private wake: (() => void) | undefined;

  /** `cfg` started `ranks` (rank 0 first); restarts reuse it with rank 0's port as it was bound. */
  constructor(cfg: WorkerConfig, ranks: RankProcess[], opts: Partial<SuperviseOptions> = {}) {
    const address = ranks[0]?.address ?? "";
    this.cfg = { ...cfg, port: Number(address.slice(address.lastIndexOf(":") + 1)) || cfg.port };
    this.opts = { ...DEFAULTS, ...opts };
    this.delayMs = this.opts.firstDelayMs;
    this.ranksNow = ranks;
    this.watch();
  }

  /** The ranks of the group running now (or being replaced). */
  get ranks(): RankProcess[] {
    return this.ranksNow;
  }

  /** No restart from now on (a group starting now still comes up; stop() stops it). */
  stopSupervising(): void {
    this.stopped = true;
    this.unwatch();
    this.wake?.();
  }

  /** Stops supervising and stops the group (after a start in progress has finished). */
  async stop(): Promise<void> {
    this.stopSupervising();
    await this.restarting;
    await this.opts.stop(this.ranksNow);
  }

  private watch(): void {
    this.unwatch = watchWorkerGroup(
      this.ranksNow,
      (rank, why) => {
        if (this.stopped) return;
        const who = this.ranksNow.length > 1 ? `rank ${rank.rank} of the worker group` : "the worker";
        this.opts.log(`tpserve: ${who} (pid ${rank.pid}) ${why}; restarting the group`);
        this.restarting = this.restart();
      },
      heartbeatFor(this.cfg),
    );
  }

  private async restart(): Promise<void> {
    await this.opts.stop(this.ranksNow);
    if (Date.now() - this.startedAt >= this.opts.resetAfterMs) this.delayMs = this.opts.firstDelayMs;
    while (!this.stopped) {
      const delay = this.delayMs;
      this.delayMs = Math.min(2 * delay, this.opts.maxDelayMs);
      this.opts.log(`tpserve: starting a new worker group on port ${this.cfg.port} in ${delay / 1000} s`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      if (this.stopped) return;
      // A fresh --tp-group name (its shared-memory segment) and a higher epoch for every new group.
      const cfg = { ...this.cfg, tpGroup: "", epoch: this.cfg.epoch + this.restarts + 1 };
      try {
        const { ranks } = await this.opts.start(cfg);
        this.restarts++;
        this.ranksNow = ranks;
        this.startedAt = Date.now();
        if (this.stopped) return; // stop() stops them
        this.opts.log(
          `tpserve: worker group restarted (restart ${this.restarts}, epoch ${cfg.epoch}): ` +
            `rank 0 serves on ${ranks[0]?.address} (pids ${ranks.map((r) => r.pid)})`,
        );
        this.watch();
        return;
      } catch (err) {
        this.opts.log(`tpserve: the new worker group did not start: ${(err as Error).message}`);
      }
    }
  }
}
