// The prefix index and the routing rule, without processes: leading-block runs per group from KV events, and the
// choice of the group holding the longest prefix within the load bound.
import { describe, expect, it } from "vitest";
import { MemoryLedger } from "../../services/cluster/memory-ledger.js";
import { choosePrefixAware, PrefixIndex } from "../../services/router/prefix-index.js";

describe("PrefixIndex", () => {
  it("counts leading blocks per group and follows stored/removed events", () => {
    const ix = new PrefixIndex();
    ix.apply("stored", { router: "r1", group: "g1", epoch: 1, hashes: ["a", "b", "c"] });
    ix.apply("stored", { router: "r2", group: "g2", epoch: 4, hashes: ["a", "x"] });
    ix.apply("stored", { router: "r2", group: "g1", epoch: 1, hashes: ["a"] });
    expect(Object.fromEntries(ix.runs(["a", "b", "c", "d"]))).toEqual({ "g1@1": 3, "g2@4": 1 });
    expect(Object.fromEntries(ix.runs(["b", "c"]))).toEqual({ "g1@1": 2 }); // not a leading run of anything, but
    ix.apply("removed", { router: "r1", group: "g1", epoch: 1, hashes: ["b"] });
    expect(Object.fromEntries(ix.runs(["a", "b", "c"]))).toEqual({ "g1@1": 1, "g2@4": 1 });
    ix.apply("removed", { router: "r1", group: "g1", epoch: 1, hashes: ["a"] });
    expect(ix.runs(["a"]).get("g1@1")).toBe(1); // r2 still holds it on g1
    ix.dropGroup("g1@1");
    expect(Object.fromEntries(ix.runs(["a"]))).toEqual({ "g2@4": 1 });
  });

  it("forgets a router that is gone, and lets events remove what a seed from Redis added", () => {
    const ix = new PrefixIndex();
    ix.apply("stored", { router: "r1", group: "g1", epoch: 1, hashes: ["a", "b"] });
    ix.apply("stored", { router: "r2", group: "g1", epoch: 1, hashes: ["a"] });
    expect(ix.holders("a", "g1@1").sort()).toEqual(["r1", "r2"]);
    ix.dropRouter("r1");
    expect(ix.holders("a", "g1@1")).toEqual(["r2"]);
    expect(Object.fromEntries(ix.runs(["a", "b"]))).toEqual({ "g1@1": 1 });
    const dump = new Map<string, Record<string, number>>([
      ["a", { "g1@1": 5, "g2@1": 2 }],
      ["z", { "g3@1": 1 }],
    ]);
    ix.seed(dump);
    expect(ix.holders("a", "g1@1")).toEqual(["r2"]); // known from events: the seed does not add to it
    expect(ix.runs(["a"]).get("g2@1")).toBe(1);
    ix.apply("removed", { router: "r9", group: "g3", epoch: 1, hashes: ["z"] });
    expect(ix.runs(["z"]).size).toBe(0);
  });

  it("the in-memory ledger's prefix index gives the same runs", async () => {
    const l = new MemoryLedger();
    await l.applyKvEvent("stored", "g1@1", ["a", "b", "c"], 1000);
    await l.applyKvEvent("stored", "g2@4", ["a", "x"], 1000);
    expect(await l.prefixLookup(["a", "b", "c", "d"])).toEqual({ "g1@1": 3, "g2@4": 1 });
    await l.applyKvEvent("removed", "g1@1", ["b"], 1000);
    expect(await l.prefixLookup(["a", "b"])).toEqual({ "g1@1": 1, "g2@4": 1 });
  });
});

describe("choosePrefixAware", () => {
  const c = (group: string, load: number) => ({ group, key: `${group}@1`, load });
  it("prefers the longest prefix, then the lighter load", () => {
    const runs = new Map([
      ["a@1", 3],
      ["b@1", 5],
    ]);
    expect(choosePrefixAware([c("a", 1), c("b", 1), c("c", 1)], runs, 1.25)).toBe("b");
    expect(choosePrefixAware([c("a", 0), c("b", 1), c("c", 0)], runs, 1.25)).toBe("a"); // b is over the bound
    expect(choosePrefixAware([c("a", 2), c("b", 1), c("c", 0)], new Map(), 1.25)).toBe("c");
  });

  it("keeps a hot prefix's group within the load bound", () => {
    const runs = new Map([["a@1", 10]]);
    // total load 8 + 1, two groups, factor 1.25: bound ceil(5.625) = 6
    expect(choosePrefixAware([c("a", 5), c("b", 3)], runs, 1.25)).toBe("a");
    expect(choosePrefixAware([c("a", 6), c("b", 2)], runs, 1.25)).toBe("b");
    // Sending a stream of requests: the prefix group never exceeds the bound.
    const loads = { a: 0, b: 0 };
    for (let i = 0; i < 40; i++) {
      const g = choosePrefixAware([c("a", loads.a), c("b", loads.b)], runs, 1.25) as "a" | "b";
      loads[g]++;
      expect(loads.a).toBeLessThanOrEqual(Math.ceil((1.25 * (loads.a + loads.b)) / 2) + 1);
    }
    expect(loads.a).toBeGreaterThan(loads.b);
    expect(loads.b).toBeGreaterThan(10);
  });
});
