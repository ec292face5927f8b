// Whether a worker group found after the router started can serve with it: the same model, vocabulary and KV block
// size as the groups it started with (prefix hashes and page counts assume one block size), its rank 0 (the rank a
// router talks to), and a pool that holds one sequence of the router's context limit. Static re-admission
// (static-groups.ts) and cluster discovery (cluster.ts) both ask it.
import type { DescribeResponse__Output } from "../common/generated/tpserve/worker/v1/DescribeResponse.js";

/** What a router needs to know of itself to judge a group. */
export interface RouterShape {
  readonly modelName: string;
  readonly vocabSize: number;
  readonly blockSize: number;
  readonly maxContext: number;
}

/** Why this group cannot serve with the router; undefined when it can. */
export function groupMismatch(router: RouterShape, d: DescribeResponse__Output): string | undefined {
  if (d.model !== router.modelName) return `it serves model ${d.model}, the router ${router.modelName}`;
  if (d.vocabSize !== router.vocabSize) {
    return `its vocabulary has ${d.vocabSize} tokens, the router's ${router.vocabSize}`;
  }
  if (d.blockSize !== router.blockSize) return `its block size is ${d.blockSize}, the router's ${router.blockSize}`;
  if (d.tpRank !== 0) return `it is rank ${d.tpRank} of a tensor-parallel group (the router talks to rank 0)`;
  const tokens = (d.numPages - 1) * d.blockSize;
  if (tokens < router.maxContext) {
    return `its KV pool holds ${tokens} tokens, less than the router's context limit of ${router.maxContext}`;
  }
  return undefined;
}

/** What a refusal's log line says of the group (beside the mismatch itself). */
export function describeFields(d: DescribeResponse__Output) {
  return { model: d.model, vocab_size: d.vocabSize, block_size: d.blockSize, tp_rank: d.tpRank };
}
