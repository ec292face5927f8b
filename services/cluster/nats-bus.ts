// The control-plane bus on core NATS (the `nats` package). JSON payloads; credentials and TLS from the
// environment (ClusterConfig). Publishing never waits: the client buffers while reconnecting.
import { type ConnectionOptions, connect, type NatsConnection, type Subscription } from "nats";
import type { ControlBus, Handler } from "./bus.js";
import type { ClusterConfig } from "./config.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export class NatsBus implements ControlBus {
  readonly kind = "nats";
  private readonly subs = new Set<Subscription>();

  private constructor(private readonly nc: NatsConnection) {}

  static async connect(cfg: ClusterConfig, name: string): Promise<NatsBus> {
    if (!cfg.natsUrl) throw new TypeError("NatsBus.connect needs NATS_URL");
    const opts: ConnectionOptions = {
      servers: cfg.natsUrl.split(",").map((s) => s.trim()),
      name,
      maxReconnectAttempts: -1,
      reconnectTimeWait: 250,
      timeout: 3000,
      ...(cfg.natsUser ? { user: cfg.natsUser } : {}),
      ...(cfg.natsPassword ? { pass: cfg.natsPassword } : {}),
      ...(cfg.natsToken ? { token: cfg.natsToken } : {}),
    };
    if (cfg.natsTls) {
      opts.tls = {
        ...(cfg.natsTls.ca ? { ca: cfg.natsTls.ca.toString() } : {}),
        ...(cfg.natsTls.cert ? { cert: cfg.natsTls.cert.toString() } : {}),
        ...(cfg.natsTls.key ? { key: cfg.natsTls.key.toString() } : {}),
      };
    }
    try {
      return new NatsBus(await connect(opts));
    } catch (e) {
      throw new Error(`cannot reach NATS at NATS_URL: ${(e as Error).message}`);
    }
  }

  publish(subject: string, data: unknown): void {
    if (this.nc.isClosed()) return;
    this.nc.publish(subject, enc.encode(JSON.stringify(data)));
  }

  subscribe(subject: string, handler: Handler, opts: { queue?: string } = {}): () => void {
    const sub = this.nc.subscribe(subject, {
      ...(opts.queue ? { queue: opts.queue } : {}),
      callback: (err, msg) => {
        if (err) return;
        let data: unknown;
        try {
          data = JSON.parse(dec.decode(msg.data));
        } catch {
          return; // not ours: every tpserve message is JSON
        }
        const reply = msg.reply ? (d: unknown) => msg.respond(enc.encode(JSON.stringify(d))) : undefined;
        handler(data, msg.subject, reply);
      },
    });
    this.subs.add(sub);
    return () => {
      this.subs.delete(sub);
      sub.unsubscribe();
    };
  }

  async request(subject: string, data: unknown, timeoutMs: number): Promise<unknown> {
    const m = await this.nc.request(subject, enc.encode(JSON.stringify(data)), { timeout: timeoutMs });
    return JSON.parse(dec.decode(m.data));
  }

  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    await this.nc.drain().catch(() => this.nc.close());
  }
}
