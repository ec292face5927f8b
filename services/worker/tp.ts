// The worker's side of a tensor-parallel group: joining the group's shared-memory collectives, the follower loop,
// and how a failed group shows to the router. Design: docs/tensor-parallel.md.
import { availableParallelism } from "node:os";
import type { Logger } from "pino";
import { type Engine, loadNative, TP_FAILURE_CODES, type TpGroup } from "../../native/index.js";
import { ConfigError } from "../common/errors.js";
import { loadModelConfig } from "../common/model/config.js";
import type { WorkerConfig } from "./config.js";
import { readQuantConfig } from "./quant/checkpoint.js";
import { checkCheckpointShards, checkShardGroups, checkTpShape } from "./shard.js";

/** How long a rank waits for the others to start, join and load their shards. */
export const TP_JOIN_TIMEOUT_MS = 120_000;

/** True for the native codes of a failed group: the step's requests end with UNAVAILABLE. */
export function isTpFailure(code: string | undefined): boolean {
  return code !== undefined && TP_FAILURE_CODES.has(code);
}

/** Kernel threads of one rank: --threads, or this machine's cores shared out over the group's ranks. */
export function tpThreads(cfg: WorkerConfig): number {
  if (cfg.threads > 0 || cfg.tp === 1) return cfg.threads;
  return Math.max(1, Math.floor(availableParallelism() / cfg.tp));
}

/** Creates this rank's handle of the group and waits until every rank has joined; undefined at --tp 1. */
export async function joinTpGroup(cfg: WorkerConfig): Promise<TpGroup | undefined> {
  if (cfg.tp === 1) return undefined;
  if (cfg.tpGroup === "") {
    throw new ConfigError(`--tp ${cfg.tp} needs --tp-group NAME, the same unique name on every rank of the group`);
  }
  // Refuse a split that cannot work before waiting for the other ranks (loadWeights checks again).
  const model = loadModelConfig(cfg.model);
  checkTpShape(model, cfg.tp);
  if (cfg.quantization === "int4") checkShardGroups(model, cfg.tp, cfg.groupSize);
  const qc = cfg.loadFormat === "safetensors" && cfg.quantization === "none" ? readQuantConfig(cfg.model) : undefined;
  if (qc) checkCheckpointShards(model, cfg.tp, qc.groupSize, qc.source);
  const group = new (loadNative().TpGroup)({
    name: cfg.tpGroup,
    rank: cfg.tpRank,
    world: cfg.tp,
    timeoutMs: cfg.tpTimeoutMs,
    joinTimeoutMs: TP_JOIN_TIMEOUT_MS,
  });
  await group.join();
  return group;
}

/** Waits until every rank has loaded its shard (rank 0 must not send a step before the others can take it). */
export async function tpLoadedBarrier(group: TpGroup): Promise<void> {
  await group.broadcast(new Uint8Array(8), 0, TP_JOIN_TIMEOUT_MS);
}

/**
 * A follower (rank > 0) runs the steps its leader broadcasts until the leader closes the group or the group fails.
 * It keeps its process (and its Describe endpoint) up after a failure; `failure` then says why, and `onFailure`
 * is called with it (not when the leader closed the group).
 */
export class Follower {
  failure: string | undefined;
  readonly done: Promise<void>;

  constructor(engine: Engine, log: Logger, onFailure: (reason: string) => void = () => undefined) {
    const followLoop = engine.followLoop?.bind(engine);
    if (!followLoop) throw new Error("this engine has no followLoop(): not a tensor-parallel follower");
    // The steps run back to back in the addon (no return to JavaScript between them).
    this.done = (async () => {
      try {
        const steps = await followLoop();
        log.info({ steps }, "the leader closed the tensor-parallel group");
        this.failure = "the leader closed the group";
      } catch (err) {
        const e = err as { code?: string; message?: string };
        this.failure = `${e.code ?? "ERROR"}: ${e.message ?? String(err)}`;
        log.error({ code: e.code }, `tensor-parallel group failed: ${e.message}`);
        onFailure(this.failure);
      }
    })();
  }
}
