// Prefix caching without processes: the block hash is the documented function (pinned values, computed
// independently with Python's hashlib), the caching pool counts references and evicts least-recently-used, and
// the scheduler, driven against a simulated worker whose KV pages hold what was written to them, shares pages
// only where their content is right and gives every sequence the tokens it gets without caching.
import { describe, expect, it } from "vitest";
import { PagePool } from "../../services/router/pages.js";
import { blockHash, chainHashes, PrefixCachingPool, rootHash } from "../../services/router/prefix-cache.js";
import { createScheduler, type Scheduler, type StepPlanData } from "../../services/router/scheduler.js";

describe("block hash", () => {
  it("is the documented chained SHA-256 (pinned values)", () => {
    const root = rootHash("tinyllama-brown", 16);
    expect(root.toString("hex")).toBe("ca30665df6ab788e1addb7fbc4ce731b");
    const b1 = blockHash(root, [1, 2, 3, 4]);
    expect(b1.toString("hex")).toBe("9ecce209e9fbdf8595286dfd73646cc6");
    expect(blockHash(b1, [5, 6, 7, 8]).toString("hex")).toBe("4c6785d40c2d128696ea5b4fd49189e1");
    expect(chainHashes(root, [1, 2, 3, 4, 5, 6, 7, 8, 9], 4, 2)).toEqual([
      "9ecce209e9fbdf8595286dfd73646cc6",
      "4c6785d40c2d128696ea5b4fd49189e1",
    ]);
    expect(rootHash("other", 16).equals(root)).toBe(false);
    expect(rootHash("tinyllama-brown", 32).equals(root)).toBe(false);
  });
});

describe("PrefixCachingPool", () => {
  it("shares referenced blocks, keeps unreferenced ones evictable, evicts the least recently released first", () => {
    const pool = new PrefixCachingPool(new PagePool(5)); // pages 1..4
    const [a, b] = pool.allocate(2) as [number, number];
    expect(pool.insert("A", a)).toBe(true);
    expect(pool.insert("B", b)).toBe(true);
    expect(pool.insert("A", 3)).toBe(false); // already cached under another page
    expect(pool.free).toBe(2);
    expect(pool.acquire(["A"])).toEqual([a]);
    expect(pool.refCount(a)).toBe(2);
    pool.release([a, a, b]); // both holders of A, the one of B
    expect(pool.refCount(a)).toBe(0);
    expect(pool.free).toBe(4); // 2 never used + 2 evictable
    expect(pool.match(["A", "B", "C"])).toBe(2);
    // Never-used pages go first, then A (released before B).
    const got = pool.allocate(3);
    expect(got).toContain(a);
    expect(got).not.toContain(b);
    expect(pool.match(["A"])).toBe(0);
    expect(pool.match(["B"])).toBe(1);
    expect(pool.stats()).toMatchObject({ cachedBlocks: 1, evictable: 1, evictions: 1 });
    expect(pool.evictDownTo(0)).toBe(1);
    expect(pool.stats().cachedBlocks).toBe(0);
    expect(() => pool.release([a, a])).toThrow(); // plain page released twice
  });
});

/** A deterministic "next token" of a prefix (stands in for greedy decoding). */
function nextToken(prefix: readonly number[]): number {
  let h = 2166136261;
  for (const t of prefix) h = Math.imul(h ^ t, 16777619) >>> 0;
  return h % 1000;
}

/** A worker whose KV pages really hold something: slot content = the prefix up to that position. */
class KvSimWorker {
  readonly kv = new Map<number, string[]>();
  readonly seqs = new Map<number, { tokens: number[]; computed: number; pages: number[]; gen: number; max: number }>();
  computedTokens = 0;
  constructor(private readonly bs: number) {}

  run(plan: StepPlanData): { seqId: number; token: number; finished: boolean }[][] {
    for (const id of plan.drop) this.seqs.delete(id);
    for (const n of plan.newSequences) {
      expect(n.numComputed % this.bs).toBe(0);
      expect(n.numComputed).toBeLessThan(n.tokens.length);
      this.seqs.set(n.seqId, {
        tokens: [...n.tokens],
        computed: n.numComputed,
        pages: [],
        gen: n.numGenerated,
        max: n.maxNewTokens,
      });
    }
    for (const s of plan.scheduled) this.seqs.get(s.seqId)!.pages.push(...s.newPages);
    const results: { seqId: number; token: number; finished: boolean }[][] = [];
    const counts = plan.scheduled.map((s) => s.numTokens);
    for (let sub = 0; sub < plan.decodeSteps; sub++) {
      const out: { seqId: number; token: number; finished: boolean }[] = [];
      for (const [i, sch] of plan.scheduled.entries()) {
        const s = this.seqs.get(sch.seqId);
        const n = counts[i]!;
        if (!s || n === 0 || s.computed + n > s.pages.length * this.bs) continue;
        // Attention reads every earlier position: the page content must be this sequence's own prefix.
        for (let j = 0; j < s.computed; j++) {
          const slot = this.kv.get(s.pages[Math.floor(j / this.bs)]!)?.[j % this.bs];
          expect(slot, `seq ${sch.seqId} position ${j}`).toBe(s.tokens.slice(0, j + 1).join(","));
        }
        for (let j = s.computed; j < s.computed + n; j++) {
          const page = s.pages[Math.floor(j / this.bs)]!;
          const slots = this.kv.get(page) ?? [];
          slots[j % this.bs] = s.tokens.slice(0, j + 1).join(",");
          this.kv.set(page, slots);
        }
        s.computed += n;
        this.computedTokens += n;
        if (s.computed === s.tokens.length) {
          const t = nextToken(s.tokens);
          s.tokens.push(t);
          s.gen++;
          const finished = s.gen >= s.max;
          if (finished) this.seqs.delete(sch.seqId);
          out.push({ seqId: sch.seqId, token: t, finished });
        }
      }
      results.push(out);
      for (const [i, sch] of plan.scheduled.entries()) counts[i] = this.seqs.has(sch.seqId) ? 1 : 0;
    }
    return results;
  }
}

function drive(s: Scheduler, w: KvSimWorker, out: Map<number, number[]>, steps = 10_000): void {
  for (let i = 0; i < steps && s.hasWork(); i++) {
    const plan = s.schedule();
    if (!plan) break;
    for (const [sub, res] of w.run(plan).entries()) {
      if (sub === 0) {
        const sampled = new Map(res.map((r) => [r.seqId, r.token]));
        for (const sch of plan.scheduled) s.onComputed(sch.seqId, sch.numTokens, sampled.get(sch.seqId));
      } else for (const r of res) s.onComputed(r.seqId, 1, r.token);
      for (const r of res) {
        out.get(r.seqId)?.push(r.token);
        if (r.finished) s.finish(r.seqId, true);
      }
      expect(s.checkInvariants()).toBeNull();
    }
  }
}

describe("scheduler with prefix caching", () => {
  const bs = 4;
  const system = Array.from({ length: 21 }, (_, i) => 100 + i); // 5 full blocks + 1 token
  const prompts = Array.from({ length: 12 }, (_, i) => [
    ...system,
    ...Array.from({ length: 1 + (i % 7) }, (_, j) => 500 + i * 10 + j),
  ]);

  function run(caching: boolean, numPages: number, concurrent: boolean) {
    let queried = 0;
    let hits = 0;
    const base = new PagePool(numPages);
    const pool = caching ? new PrefixCachingPool(base) : base;
    const s = createScheduler({
      numPages,
      blockSize: bs,
      maxBatchTokens: 24,
      maxRunning: 4,
      decodeSteps: 3,
      pool,
      ...(caching ? { prefixRoot: rootHash("m", bs) } : {}),
      onPrefixLookup: (q, h) => {
        queried += q;
        hits += h;
      },
    });
    const w = new KvSimWorker(bs);
    const out = new Map<number, number[]>();
    prompts.forEach((p, i) => {
      out.set(i + 1, []);
      s.add({ id: i + 1, promptTokens: p, maxNewTokens: 9 });
      if (!concurrent) drive(s, w, out);
    });
    drive(s, w, out);
    expect(s.hasWork()).toBe(false);
    return { out, queried, hits, computed: w.computedTokens, free: s.stats().pagesFree };
  }

  for (const concurrent of [false, true]) {
    it(`gives the uncached tokens, computes less, and frees everything (${concurrent ? "concurrent" : "one by one"})`, () => {
      const off = run(false, 64, concurrent);
      const on = run(true, 64, concurrent);
      expect(on.out).toEqual(off.out);
      expect(off.hits).toBe(0);
      expect(on.hits).toBeGreaterThanOrEqual(concurrent ? 5 * bs * 4 : 5 * bs * 11);
      expect(on.computed).toBeLessThan(off.computed);
      expect(on.free).toBe(63);
    });
  }

  it("under page pressure evicts cached blocks and preempts without changing any tokens", () => {
    const off = run(false, 14, true);
    const on = run(true, 14, true);
    expect(on.out).toEqual(off.out);
    expect(on.free).toBe(13);
  });
});
