// The scheduler's side of prefix caching: at admission a sequence starts on the cached pages of its longest cached
// prefix; whenever a step completes a block, the block is registered in the cache (docs/prefix-caching.md).
import { blockHash, type PrefixCachingPool } from "./prefix-cache.js";

/** What the tracker reads and changes of a scheduler sequence. */
export interface PrefixSequence {
  readonly tokens: number[];
  numComputed: number;
  pages: number[];
  /** Chained hashes of the sequence's full blocks computed so far. */
  blockHashes: Buffer[];
  /** Leading blocks whose pages are in the cache (acquired from it or registered by this sequence). */
  cachedBlocks: number;
}

export class PrefixTracker {
  constructor(
    readonly cache: PrefixCachingPool,
    private readonly root: Buffer,
    private readonly blockSize: number,
  ) {}

  /** The chained hash of block b of s (blocks are hashed in order; earlier ones are kept). */
  private hashOf(s: PrefixSequence, b: number): Buffer {
    const bs = this.blockSize;
    while (s.blockHashes.length <= b) {
      const i = s.blockHashes.length;
      const parent = i === 0 ? this.root : s.blockHashes[i - 1]!;
      s.blockHashes.push(blockHash(parent, s.tokens.slice(i * bs, (i + 1) * bs)));
    }
    return s.blockHashes[b]!;
  }

  /** At admission: starts the sequence on the cached pages of its longest cached prefix (at least 1 token left). */
  useCachedPrefix(s: PrefixSequence): void {
    const maxBlocks = Math.floor((s.tokens.length - 1) / this.blockSize);
    const hashes: string[] = [];
    for (let b = 0; b < maxBlocks; b++) {
      const h = this.hashOf(s, b).toString("hex");
      if (this.cache.match([h]) === 0) break;
      hashes.push(h);
    }
    if (hashes.length === 0) return;
    s.pages = this.cache.acquire(hashes);
    s.cachedBlocks = hashes.length;
    s.numComputed = hashes.length * this.blockSize;
  }

  /** Undoes useCachedPrefix when the sequence cannot be admitted after all. */
  dropCachedPrefix(s: PrefixSequence): void {
    if (s.pages.length === 0) return;
    this.cache.release(s.pages);
    s.pages = [];
    s.numComputed = 0;
    s.cachedBlocks = 0;
  }

  /** Puts every block the sequence has now computed in full into the cache. */
  registerFullBlocks(s: PrefixSequence): void {
    const full = Math.min(Math.floor(s.numComputed / this.blockSize), s.pages.length);
    while (s.cachedBlocks < full) {
      const b = s.cachedBlocks;
      this.cache.insert(this.hashOf(s, b).toString("hex"), s.pages[b]!);
      s.cachedBlocks++;
    }
  }
}
