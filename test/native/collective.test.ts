// Shared-memory collectives of a TP group (native TpGroup): results, and bounded failure. Two ranks live in this
// process (each collective blocks a libuv thread), or one rank in a child process that the test kills.
import { type ChildProcess, spawn } from "node:child_process";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadNative, type TpGroup } from "../../native/index.js";
import { packageRoot } from "../../services/common/paths.js";
import { TINY_SHAPE } from "./reference.js";

const native = loadNative();
let seq = 0;
const uniqueName = () => `test${process.pid}-${++seq}`;
const opened: TpGroup[] = [];

async function pair(timeoutMs = 5000, slotBytes?: number): Promise<[TpGroup, TpGroup]> {
  const name = uniqueName();
  const g = [0, 1].map((rank) => new native.TpGroup({ name, rank, world: 2, timeoutMs, slotBytes })) as [
    TpGroup,
    TpGroup,
  ];
  opened.push(...g);
  await Promise.all(g.map((x) => x.join()));
  return g;
}

afterEach(() => {
  for (const g of opened.splice(0)) g.close();
});

const codeOf = (p: Promise<unknown>) =>
  p.then(
    () => "resolved",
    (e: { code?: string }) => e.code,
  );

describe("shared-memory collectives", () => {
  it("all-reduce sums in rank order, also past one slot (several rounds)", async () => {
    const [a, b] = await pair(5000, 4096); // 1024 floats per round
    const n = 3000;
    const x = Float32Array.from({ length: n }, (_, i) => i * 0.5);
    const y = Float32Array.from({ length: n }, (_, i) => 1 - i);
    const [rx, ry] = await Promise.all([a.allReduceSum(x), b.allReduceSum(y)]);
    expect(rx).toBe(x); // in place
    for (let i = 0; i < n; i++) expect(rx[i]).toBe(Math.fround(i * 0.5) + Math.fround(1 - i));
    expect(Buffer.from(ry.buffer).equals(Buffer.from(rx.buffer))).toBe(true);
  });

  it("all-gather concatenates by rank; broadcast copies the root's bytes", async () => {
    const [a, b] = await pair();
    const [ga, gb] = await Promise.all([a.allGather(Uint8Array.of(1, 2, 3)), b.allGather(Uint8Array.of(7, 8, 9))]);
    expect([...ga]).toEqual([1, 2, 3, 7, 8, 9]);
    expect([...gb]).toEqual([1, 2, 3, 7, 8, 9]);
    const big = Uint8Array.from({ length: 5 << 20 }, (_, i) => i % 251);
    const into = new Uint8Array(big.length);
    await Promise.all([a.broadcast(big, 0), b.broadcast(into, 0)]);
    expect(Buffer.from(into).equals(Buffer.from(big))).toBe(true);
  });

  it("a rank that never arrives fails the collective after timeoutMs, and the group stays failed", async () => {
    const [a, b] = await pair(300);
    const t0 = performance.now();
    expect(await codeOf(a.allReduceSum(new Float32Array(4)))).toBe("NATIVE_TP_TIMEOUT");
    expect(performance.now() - t0).toBeGreaterThanOrEqual(290);
    expect(a.failure()).toMatch(/rank 1 did not reach collective/);
    expect(await codeOf(b.allReduceSum(new Float32Array(4)))).toBe("NATIVE_TP_FAILED");
    expect(await codeOf(a.broadcast(new Uint8Array(4), 0))).toBe("NATIVE_TP_FAILED");
  });

  it("abort() fails a peer that is waiting, without waiting for its timeout", async () => {
    const [a, b] = await pair(60_000);
    const waiting = codeOf(a.broadcast(new Uint8Array(8), 1, 0)); // waits for rank 1 as long as it lives
    b.abort("test abort");
    expect(await waiting).toBe("NATIVE_TP_FAILED");
    expect(a.failure()).toMatch(/rank 1: test abort/);
  });

  it("a peer process that dies fails the waiting rank within a fraction of a second", async () => {
    const name = uniqueName();
    const g = new native.TpGroup({ name, rank: 0, world: 2, timeoutMs: 60_000, joinTimeoutMs: 30_000 });
    opened.push(g);
    const addon = join(packageRoot(), "native", "build", "Release", "tpserve_native.node");
    const script = `const n = require(${JSON.stringify(addon)});
      const g = new n.TpGroup({ name: ${JSON.stringify(name)}, rank: 1, world: 2 });
      g.join().then(() => console.log("joined")); setInterval(() => {}, 1000);`;
    const child: ChildProcess = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "inherit"] });
    try {
      await g.join();
      const waiting = codeOf(g.allReduceSum(new Float32Array(16)));
      child.kill("SIGKILL");
      const t0 = performance.now();
      expect(await waiting).toBe("NATIVE_TP_PEER_DEAD");
      expect(performance.now() - t0).toBeLessThan(2000);
      expect(g.failure()).toMatch(new RegExp(`rank 1 \\(pid ${child.pid}\\) exited`));
    } finally {
      child.kill("SIGKILL");
    }
  });

  it("rejects bad options with codes", () => {
    const bad = (o: object) => {
      try {
        new native.TpGroup({ name: "x", rank: 0, world: 2, ...o });
        return "ok";
      } catch (e) {
        return (e as { code?: string }).code;
      }
    };
    expect(bad({ name: "a/b" })).toBe("NATIVE_TP_CONFIG");
    expect(bad({ rank: 2 })).toBe("NATIVE_INVALID_ARG");
  });
});

describe("engines in a TP group", () => {
  const shape = { ...TINY_SHAPE, vocabSize: 96, numLayers: 1 };
  const opts = { shape, numPages: 8, blockSize: 4, maxBatchTokens: 16, threads: 1 };
  const engineError = (o: object) => {
    try {
      new native.Engine({ ...opts, ...o });
      return "ok";
    } catch (e) {
      return `${(e as { code?: string }).code}: ${(e as Error).message}`;
    }
  };

  // On a machine with GPUs this engine would set up the device collectives and wait for rank 1 (bench/gpu-tp.ts
  // covers that case on the GPU machine); here it must fail cleanly with a code.
  it.skipIf(native.buildInfo().cudaDevices > 0)(
    "a GPU rank of a group fails with a code where there is no GPU",
    async () => {
      const [a] = await pair();
      expect(engineError({ device: "cuda", group: a })).toMatch(/^NATIVE_NO_CUDA: /);
    },
  );

  it("refuses a split of the heads that does not work, and holds the shard shapes", async () => {
    const [a] = await pair();
    expect(engineError({ shape: { ...shape, numHeads: 6, numKvHeads: 3 }, group: a })).toMatch(
      /^NATIVE_TP_CONFIG: numKvHeads 3 does not split over tp 2/,
    );
    const e = new native.Engine({ ...opts, group: a });
    // Rank 0 of 2 holds 2 of the 4 query heads: q is (2*16, 64); the whole q is refused.
    expect(() =>
      e.setTensor("layers.0.q", { kind: "dense", dtype: "f32", shape: [64, 64], data: new Uint8Array(64 * 64 * 4) }),
    ).toThrow(/expected \[32, 64\]/);
    // An act-order shard's perm may pick from the whole input (permCols = cols x tp) only in o and down.
    const int4 = (rows: number, cols: number, permCols: number) => ({
      kind: "int4" as const,
      rows,
      cols,
      groupSize: 16,
      qweight: new Uint8Array((rows * cols) / 2),
      scales: new Float32Array((rows * cols) / 16),
      perm: Int32Array.from({ length: cols }, (_, i) => 2 * i),
      permCols,
    });
    expect(() => e.setTensor("layers.0.o", int4(64, 32, 64))).not.toThrow();
    expect(() => e.setTensor("layers.0.o", int4(64, 32, 96))).toThrow(/permCols 96 is only for o and down at tp > 1/);
    expect(() => e.setTensor("layers.0.q", int4(32, 64, 128))).toThrow(/permCols 128 is only for o and down/);
    expect(() => e.setTensor("layers.0.o", { ...int4(64, 32, 64), perm: new Int32Array(32).fill(3) })).toThrow(
      /perm must hold distinct input columns in 0\.\.63/,
    );
    expect(e.info().tpSize).toBe(2);
    e.close();
  });

  /** Deterministic weights of the whole model, and rank r's slice of each (the rules of services/worker/shard.ts). */
  function weights(world: number, rank: number): Map<string, { shape: number[]; v: Float32Array }> {
    const m = new Map<string, { shape: number[]; v: Float32Array }>();
    let s = 1;
    const rnd = () => {
      s = (s * 1103515245 + 12345) % 2 ** 31;
      return (s / 2 ** 31 - 0.5) * 0.2;
    };
    const H = 64,
      hd = 16,
      I = 96,
      V = 96;
    const cut = (shape: [number, number], dim: 0 | 1, per: number, at: number) => {
      const [r, c] = shape;
      const v = Float32Array.from({ length: r * c }, rnd);
      const rows = dim === 0 ? per : r,
        cols = dim === 1 ? per : c;
      const out = new Float32Array(rows * cols);
      for (let i = 0; i < rows; i++)
        for (let j = 0; j < cols; j++) out[i * cols + j] = v[(dim === 0 ? at + i : i) * c + (dim === 1 ? at + j : j)]!;
      return { shape: [rows, cols], v: out };
    };
    const kvHead = world > 2 ? Math.floor((rank * 2) / world) : rank * (2 / world);
    const kvPer = (2 / Math.min(world, 2)) * hd;
    m.set("embed", cut([V, H], 0, V / world, (rank * V) / world));
    m.set("final_norm", { shape: [H], v: new Float32Array(H).fill(1) });
    m.set("layers.0.attn_norm", { shape: [H], v: new Float32Array(H).fill(1) });
    m.set("layers.0.mlp_norm", { shape: [H], v: new Float32Array(H).fill(1) });
    m.set("layers.0.q", cut([4 * hd, H], 0, (4 * hd) / world, (rank * 4 * hd) / world));
    m.set("layers.0.k", cut([2 * hd, H], 0, kvPer, kvHead * hd));
    m.set("layers.0.v", cut([2 * hd, H], 0, kvPer, kvHead * hd));
    m.set("layers.0.o", cut([H, 4 * hd], 1, (4 * hd) / world, (rank * 4 * hd) / world));
    m.set("layers.0.gate", cut([I, H], 0, I / world, (rank * I) / world));
    m.set("layers.0.up", cut([I, H], 0, I / world, (rank * I) / world));
    m.set("layers.0.down", cut([H, I], 1, I / world, (rank * I) / world));
    return m;
  }
  function build(world: number, rank: number, group?: TpGroup, extra: { pollSteps?: boolean } = {}) {
    const e = new native.Engine({ ...opts, ...extra, ...(group ? { group } : {}) });
    for (const [name, t] of weights(world, rank)) {
      e.setTensor(name, { kind: "dense", dtype: "f32", shape: t.shape, data: new Uint8Array(t.v.buffer) });
    }
    e.finalize();
    return e;
  }
  const step = {
    tokens: Int32Array.of(5, 50, 95, 7),
    seqLens: Int32Array.of(4),
    contextLens: Int32Array.of(4),
    blockTables: Int32Array.of(1, 0),
    maxBlocksPerSeq: 2,
    logits: "all" as const,
  };

  it("two ranks in one process: the leader's forward matches TP=1; the follower refuses forward()", async () => {
    const [a, b] = await pair();
    const whole = build(1, 0);
    const expected = await whole.forward(step);
    whole.close();
    const leader = build(2, 0, a);
    const follower = build(2, 1, b);
    expect(() => follower.forwardSync(step)).toThrow(/follow\(\)/);
    const followed = follower.follow!();
    const got = await leader.forward(step);
    expect(await followed).toBe(true);
    expect(got.length).toBe(expected.length);
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - expected[i]!));
    expect(err).toBeLessThan(1e-5);
    const stopped = follower.follow!();
    leader.close(); // tells the follower the group is done
    expect(await stopped).toBe(false);
    follower.close();
  });

  it("followLoop runs the leader's steps back to back, ends at the leader's close, and fails with its group", async () => {
    const [a, b] = await pair();
    const leader = build(2, 0, a, { pollSteps: true });
    const follower = build(2, 1, b);
    const looping = follower.followLoop!();
    const first = await leader.forward(step);
    for (let i = 0; i < 2; i++) expect(Array.from(await leader.forward(step))).toEqual(Array.from(first));
    leader.close();
    expect(await looping).toBe(3);
    follower.close();

    const [c, d] = await pair();
    const leader2 = build(2, 0, c);
    const follower2 = build(2, 1, d);
    const looping2 = follower2.followLoop!();
    await leader2.forward(step);
    follower2.close(); // while it waits for the next step: the loop ends with the group's failure
    expect(await looping2.then(String, (e: { code?: string }) => e.code)).toMatch(/^NATIVE_TP_/);
    leader2.close();
  });

  it("a CPU group takes decode steps that say they continue, and argmax steps: TP=1's logits and ids", async () => {
    // After the 4-token prompt, six decode steps of one sequence with varied tokens, each saying that the next one
    // continues (only a GPU leader decodes ahead and flags it in the plan; a CPU group runs them as plain steps):
    // logits from forward(), then ids from forwardArgmax(), then an all-logits pass over the prompt again.
    const tokens = [11, 23, 42, 57, 68, 90];
    const decodeStep = (t: number) => ({
      tokens: Int32Array.of(tokens[t]!),
      seqLens: Int32Array.of(1),
      contextLens: Int32Array.of(5 + t),
      blockTables: Int32Array.of(1, 2, 3),
      maxBlocksPerSeq: 3,
      logits: "last" as const,
      continues: t < tokens.length - 1,
    });
    const run = async (e: ReturnType<typeof build>) => {
      const logits: Float32Array[] = [await e.forward(step)];
      for (let t = 0; t < tokens.length; t++) logits.push(await e.forward(decodeStep(t)));
      const ids: number[] = [];
      for (let t = 0; t < tokens.length; t++) ids.push(...(await e.forwardArgmax(decodeStep(t))));
      logits.push(await e.forward(step));
      return { logits, ids };
    };
    const whole = build(1, 0);
    const expected = await run(whole);
    whole.close();
    const [a, b] = await pair();
    const leader = build(2, 0, a, { pollSteps: true });
    const follower = build(2, 1, b);
    const looping = follower.followLoop!();
    const got = await run(leader);
    leader.close();
    expect(await looping).toBe(2 + 2 * tokens.length);
    follower.close();
    expect(got.ids).toEqual(expected.ids);
    let err = 0;
    for (const [i, l] of got.logits.entries())
      for (let j = 0; j < l.length; j++) err = Math.max(err, Math.abs(l[j]! - expected.logits[i]![j]!));
    expect(err).toBeLessThan(1e-5);
    // The steps differ from each other (so equal logits mean the plans carried each step).
    expect(expected.logits[1]!.some((v, j) => Math.abs(v - expected.logits[2]![j]!) > 1e-3)).toBe(true);
  });

  it("a leader with polled steps: same logits, and a step that fails inside the group rejects with a code", async () => {
    const [a, b] = await pair();
    const plain = build(1, 0);
    const expected = await plain.forward(step);
    plain.close();
    const leader = build(2, 0, a, { pollSteps: true });
    const follower = build(2, 1, b);
    const followed = follower.follow!();
    const got = await leader.forward(step);
    expect(await followed).toBe(true);
    let err = 0;
    for (let i = 0; i < got.length; i++) err = Math.max(err, Math.abs(got[i]! - expected[i]!));
    expect(err).toBeLessThan(1e-5);
    follower.close(); // fails the group: the leader's next step fails inside its broadcast
    const code = await leader.forward(step).then(
      () => "no error",
      (e: { code?: string }) => e.code,
    );
    expect(code).toMatch(/^NATIVE_TP_/);
    leader.close();
  });
});
