// The engine's KV pool size: numPages given (CPU and GPU), numPages 0 sized from gpuMemoryUtilization at finalize
// (GPU only; the CPU engine refuses it), info().numPages, and limitPages, which only lowers the pages validation
// accepts (a tensor-parallel group agreeing on its smallest rank's pool).
import { describe, expect, it } from "vitest";
import { type Engine, type ForwardBatch, loadNative, type ModelShape } from "../../native/index.js";
import { TINY_SHAPE, tinyModel } from "./reference.js";

const native = loadNative();
const build = native.buildInfo();
// Head size 64: the GPU attention kernels take 64 and 128.
const shape: ModelShape = { ...TINY_SHAPE, hiddenSize: 256, intermediateSize: 512, headDim: 64 };
const BS = 4;

function loaded(e: Engine): Engine {
  for (const [name, t] of tinyModel(shape, 5, 0).tensors) e.setTensor(name, t);
  e.finalize();
  return e;
}

/** One sequence of `ctx` tokens on `pages`. */
function batch(ctx: number, pages: number[]): ForwardBatch {
  return {
    tokens: Int32Array.from({ length: ctx }, (_, i) => 1 + (i % 90)),
    seqLens: Int32Array.of(ctx),
    contextLens: Int32Array.of(ctx),
    blockTables: Int32Array.from(pages),
    maxBlocksPerSeq: pages.length,
    logits: "last",
  };
}

function errorOf(f: () => unknown): { code?: string; message?: string } {
  try {
    f();
  } catch (e) {
    return e as { code?: string; message?: string };
  }
  return { code: "no error" };
}

describe("KV pool size", () => {
  it("the CPU engine refuses numPages 0 with a message naming what it takes instead", () => {
    const err = errorOf(
      () => new native.Engine({ shape, numPages: 0, gpuMemoryUtilization: 0.9, blockSize: BS, maxBatchTokens: 8 }),
    );
    expect(err.code).toBe("NATIVE_INVALID_ARG");
    expect(err.message).toMatch(/numPages 0 .* needs a CUDA device; the CPU engine takes numPages >= 2/);
    expect(errorOf(() => new native.Engine({ shape, numPages: 1, blockSize: BS, maxBatchTokens: 8 })).code).toBe(
      "NATIVE_INVALID_ARG",
    );
  });

  it("gpuMemoryUtilization must be in (0, 1] and goes only with numPages 0", () => {
    // The options are checked before the device is opened: this holds with or without a GPU (or a CUDA build).
    const gpu = (f: number) => () =>
      new native.Engine({
        shape,
        numPages: 0,
        gpuMemoryUtilization: f,
        blockSize: BS,
        maxBatchTokens: 8,
        device: "cuda",
      });
    for (const f of [0, -0.5, 1.5, Number.NaN]) {
      const err = errorOf(gpu(f));
      expect(err.code).toBe("NATIVE_INVALID_ARG");
      expect(err.message).toMatch(/gpuMemoryUtilization, which must be in \(0, 1\]/);
    }
    const noFraction = errorOf(
      () => new native.Engine({ shape, numPages: 0, blockSize: BS, maxBatchTokens: 8, device: "cuda" }),
    );
    expect(noFraction.code).toBe("NATIVE_INVALID_ARG");
    if (build.cudaDevices === 0) expect(errorOf(gpu(1)).code).toBe("NATIVE_NO_CUDA"); // valid: on to the device
    const err = errorOf(
      () => new native.Engine({ shape, numPages: 8, gpuMemoryUtilization: 0.5, blockSize: BS, maxBatchTokens: 8 }),
    );
    expect(err.code).toBe("NATIVE_INVALID_ARG");
    expect(err.message).toMatch(/gpuMemoryUtilization goes with numPages 0/);
  });

  it("info().numPages is the given pool; limitPages lowers what validation accepts, never raises it", async () => {
    const e = loaded(new native.Engine({ shape, numPages: 10, blockSize: BS, maxBatchTokens: 16, threads: 1 }));
    expect(e.info().numPages).toBe(10);
    expect(e.info().deviceMemory).toBeUndefined();
    const onPage9 = batch(3, [9]);
    const before = await e.forward(onPage9);
    expect(errorOf(() => e.limitPages(11)).code).toBe("NATIVE_INVALID_ARG");
    expect(errorOf(() => e.limitPages(1)).code).toBe("NATIVE_INVALID_ARG");
    e.limitPages(9);
    expect(e.info().numPages).toBe(9);
    const err = errorOf(() => e.forwardSync(onPage9));
    expect(err.code).toBe("NATIVE_PAGE_RANGE");
    expect(err.message).toMatch(/used pages must be 1\.\.8/);
    // The context bound follows: 8 usable pages of 4 tokens.
    const long = { ...batch(1, [1, 2, 3, 4, 5, 6, 7, 8, 8]), contextLens: Int32Array.of(33) };
    const ctxErr = errorOf(() => e.forwardSync(long));
    expect(ctxErr.code).toBe("NATIVE_PAGE_RANGE");
    expect(ctxErr.message).toMatch(/at most \(numPages-1\)\*blockSize = 32/);
    expect(Array.from(await e.forward(batch(3, [8])))).toEqual(Array.from(before)); // same tokens, another page
    expect(errorOf(() => e.limitPages(10)).code).toBe("NATIVE_INVALID_ARG"); // only lowers
    e.close();
    expect(errorOf(() => e.limitPages(4)).code).toBe("NATIVE_CLOSED");
  });

  it("maxContext lowers the longest context validation accepts below the pool's", async () => {
    const e = loaded(
      new native.Engine({ shape, numPages: 10, maxContext: 20, blockSize: BS, maxBatchTokens: 16, threads: 1 }),
    );
    const pages = [1, 2, 3, 4, 5, 6];
    expect((await e.forwardArgmax({ ...batch(1, pages), contextLens: Int32Array.of(20) })).length).toBe(1);
    const err = errorOf(() => e.forwardSync({ ...batch(1, pages), contextLens: Int32Array.of(21) }));
    expect(err.code).toBe("NATIVE_PAGE_RANGE");
    expect(err.message).toMatch(/contextLens\[0\] = 21 exceeds the engine's maxContext 20/);
    e.close();
    expect(
      errorOf(() => new native.Engine({ shape, numPages: 10, maxContext: 0, blockSize: BS, maxBatchTokens: 8 })).code,
    ).toBe("NATIVE_INVALID_ARG");
  });

  it("limitPages before finalize is refused (the pool may not be sized yet)", () => {
    const e = new native.Engine({ shape, numPages: 10, blockSize: BS, maxBatchTokens: 16, threads: 1 });
    expect(errorOf(() => e.limitPages(4)).code).toBe("NATIVE_NOT_FINALIZED");
    e.close();
  });

  it.runIf(build.cudaDevices > 0)("on a GPU, numPages 0 sizes the pool at finalize under the fraction", async () => {
    // Pages of 256 tokens: a pool of 10% of the card stays under the 1M-page cap, so the size is set by memory.
    const bs = 256;
    const e = new native.Engine({
      shape,
      numPages: 0,
      gpuMemoryUtilization: 0.1,
      blockSize: bs,
      maxBatchTokens: 16,
      device: "cuda",
    });
    expect(e.info().numPages).toBe(0);
    expect(errorOf(() => e.forwardSync(batch(3, [1]))).code).toBe("NATIVE_NOT_FINALIZED");
    loaded(e);
    const info = e.info();
    const k = info.kvSizing!;
    expect(k.fraction).toBe(0.1);
    expect(info.numPages).toBeGreaterThan(2);
    expect(info.numPages).toBeLessThan(2 ** 20);
    const kvPerPage = 2 * shape.numLayers * bs * shape.numKvHeads * shape.headDim * 4;
    expect(info.kvBytes).toBe(info.numPages * kvPerPage);
    expect(k.pageBytes).toBe(kvPerPage + bs * shape.headDim * 4); // plus the page's RoPE cos/sin rows
    // The pool is the most pages that keep what was in use, the pool and the reserve under the fraction.
    expect(k.usedBytes + info.numPages * k.pageBytes + k.reserveBytes).toBeLessThanOrEqual(0.1 * k.totalBytes);
    expect(k.usedBytes + (info.numPages + 1) * k.pageBytes + k.reserveBytes).toBeGreaterThan(0.1 * k.totalBytes);
    expect(k.reserveBytes).toBeGreaterThanOrEqual(512 * 2 ** 20);
    expect(info.deviceMemory!.totalBytes).toBe(k.totalBytes);
    const last = info.numPages - 1;
    expect((await e.forwardArgmax(batch(3, [last]))).length).toBe(1);
    expect(errorOf(() => e.forwardSync(batch(3, [last + 1]))).code).toBe("NATIVE_PAGE_RANGE");
    e.close();
  });

  it.runIf(build.cudaDevices > 0)("on a GPU, a fraction with no room for 2 pages fails at finalize", () => {
    const e = new native.Engine({
      shape,
      numPages: 0,
      gpuMemoryUtilization: 1e-6,
      blockSize: BS,
      maxBatchTokens: 16,
      device: "cuda",
    });
    const err = errorOf(() => loaded(e));
    expect(err.code).toBe("NATIVE_OOM");
    expect(err.message).toMatch(/gpuMemoryUtilization 1e-06 leaves no room .* bytes per page; .* GiB free/);
    e.close();
  });
});
