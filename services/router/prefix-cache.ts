// Prefix caching inside a group. A full KV block is named by a chained hash (blockHash below: a fixed function,
// the same in every process and release; docs/prefix-caching.md). A cached block's page is shared by every sequence
// whose tokens start with the same blocks, reference-counted; a block nobody references stays cached and is
// evicted least-recently-used when the pool needs a page. PrefixCachingPool wraps the scheduler's page pool (the
// whole pool, or the router's leased share of it) and is itself a PagePoolLike.
import { createHash } from "node:crypto";
import type { PagePoolLike } from "./pages.js";

const HASH_BYTES = 16;

/**
 * The root of every chain: SHA-256 of "tpserve-prefix-v1", NUL, the model name, NUL, the block size in decimal,
 * first 16 bytes. Extra keys (model, block size) go here so that different models never share blocks.
 */
export function rootHash(model: string, blockSize: number): Buffer {
  return createHash("sha256")
    .update(`tpserve-prefix-v1\0${model}\0${blockSize}`, "utf8")
    .digest()
    .subarray(0, HASH_BYTES);
}

/**
 * The hash of one full block: SHA-256 of the parent block's hash (16 bytes; the root for the first block)
 * followed by the block's token ids as little-endian uint32, first 16 bytes.
 */
export function blockHash(parent: Buffer, tokens: readonly number[]): Buffer {
  const body = Buffer.allocUnsafe(tokens.length * 4);
  for (let i = 0; i < tokens.length; i++) body.writeUInt32LE(tokens[i]!, i * 4);
  return createHash("sha256").update(parent).update(body).digest().subarray(0, HASH_BYTES);
}

/** The chained hashes of the first `numBlocks` full blocks of `tokens`, as hex strings. */
export function chainHashes(root: Buffer, tokens: readonly number[], blockSize: number, numBlocks: number): string[] {
  const out: string[] = [];
  let parent = root;
  for (let b = 0; b < numBlocks; b++) {
    parent = blockHash(parent, tokens.slice(b * blockSize, (b + 1) * blockSize));
    out.push(parent.toString("hex"));
  }
  return out;
}

interface CachedBlock {
  hash: string;
  page: number;
  refs: number;
}

export interface PrefixCacheStats {
  /** Blocks in the cache (referenced or not). */
  cachedBlocks: number;
  /** Cached blocks no sequence references (evictable). */
  evictable: number;
  evictions: number;
}

export class PrefixCachingPool implements PagePoolLike {
  private readonly byHash = new Map<string, CachedBlock>();
  private readonly byPage = new Map<number, CachedBlock>();
  /** Unreferenced cached blocks, least recently used first (Map keeps insertion order). */
  private readonly lru = new Map<number, CachedBlock>();
  private evictions = 0;
  /** KV events: a block entered the cache, or left it (evicted). */
  onStored: ((hash: string) => void) | undefined;
  onRemoved: ((hash: string) => void) | undefined;

  constructor(readonly inner: PagePoolLike) {}

  /** Free pages plus cached blocks that nobody references (they are evicted on demand). */
  get free(): number {
    return this.inner.free + this.lru.size;
  }

  get total(): number {
    return this.inner.total;
  }

  canAllocate(n: number): boolean {
    return n <= this.free;
  }

  isFree(page: number): boolean {
    return this.inner.isFree(page) || this.lru.has(page);
  }

  /** References held on a cached page (0 for a page that is not a cached block). */
  refCount(page: number): number {
    return this.byPage.get(page)?.refs ?? 0;
  }

  allocate(n: number): number[] {
    const fromInner = Math.min(n, this.inner.free);
    const out = this.inner.allocate(fromInner);
    while (out.length < n) {
      const victim = this.lru.values().next().value as CachedBlock | undefined;
      if (!victim) throw new RangeError(`asked for ${n} pages, ${out.length} could be found`);
      this.lru.delete(victim.page);
      this.byHash.delete(victim.hash);
      this.byPage.delete(victim.page);
      this.evictions++;
      this.onRemoved?.(victim.hash);
      out.push(victim.page);
    }
    return out;
  }

  /** Drops one reference per page: cached blocks stay cached (evictable at 0), other pages go back to the pool. */
  release(pages: readonly number[]): void {
    const plain: number[] = [];
    for (const p of pages) {
      const b = this.byPage.get(p);
      if (!b) {
        plain.push(p);
        continue;
      }
      if (b.refs <= 0) throw new Error(`cached page ${p} released more often than referenced`);
      if (--b.refs === 0) this.lru.set(p, b);
    }
    this.inner.release(plain);
  }

  /** How many leading hashes are cached, without touching them. */
  match(hashes: readonly string[]): number {
    let n = 0;
    while (n < hashes.length && this.byHash.has(hashes[n]!)) n++;
    return n;
  }

  /** Takes a reference on the cached blocks of `hashes` (all cached: see match) and returns their pages. */
  acquire(hashes: readonly string[]): number[] {
    return hashes.map((h) => {
      const b = this.byHash.get(h);
      if (!b) throw new Error(`block ${h} is not cached`);
      if (b.refs++ === 0) this.lru.delete(b.page);
      return b.page;
    });
  }

  /**
   * Registers the page of a block that a sequence (holding it, one reference) has just computed in full. When the
   * hash is already cached under another page, the page stays private to the sequence. Returns whether it was added.
   */
  insert(hash: string, page: number): boolean {
    if (this.byHash.has(hash) || this.byPage.has(page)) return false;
    const b = { hash, page, refs: 1 };
    this.byHash.set(hash, b);
    this.byPage.set(page, b);
    this.onStored?.(hash);
    return true;
  }

  /**
   * Evicts unreferenced cached blocks, least recently used first, until at most `keep` remain; their pages go back
   * to the inner pool (e.g. before an idle router hands pages back to the ledger). Returns the count evicted.
   */
  evictDownTo(keep: number): number {
    const pages: number[] = [];
    for (const b of this.lru.values()) {
      if (this.lru.size - pages.length <= keep) break;
      this.byHash.delete(b.hash);
      this.byPage.delete(b.page);
      this.onRemoved?.(b.hash);
      pages.push(b.page);
    }
    for (const p of pages) this.lru.delete(p);
    this.evictions += pages.length;
    this.inner.release(pages);
    return pages.length;
  }

  /** Hashes of every cached block (for the cluster prefix index). */
  cachedHashes(): string[] {
    return [...this.byHash.keys()];
  }

  stats(): PrefixCacheStats {
    return { cachedBlocks: this.byHash.size, evictable: this.lru.size, evictions: this.evictions };
  }
}
