// Which slice of each checkpoint tensor a tensor-parallel rank holds (the engine's side of the split is described
// in native/src/engine_tp.cc), and the load-time checks that the model splits over `world` ranks at all.
import { ConfigError } from "../common/errors.js";
import type { ModelConfig } from "../common/model/config.js";
import type { TensorSpec } from "./load.js";
import { GROUP_SIZES } from "./quant/rtn.js";

export interface TpRank {
  rank: number;
  world: number;
}

/** Rows (dim 0) or columns (dim 1) [begin, end) of a 2-D tensor; undefined: the whole tensor (norms). */
export interface Slice {
  dim: 0 | 1;
  begin: number;
  end: number;
}

/** Throws a ConfigError naming the dimension when the model does not split over `world` ranks. */
export function checkTpShape(cfg: ModelConfig, world: number): void {
  if (world === 1) return;
  const bad = (what: string): never => {
    throw new ConfigError(`--tp ${world}: ${what}; pick a --tp that divides it`);
  };
  if (cfg.numHeads % world) bad(`the ${cfg.numHeads} attention heads do not split over ${world} ranks`);
  if (cfg.numKvHeads % world && world % cfg.numKvHeads) {
    bad(`the ${cfg.numKvHeads} KV heads neither split over ${world} ranks nor divide ${world} (for replication)`);
  }
  if (cfg.intermediateSize % world) bad(`intermediate_size ${cfg.intermediateSize} does not split over ${world} ranks`);
  if (cfg.vocabSize % world) bad(`vocab_size ${cfg.vocabSize} does not split over ${world} ranks`);
}

/** The slice of `spec` that rank `tp.rank` holds. */
export function shardSlice(spec: TensorSpec, cfg: ModelConfig, tp: TpRank): Slice | undefined {
  const { rank, world } = tp;
  if (world === 1 || spec.shape.length !== 2) return undefined;
  const hd = cfg.headDim;
  const part = spec.name.slice(spec.name.lastIndexOf(".") + 1);
  const block = (n: number, dim: 0 | 1): Slice => ({ dim, begin: (rank * n) / world, end: ((rank + 1) * n) / world });
  switch (part) {
    case "embed":
    case "lm_head":
      return block(cfg.vocabSize, 0);
    case "q":
      return block(cfg.numHeads * hd, 0);
    case "k":
    case "v": {
      if (cfg.numKvHeads >= world) return block(cfg.numKvHeads * hd, 0);
      const head = Math.floor((rank * cfg.numKvHeads) / world); // replicated: ranks of one KV head share it
      return { dim: 0, begin: head * hd, end: (head + 1) * hd };
    }
    case "gate":
    case "up":
      return block(cfg.intermediateSize, 0);
    case "o":
      return block(cfg.numHeads * hd, 1);
    case "down":
      return block(cfg.intermediateSize, 1);
    default:
      throw new Error(`shardSlice: no rule for tensor ${spec.name}`);
  }
}

/** Shape of the slice. */
export function sliceShape(spec: TensorSpec, slice: Slice | undefined): number[] {
  if (!slice) return [...spec.shape];
  const s = [...spec.shape];
  s[slice.dim] = slice.end - slice.begin;
  return s;
}

/**
 * Int4 groups run along a linear's input columns; a row-parallel layer (o, down) splits those columns over the
 * ranks, so each shard must hold whole groups. Throws a ConfigError naming a group size that would work.
 */
export function checkShardGroups(cfg: ModelConfig, world: number, groupSize: number): void {
  if (world === 1) return;
  const split = [
    { layer: "o_proj", cols: cfg.numHeads * cfg.headDim },
    { layer: "down_proj", cols: cfg.intermediateSize },
  ];
  const bad = split.find((s) => (s.cols / world) % groupSize !== 0);
  if (!bad) return;
  const ok = GROUP_SIZES.filter((g) => split.every((s) => (s.cols / world) % g === 0 && cfg.hiddenSize % g === 0));
  const hint = ok.length
    ? `use --group-size ${Math.max(...ok)}${ok.length > 1 ? ` (works: ${ok.join(", ")})` : ""}`
    : `no int4 group size of ${GROUP_SIZES.join(", ")} fits: use a smaller --tp or --quantization none`;
  throw new ConfigError(
    `int4 group size ${groupSize} would straddle a tensor-parallel shard boundary: ${bad.layer} has ` +
      `${bad.cols} input columns, ${bad.cols / world} per rank at --tp ${world}, not a multiple of ${groupSize}; ${hint}`,
  );
}

/** Every --tp the tensor-parallel code offers. */
const TP_SIZES = [1, 2, 4, 8];

/**
 * What keeps a GPTQ / AWQ checkpoint (group size `groupSize`, -1: one group per input row) from splitting over
 * `world` ranks, or undefined: column-parallel layers slice the packed qzeros (and AWQ's qweight) by whole int32
 * words of 8 outputs; row-parallel layers slice the inputs by whole groups.
 */
function quantShardProblem(cfg: ModelConfig, world: number, groupSize: number): string | undefined {
  if (world === 1) return undefined;
  const hd = cfg.headDim;
  const cols = [
    { layer: "q_proj", out: cfg.numHeads * hd, per: (cfg.numHeads * hd) / world },
    {
      layer: "k_proj/v_proj",
      out: cfg.numKvHeads * hd,
      per: world > cfg.numKvHeads ? hd : (cfg.numKvHeads * hd) / world,
    },
    { layer: "gate_proj/up_proj", out: cfg.intermediateSize, per: cfg.intermediateSize / world },
  ];
  const c = cols.find((x) => x.per % 8 !== 0);
  if (c) {
    return (
      `${c.layer} has ${c.out} outputs, ${c.per} per rank at --tp ${world}, and 4-bit packing stores 8 outputs ` +
      "per int32 word (qzeros, AWQ qweight): each rank's share must be whole words"
    );
  }
  const rows = [
    { layer: "o_proj", cols: cfg.numHeads * hd },
    { layer: "down_proj", cols: cfg.intermediateSize },
  ];
  for (const r of rows) {
    const g = groupSize === -1 ? r.cols : groupSize;
    const per = r.cols / world;
    if (per % g !== 0 || per % 8 !== 0) {
      return `${r.layer} has ${r.cols} input columns, ${per} per rank at --tp ${world}, not a multiple of ${g} (a group would straddle a shard)`;
    }
  }
  return undefined;
}

/**
 * A quantized checkpoint's group size is fixed: throws a ConfigError when it cannot be split over `world` ranks,
 * naming the --tp values that would work.
 */
export function checkCheckpointShards(cfg: ModelConfig, world: number, groupSize: number, source: string): void {
  const problem = quantShardProblem(cfg, world, groupSize);
  if (!problem) return;
  const ok = TP_SIZES.filter((w) => {
    try {
      checkTpShape(cfg, w);
    } catch {
      return false;
    }
    return !quantShardProblem(cfg, w, groupSize);
  });
  const g = groupSize === -1 ? "-1 (one group per row)" : String(groupSize);
  throw new ConfigError(
    `the checkpoint's group size ${g} (${source}) cannot be split over --tp ${world}: ${problem}; ` +
      `use --tp ${ok.join(" or ")} with this checkpoint, or re-quantize it with a smaller --group-size`,
  );
}
