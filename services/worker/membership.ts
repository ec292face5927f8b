// A worker group as a member of the cluster: it registers its pool in the page ledger (getting a new epoch),
// renews its lease every third of the TTL and deregisters on a clean shutdown. When the ledger has forgotten the
// group (its lease expired, or Redis restarted empty) it registers again with an epoch above the one it had, so
// plans made for the old pool are rejected (fencing) even if the ledger lost its epoch counter.
import type { Logger } from "pino";
import { type ControlBus, subjects } from "../cluster/bus.js";
import type { ClusterConfig } from "../cluster/config.js";
import type { GroupSpec, PageLedger } from "../cluster/ledger.js";

/** What a worker group says on the control bus (NATS), besides its ledger registration. */
export interface GroupAnnouncer {
  bus: ControlBus;
  /** Sequences the group holds now (all router sessions), sent with every heartbeat. */
  load: () => number;
}

export class GroupMembership {
  private timer: NodeJS.Timeout | undefined;
  private heartbeat: NodeJS.Timeout | undefined;
  private renewing = false;
  private closed = false;

  private constructor(
    private readonly ledger: PageLedger,
    private readonly spec: GroupSpec,
    private readonly cfg: ClusterConfig,
    private readonly onEpoch: (epoch: number) => void,
    private readonly log: Logger,
    public epoch: number,
    private readonly announcer: GroupAnnouncer | undefined,
  ) {}

  private get subj() {
    return subjects(this.cfg.cluster);
  }

  private announce(subject: string, extra: Record<string, unknown> = {}): void {
    this.announcer?.bus.publish(subject, {
      group: this.spec.id,
      epoch: this.epoch,
      address: this.spec.address,
      numPages: this.spec.numPages,
      blockSize: this.spec.blockSize,
      ...extra,
    });
  }

  /** Registers the group (epoch above `lastEpoch`) and starts renewing its lease. */
  static async join(
    ledger: PageLedger,
    spec: GroupSpec,
    cfg: ClusterConfig,
    lastEpoch: number,
    onEpoch: (epoch: number) => void,
    log: Logger,
    announcer?: GroupAnnouncer,
  ): Promise<GroupMembership> {
    const info = await ledger.registerGroup(spec, cfg.leaseTtlMs, lastEpoch + 1);
    onEpoch(info.epoch);
    log.info({ group: spec.id, epoch: info.epoch, address: spec.address }, "worker group registered");
    const m = new GroupMembership(ledger, spec, cfg, onEpoch, log, info.epoch, announcer);
    const period = Math.max(20, Math.floor(cfg.leaseTtlMs / 3));
    m.timer = setInterval(() => void m.renew(), period);
    m.timer.unref();
    if (announcer) {
      m.announce(m.subj.register);
      m.heartbeat = setInterval(() => m.announce(m.subj.heartbeat, { sequences: announcer.load() }), period);
      m.heartbeat.unref();
    }
    return m;
  }

  private async renew(): Promise<void> {
    if (this.renewing || this.closed) return;
    this.renewing = true;
    try {
      if (await this.ledger.renewGroup(this.spec.id, this.epoch, this.cfg.leaseTtlMs)) return;
      const info = await this.ledger.registerGroup(this.spec, this.cfg.leaseTtlMs, this.epoch + 1);
      this.log.warn({ group: this.spec.id, old_epoch: this.epoch, epoch: info.epoch }, "group re-registered");
      this.epoch = info.epoch;
      this.onEpoch(info.epoch);
      this.announce(this.subj.register);
    } catch (e) {
      this.log.warn({ group: this.spec.id, error: (e as Error).message }, "group lease renewal failed");
    } finally {
      this.renewing = false;
    }
  }

  /** Drain notice: routers send no new requests here; the ones in flight go on. */
  drain(): void {
    this.announce(this.subj.drain);
  }

  /** Deregisters (a clean shutdown); routers take the group out of service at once (NATS) or at their next sweep. */
  async leave(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    if (this.heartbeat) clearInterval(this.heartbeat);
    await this.ledger.removeGroup(this.spec.id, this.epoch).catch(() => undefined);
    this.announce(this.subj.deregister);
    await this.announcer?.bus.close();
    await this.ledger.close();
  }
}
