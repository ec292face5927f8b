// Requests held while no worker group is in service (--group-wait-ms): each with its own deadline, released in
// arrival order when a group comes (back), or expired one by one.

export class Holding<T> {
  private readonly items = new Map<T, NodeJS.Timeout>();

  constructor(private readonly ms: number) {}

  get size(): number {
    return this.items.size;
  }

  /**
   * Holds `item` until takeAll() or release(); after the wait, `expire(item)` runs and it is no longer held. Holding
   * an item again starts its wait again.
   */
  hold(item: T, expire: (item: T) => void): void {
    this.release(item);
    const timer = setTimeout(() => {
      this.items.delete(item);
      expire(item);
    }, this.ms);
    timer.unref();
    this.items.set(item, timer);
  }

  /** Stops holding `item` (its deadline is dropped); false when it was not held. */
  release(item: T): boolean {
    const timer = this.items.get(item);
    if (timer === undefined) return false;
    clearTimeout(timer);
    this.items.delete(item);
    return true;
  }

  /** Every held item in arrival order; none is held afterwards. */
  takeAll(): T[] {
    const all = [...this.items.keys()];
    for (const timer of this.items.values()) clearTimeout(timer);
    this.items.clear();
    return all;
  }
}
