// Group formation over the control bus: the leader (rank 0) of a group of `size` processes answers the join
// requests of ranks 1..size-1 with a payload of its choosing (the NCCL unique id for tensor parallelism, a
// shared-memory name on the CPU) and learns every member's info. Request/reply on tpserve.<cluster>.form.<group>.
import { type ControlBus, subjects } from "./bus.js";

export interface FormationMember {
  rank: number;
  info: Record<string, unknown>;
}

interface JoinRequest {
  rank: number;
  size: number;
  info: Record<string, unknown>;
}

/** Leader side: waits until every other rank has joined (or fails after timeoutMs); returns them by rank. */
export function hostFormation(
  bus: ControlBus,
  cluster: string,
  group: string,
  size: number,
  payload: unknown,
  timeoutMs: number,
): Promise<FormationMember[]> {
  return new Promise((resolve, reject) => {
    const members = new Map<number, FormationMember>();
    const finish = (err?: Error) => {
      clearTimeout(timer);
      // Keep answering late retries for a moment, so a member whose reply was lost can still join.
      setTimeout(unsubscribe, 5000).unref();
      if (err) reject(err);
      else resolve([...members.values()].sort((a, b) => a.rank - b.rank));
    };
    const timer = setTimeout(() => {
      const missing = Array.from({ length: size - 1 }, (_, i) => i + 1).filter((r) => !members.has(r));
      finish(new Error(`group ${group}: ranks ${missing.join(",")} did not join within ${timeoutMs} ms`));
    }, timeoutMs);
    const unsubscribe = bus.subscribe(subjects(cluster).form(group), (data, _subject, reply) => {
      const req = data as JoinRequest;
      if (!reply) return;
      if (!Number.isInteger(req.rank) || req.rank < 1 || req.rank >= size || req.size !== size) {
        reply({ error: `rank ${req.rank} of size ${req.size} does not fit group ${group} of size ${size}` });
        return;
      }
      members.set(req.rank, { rank: req.rank, info: req.info });
      reply({ payload });
      if (members.size === size - 1) finish();
    });
    if (size === 1) finish();
  });
}

/** Member side: asks the leader until it answers (it may start later) or timeoutMs passes; returns its payload. */
export async function joinFormation(
  bus: ControlBus,
  cluster: string,
  group: string,
  rank: number,
  size: number,
  info: Record<string, unknown>,
  timeoutMs: number,
): Promise<unknown> {
  const until = Date.now() + timeoutMs;
  let last = "";
  while (Date.now() < until) {
    try {
      const r = (await bus.request(subjects(cluster).form(group), { rank, size, info }, 1000)) as {
        payload?: unknown;
        error?: string;
      };
      if (r.error) throw new Error(r.error);
      return r.payload;
    } catch (e) {
      last = (e as Error).message;
      if (/does not fit/.test(last)) throw e;
      await new Promise((res) => setTimeout(res, 100));
    }
  }
  throw new Error(`group ${group}: the leader did not answer within ${timeoutMs} ms (${last})`);
}
