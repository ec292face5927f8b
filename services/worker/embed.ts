// Embeddings on the worker: the prompt runs through the model on KV pages reserved for this (the last pages of the
// pool, outside the router's accounting), in chunks of the batch-token budget; the final-norm hidden states are
// mean-pooled over every token and L2-normalized. One embedding at a time (they queue).
import type { Engine } from "../../native/index.js";

export class Embedder {
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly engine: Engine,
    private readonly opts: {
      firstPage: number;
      pages: number;
      blockSize: number;
      hidden: number;
      maxBatchTokens: number;
    },
  ) {}

  /** Tokens an embedding may have: what the reserved pages hold. */
  get maxTokens(): number {
    return this.opts.pages * this.opts.blockSize;
  }

  embed(tokens: number[]): Promise<Float32Array> {
    const run = this.chain.then(() => this.run(tokens));
    this.chain = run.catch(() => undefined);
    return run;
  }

  private async run(tokens: number[]): Promise<Float32Array> {
    const { firstPage, blockSize, hidden, maxBatchTokens } = this.opts;
    if (tokens.length === 0 || tokens.length > this.maxTokens) {
      throw new RangeError(`an embedding takes 1..${this.maxTokens} tokens, got ${tokens.length}`);
    }
    const used = Math.ceil(tokens.length / blockSize);
    const blockTables = Int32Array.from({ length: used }, (_, i) => firstPage + i);
    const sum = new Float64Array(hidden);
    for (let start = 0; start < tokens.length; start += maxBatchTokens) {
      const chunk = tokens.slice(start, start + maxBatchTokens);
      const states = await this.engine.forward({
        tokens: Int32Array.from(chunk),
        seqLens: Int32Array.of(chunk.length),
        contextLens: Int32Array.of(start + chunk.length),
        blockTables,
        maxBlocksPerSeq: used,
        logits: "hidden",
      });
      for (let t = 0; t < chunk.length; t++) for (let d = 0; d < hidden; d++) sum[d]! += states[t * hidden + d]!;
    }
    let norm = 0;
    for (let d = 0; d < hidden; d++) norm += (sum[d]! / tokens.length) ** 2;
    norm = Math.sqrt(norm) || 1;
    const out = new Float32Array(hidden);
    for (let d = 0; d < hidden; d++) out[d] = sum[d]! / tokens.length / norm;
    return out;
  }
}
