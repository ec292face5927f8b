// The free list of one group's KV page pool. Page 0 is reserved and never handed out.

/** What the scheduler needs of a page pool: the whole pool (PagePool) or the router's leased share of it. */
export interface PagePoolLike {
  /** Pages free in this pool. */
  readonly free: number;
  /** Pages this pool holds, free or in use. */
  readonly total: number;
  canAllocate(n: number): boolean;
  isFree(page: number): boolean;
  allocate(n: number): number[];
  release(pages: readonly number[]): void;
}

export class PagePool implements PagePoolLike {
  private readonly freeList: number[] = [];
  private readonly freeMask: Uint8Array;

  constructor(numPages: number) {
    this.freeMask = new Uint8Array(numPages);
    // Hand out low page ids first: pop() takes from the end.
    for (let p = numPages - 1; p >= 1; p--) {
      this.freeList.push(p);
      this.freeMask[p] = 1;
    }
  }

  get free(): number {
    return this.freeList.length;
  }

  get total(): number {
    return this.freeMask.length - 1;
  }

  canAllocate(n: number): boolean {
    return n <= this.freeList.length;
  }

  isFree(page: number): boolean {
    return this.freeMask[page] === 1;
  }

  /** Takes n pages; the caller checked canAllocate(n). */
  allocate(n: number): number[] {
    if (n > this.freeList.length) throw new RangeError(`asked for ${n} pages, ${this.freeList.length} free`);
    const out: number[] = [];
    for (let i = 0; i < n; i++) {
      const p = this.freeList.pop()!;
      this.freeMask[p] = 0;
      out.push(p);
    }
    return out;
  }

  release(pages: readonly number[]): void {
    for (const p of pages) {
      if (p <= 0 || p >= this.freeMask.length) throw new RangeError(`page ${p} is outside the pool`);
      if (this.freeMask[p] === 1) throw new Error(`page ${p} released twice`);
      this.freeMask[p] = 1;
      this.freeList.push(p);
    }
  }
}
