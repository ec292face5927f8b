// How the worker sizes its KV pool (services/worker/kv-pool.ts): the flags (--gpu-memory-utilization, --num-pages,
// --kv-cache-mib) and their interplay, splitting an engine pool sized from GPU memory between the router and the
// embedding pages, and a tensor-parallel group agreeing on its smallest rank's pool (real shared-memory group, real
// CPU engines).
import { afterEach, describe, expect, it } from "vitest";
import { type Engine, loadNative, type TpGroup } from "../../native/index.js";
import { ConfigError } from "../../services/common/errors.js";
import { Flags } from "../../services/common/flags.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import {
  agreeGroupPool,
  agreePages,
  DEFAULT_KV_CACHE_MIB,
  describeKvPool,
  type ExtraPages,
  loadedPool,
  planKvPool,
  splitPool,
} from "../../services/worker/kv-pool.js";
import { startWorker } from "../../services/worker/server.js";
import { TINY_SHAPE, tinyModel } from "../native/reference.js";

const config = (...argv: string[]) => workerConfigFromFlags(new Flags(argv, ["asym"]));
/** The worker's embedding pages: a 2048-token prompt at block size 16, or an eighth of the pool. */
const embed: ExtraPages = (n) => Math.min(128, Math.max(1, Math.ceil(n / 8)));
const PAGE = 2 ** 20; // bytes of one page in these plans

describe("--gpu-memory-utilization and the KV pool flags", () => {
  it("defaults to 0.9 with no size given; accepts (0, 1]", () => {
    const d = config();
    expect(d.gpuMemoryUtilization).toBe(0.9);
    expect(d.kvCacheMiB).toBeNull();
    expect(d.numPages).toBe(0);
    expect(config("--gpu-memory-utilization", "0.5").gpuMemoryUtilization).toBe(0.5);
    expect(config("--gpu-memory-utilization=1").gpuMemoryUtilization).toBe(1);
    expect(config("--gpu-memory-utilization", "0.01").gpuMemoryUtilization).toBe(0.01);
  });

  it("refuses values outside (0, 1], naming the flag", () => {
    for (const v of ["0", "-0.1", "1.01", "90", "abc", "NaN"]) {
      expect(() => config("--gpu-memory-utilization", v)).toThrow(ConfigError);
      expect(() => config("--gpu-memory-utilization", v)).toThrow(/--gpu-memory-utilization must be/);
    }
    expect(() => config("--gpu-memory-utilization")).toThrow(/needs a value/);
  });

  it("on a GPU with neither --num-pages nor --kv-cache-mib, the engine sizes the pool from the fraction", () => {
    expect(planKvPool(config(), true, PAGE, embed)).toEqual({ kind: "gpu-memory", fraction: 0.9 });
    expect(planKvPool(config("--gpu-memory-utilization", "0.6"), true, PAGE, embed)).toEqual({
      kind: "gpu-memory",
      fraction: 0.6,
    });
  });

  it("an explicit --kv-cache-mib or --num-pages fixes the pool on a GPU too; --num-pages wins", () => {
    // 64 MiB of 1 MiB pages, plus page 0; embedding pages on top.
    expect(planKvPool(config("--kv-cache-mib", "64"), true, PAGE, embed)).toEqual({
      kind: "fixed",
      routerPages: 65,
      enginePages: 65 + 9,
      source: "--kv-cache-mib 64",
    });
    const both = planKvPool(config("--kv-cache-mib", "64", "--num-pages", "10"), true, PAGE, embed);
    expect(both).toEqual({ kind: "fixed", routerPages: 10, enginePages: 12, source: "--num-pages 10" });
    // The default of 256 MiB stays the CPU's size, even though the flag was not given.
    expect(planKvPool(config(), false, PAGE, embed)).toEqual({
      kind: "fixed",
      routerPages: DEFAULT_KV_CACHE_MIB + 1,
      enginePages: DEFAULT_KV_CACHE_MIB + 1 + 33,
      source: `--kv-cache-mib ${DEFAULT_KV_CACHE_MIB} (default)`,
    });
    expect(planKvPool(config("--gpu-memory-utilization", "0.5"), false, PAGE, embed).kind).toBe("fixed");
  });
});

describe("the worker's pool", () => {
  it("a CPU worker keeps the 256 MiB default and says so; Describe, the engine and the log agree", async () => {
    const w = await startWorker({ ...config("--threads", "1", "--device", "cpu"), port: 0 });
    try {
      const m =
        /^KV pool: (\d+) pages = (\d+) tokens, [\d.]+ GiB \(\+ (\d+) pages for embeddings\): --kv-cache-mib 256 \(default\)$/.exec(
          w.kvPool,
        );
      expect(m, w.kvPool).not.toBeNull();
      const pages = Number(m![1]);
      expect(w.describe.numPages).toBe(pages);
      expect(Number(m![2])).toBe((pages - 1) * 16);
      expect(w.engine.info().numPages).toBe(pages + Number(m![3]));
    } finally {
      await w.close();
    }
  });
});

describe("splitting a pool sized from memory", () => {
  it("gives the router the most pages whose embedding pages still fit (against a brute-force search)", () => {
    for (let total = 3; total <= 3000; total += 7) {
      const { routerPages, enginePages } = splitPool(total, embed);
      expect(enginePages).toBe(routerPages + embed(routerPages));
      expect(enginePages).toBeLessThanOrEqual(total);
      let best = 2;
      for (let n = 2; n <= total; n++) if (n + embed(n) <= total) best = n;
      expect(routerPages).toBe(best);
    }
    expect(splitPool(1000, () => 0)).toEqual({ routerPages: 1000, enginePages: 1000 });
  });

  it("refuses a pool with no room for 2 router pages and their embedding page, saying what to change", () => {
    expect(() => splitPool(2, embed)).toThrow(ConfigError);
    expect(() => splitPool(2, embed)).toThrow(/holds 2 pages; the worker needs at least 3 .*--gpu-memory-utilization/);
    expect(splitPool(3, embed)).toEqual({ routerPages: 2, enginePages: 3 });
  });

  it("a loaded engine's pool: sized from memory it is split and described from info(); given, it is the plan's", () => {
    const sizing = { fraction: 0.9, totalBytes: 80 * 2 ** 30, usedBytes: 2 ** 32, reserveBytes: 2 ** 30, pageBytes: 9 };
    const plan = planKvPool(config(), true, PAGE, embed);
    const p = loadedPool(plan, { weightBytes: 2 ** 32, numPages: 300, kvSizing: sizing }, embed, 16, PAGE);
    expect({ routerPages: p.routerPages, enginePages: p.enginePages }).toEqual(splitPool(300, embed));
    expect(p.line).toMatch(/^KV pool: 266 pages = 4240 tokens, .*: 90% of 80\.0 GiB .*minus 4\.0 GiB in use/);
    const fixed = planKvPool(config("--num-pages", "10"), true, PAGE, embed);
    const q = loadedPool(fixed, { weightBytes: 0, numPages: 12 }, embed, 16, PAGE);
    expect(q).toMatchObject({ routerPages: 10, enginePages: 12 });
    expect(q.line).toMatch(/: --num-pages 10$/);
  });

  it("says how the pool was sized in one line", () => {
    const line = describeKvPool({
      routerPages: 4001,
      enginePages: 4129,
      blockSize: 16,
      pageBytes: 16 * 2 ** 20,
      info: { weightBytes: 3.5 * 2 ** 30, numPages: 4129 },
      sizing: {
        fraction: 0.9,
        totalBytes: 80 * 2 ** 30,
        usedBytes: 4.5 * 2 ** 30,
        reserveBytes: 2 * 2 ** 30,
        pageBytes: 16 * 2 ** 20 + 8192,
      },
    });
    expect(line).toBe(
      "KV pool: 4001 pages = 64000 tokens, 62.5 GiB (+ 128 pages for embeddings): 90% of 80.0 GiB " +
        "(--gpu-memory-utilization 0.9), minus 4.5 GiB in use after loading (weights 3.5 GiB), minus 2.0 GiB " +
        "reserved for workspaces and CUDA graphs",
    );
    const fixed = describeKvPool({
      routerPages: 65,
      enginePages: 65,
      blockSize: 16,
      pageBytes: 2 ** 20,
      info: { weightBytes: 0, numPages: 65 },
      source: "--kv-cache-mib 64",
    });
    expect(fixed).toBe("KV pool: 65 pages = 1024 tokens, 0.1 GiB: --kv-cache-mib 64");
  });
});

describe("a tensor-parallel group agrees on one pool", () => {
  const native = loadNative();
  const open: { close(): void }[] = [];
  afterEach(() => {
    for (const x of open.splice(0)) x.close();
  });
  const shape = TINY_SHAPE;
  function engine(numPages: number): Engine {
    const e = new native.Engine({ shape, numPages, blockSize: 4, maxBatchTokens: 8, threads: 1 });
    for (const [name, t] of tinyModel(shape, 3, 0).tensors) e.setTensor(name, t);
    e.finalize();
    open.push(e);
    return e;
  }

  it("all-gathers every rank's pages and takes the smallest", async () => {
    const fake = (pages: number[]) => ({
      world: pages.length,
      allGather: async () => {
        const out = new Uint8Array(4 * pages.length);
        for (const [r, p] of pages.entries()) new DataView(out.buffer).setUint32(4 * r, p, true);
        return out;
      },
    });
    expect(await agreePages(fake([900, 870, 905, 871]), 900)).toBe(870);
    expect(await agreePages(fake([5000]), 5000)).toBe(5000);
    await expect(agreePages({ world: 2, allGather: async () => new Uint8Array(4) }, 9)).rejects.toThrow(
      /all-gather returned 4 bytes, expected 8/,
    );
  });

  it("the rank with the larger pool lowers its engine to the smaller one and splits it again", async () => {
    const name = `kvpool${process.pid}`;
    const groups = [0, 1].map((rank) => new native.TpGroup({ name, rank, world: 2, timeoutMs: 5000 })) as [
      TpGroup,
      TpGroup,
    ];
    open.push(...groups);
    await Promise.all(groups.map((g) => g.join()));
    const engines = [engine(40), engine(30)] as const;
    const [a, b] = await Promise.all([
      agreeGroupPool(groups[0], engines[0], 40, embed),
      agreeGroupPool(groups[1], engines[1], 30, embed),
    ]);
    expect(a).toEqual(splitPool(30, embed));
    expect(a!.enginePages).toBeLessThanOrEqual(30);
    expect(b).toBeNull(); // already the smallest
    expect(engines[0].info().numPages).toBe(30);
    expect(engines[1].info().numPages).toBe(30);
  });
});
