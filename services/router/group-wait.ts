// Requests that wait for a worker group while none is in service (--group-wait-ms; a restarting group): new
// requests (run when a group comes), requests of a failed group with nowhere to move (moved to it, from their
// streamed tokens) and embedding requests (given the group). Each waits at most the flag's time, then fails with
// UNAVAILABLE naming it; at most --max-queue of each kind wait. The router (server.ts) decides when to wait and does
// what a wait ends in.
import * as grpc from "@grpc/grpc-js";
import type { Logger } from "pino";
import { RequestError } from "../common/errors.js";
import type { GenerateRequest__Output } from "../common/generated/tpserve/v1/GenerateRequest.js";
import type { WorkerGroup } from "./group.js";
import { Holding } from "./holding.js";
import type { ChunkSink, SubmittedRequest } from "./request-stream.js";

/** A running request of a failed group, as far as its wait needs it. */
export interface MovableRequest {
  requestId: string;
  done: boolean;
  retries: number;
  group: WorkerGroup;
}

/** What the router does with a waiting request once a group comes or its wait ends. */
export interface GroupWaitActions<A extends MovableRequest> {
  pickGroup(): WorkerGroup | undefined;
  /** Runs a new request now (Router.submit). */
  submit(req: GenerateRequest__Output, sink: ChunkSink): SubmittedRequest | null;
  /** Moves a running request to a group in service, from its streamed tokens (Router.retryElsewhere). */
  move(a: A, why: string): boolean;
  /** Ends a running request with UNAVAILABLE and `message`. */
  fail(a: A, message: string): void;
  /** Refuses a new request with `e`. */
  refuse(req: GenerateRequest__Output, sink: ChunkSink, e: RequestError): void;
}

/** A new request waiting, then its handle once it runs. */
interface HeldRequest {
  req: GenerateRequest__Output;
  sink: ChunkSink;
  handle?: SubmittedRequest | null;
}

export class GroupWait<A extends MovableRequest> {
  private readonly fresh: Holding<HeldRequest>;
  private readonly moved: Holding<A>;
  private readonly embeds: Holding<(group: WorkerGroup | undefined) => void>;

  constructor(
    private readonly ms: number,
    private readonly maxQueue: number,
    private readonly act: GroupWaitActions<A>,
    private readonly log: Logger,
  ) {
    this.fresh = new Holding(ms);
    this.moved = new Holding(ms);
    this.embeds = new Holding(ms);
  }

  /** Whether requests wait at all (--group-wait-ms > 0). */
  get enabled(): boolean {
    return this.ms > 0;
  }

  /** Why a wait that ended without a group failed. */
  get expired(): string {
    return `no healthy worker group came into service within ${this.ms} ms (--group-wait-ms)`;
  }

  /** A valid new request waits for a group; RESOURCE_EXHAUSTED (thrown) past --max-queue waiting ones. */
  holdNew(req: GenerateRequest__Output, sink: ChunkSink, requestId: string): SubmittedRequest {
    this.checkRoom(this.fresh.size);
    const held: HeldRequest = { req: { ...req, requestId }, sink };
    this.fresh.hold(held, (h) =>
      this.act.refuse(h.req, h.sink, new RequestError(grpc.status.UNAVAILABLE, this.expired)),
    );
    return {
      requestId,
      cancel: () => {
        if (!this.fresh.release(held)) held.handle?.cancel();
      },
    };
  }

  /**
   * A request of a failed group that no other group took waits for one, then moves there as Router.retryElsewhere
   * moves it (at most once a request); false when it does not wait.
   */
  holdMoved(a: A, why: string): boolean {
    if (!this.enabled || a.retries > 0 || a.group.healthy) return false;
    this.moved.hold(a, () => {
      if (!a.done) this.act.fail(a, `${why}; no worker group came back within ${this.ms} ms (--group-wait-ms)`);
    });
    this.log.info({ request_id: a.requestId, from: a.group.name, why }, "request waits for a worker group");
    return true;
  }

  /** An embedding request's group once one comes (undefined when its wait ends first); RESOURCE_EXHAUSTED as above. */
  group(): Promise<WorkerGroup | undefined> {
    this.checkRoom(this.embeds.size);
    return new Promise((resolve) => this.embeds.hold(resolve, () => resolve(undefined)));
  }

  /** A group came into service: the waiting requests go to the groups now in service. */
  resume(group: WorkerGroup): void {
    for (const a of this.moved.takeAll()) {
      if (!a.done && !this.act.move(a, `worker group ${group.name} came into service`)) {
        this.act.fail(a, "no worker group to move to");
      }
    }
    for (const h of this.fresh.takeAll()) h.handle = this.act.submit(h.req, h.sink);
    for (const resolve of this.embeds.takeAll()) resolve(this.act.pickGroup());
  }

  /** Every waiting request ends with UNAVAILABLE and `why` (draining, closing). */
  drop(why: string): void {
    for (const a of this.moved.takeAll()) if (!a.done) this.act.fail(a, why);
    for (const h of this.fresh.takeAll())
      this.act.refuse(h.req, h.sink, new RequestError(grpc.status.UNAVAILABLE, why));
    for (const resolve of this.embeds.takeAll()) resolve(undefined);
  }

  private checkRoom(waiting: number): void {
    if (waiting >= this.maxQueue) {
      throw new RequestError(
        grpc.status.RESOURCE_EXHAUSTED,
        `the queue is full (max_queue ${this.maxQueue} requests waiting for a worker group); retry later`,
      );
    }
  }
}
