// The control-plane bus: publish/subscribe, queue groups and request/reply on subjects under
// "tpserve.<cluster>.". NatsBus (core NATS, no JetStream) in a cluster; MemoryBus in one process (the embedded
// default and a test double). Messages are JSON. Subjects and payloads: docs/control-plane.md.

export type Handler = (data: unknown, subject: string, reply?: (data: unknown) => void) => void;

export interface ControlBus {
  /** "memory" or "nats". */
  readonly kind: string;
  publish(subject: string, data: unknown): void;
  /** Subscribes; with `queue`, each message goes to one subscriber of that queue group. Returns unsubscribe. */
  subscribe(subject: string, handler: Handler, opts?: { queue?: string }): () => void;
  /** Sends and waits for the first reply; rejects after timeoutMs or when nobody listens. */
  request(subject: string, data: unknown, timeoutMs: number): Promise<unknown>;
  close(): Promise<void>;
}

/** Whether a subject matches a pattern with NATS wildcards ("*" one token, ">" the rest). */
export function subjectMatches(pattern: string, subject: string): boolean {
  const p = pattern.split(".");
  const s = subject.split(".");
  for (let i = 0; i < p.length; i++) {
    if (p[i] === ">") return s.length > i;
    if (i >= s.length) return false;
    if (p[i] !== "*" && p[i] !== s[i]) return false;
  }
  return p.length === s.length;
}

interface Sub {
  pattern: string;
  handler: Handler;
  queue: string | undefined;
}

/** In-process bus with the delivery rules of core NATS (asynchronous, wildcards, queue groups). */
export class MemoryBus implements ControlBus {
  readonly kind = "memory";
  private readonly subs = new Set<Sub>();
  private rr = 0;

  publish(subject: string, data: unknown, reply?: (data: unknown) => void): void {
    const copy = JSON.stringify(data);
    const plain: Sub[] = [];
    const queues = new Map<string, Sub[]>();
    for (const s of this.subs) {
      if (!subjectMatches(s.pattern, subject)) continue;
      if (s.queue === undefined) plain.push(s);
      else queues.set(s.queue, [...(queues.get(s.queue) ?? []), s]);
    }
    for (const members of queues.values()) plain.push(members[this.rr++ % members.length]!);
    for (const s of plain) queueMicrotask(() => s.handler(JSON.parse(copy), subject, reply));
  }

  subscribe(subject: string, handler: Handler, opts: { queue?: string } = {}): () => void {
    const sub: Sub = { pattern: subject, handler, queue: opts.queue };
    this.subs.add(sub);
    return () => this.subs.delete(sub);
  }

  request(subject: string, data: unknown, timeoutMs: number): Promise<unknown> {
    return new Promise((resolve, reject) => {
      if (![...this.subs].some((s) => subjectMatches(s.pattern, subject))) {
        reject(new Error(`no responders on ${subject}`));
        return;
      }
      let done = false;
      const timer = setTimeout(() => {
        done = true;
        reject(new Error(`no reply on ${subject} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.publish(subject, data, (reply) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        resolve(JSON.parse(JSON.stringify(reply)));
      });
    });
  }

  async close(): Promise<void> {
    this.subs.clear();
  }
}

/** The subjects of one cluster. */
export function subjects(cluster: string) {
  const p = `tpserve.${cluster}`;
  return {
    register: `${p}.worker.register`,
    heartbeat: `${p}.worker.heartbeat`,
    deregister: `${p}.worker.deregister`,
    drain: `${p}.worker.drain`,
    workerAll: `${p}.worker.*`,
    kvStored: `${p}.kv.stored`,
    kvRemoved: `${p}.kv.removed`,
    kvAll: `${p}.kv.*`,
    routerGone: `${p}.router.gone`,
    form: (group: string) => `${p}.form.${group}`,
  };
}
