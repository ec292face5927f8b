// Device selection and argmax outputs of the engine. On a machine without a GPU (CI), asking for CUDA fails with
// a code and a message saying what to change; where a GPU is visible, the GPU engine matches the CPU engine.
import { describe, expect, it } from "vitest";
import { type ForwardBatch, loadNative, type ModelShape } from "../../native/index.js";
import { TINY_SHAPE, tinyModel } from "./reference.js";

const native = loadNative();
const shape = TINY_SHAPE;
const build = native.buildInfo();
const prompts = [
  [3, 14, 15, 92, 65, 35, 89, 79, 32],
  [38, 46, 26, 43, 1],
];

function batch(logits: "last" | "all"): ForwardBatch {
  return {
    tokens: Int32Array.from(prompts.flat()),
    seqLens: Int32Array.from(prompts.map((p) => p.length)),
    contextLens: Int32Array.from(prompts.map((p) => p.length)),
    blockTables: Int32Array.of(4, 9, 7, 0, 2, 11, 0, 0),
    maxBlocksPerSeq: 4,
    logits,
  };
}

// The GPU attention kernels take head sizes 64 and 128.
const gpuShape: ModelShape = {
  ...shape,
  hiddenSize: 256,
  numHeads: 4,
  numKvHeads: 2,
  headDim: 64,
  intermediateSize: 512,
};

function engine(device: string, group: number, sh: ModelShape = shape) {
  const e = new native.Engine({ shape: sh, numPages: 16, blockSize: 4, maxBatchTokens: 32, threads: 1, device });
  for (const [name, t] of tinyModel(sh, 11, group).tensors) e.setTensor(name, t);
  e.finalize();
  return e;
}

function argmaxRows(logits: Float32Array, v: number): number[] {
  const out: number[] = [];
  for (let r = 0; r < logits.length / v; r++) {
    let best = 0;
    for (let i = 1; i < v; i++) if (logits[r * v + i]! > logits[r * v + best]!) best = i;
    out.push(best);
  }
  return out;
}

describe("engine devices and argmax", () => {
  it("forwardArgmax returns the argmax of forward's logits (last and all rows)", async () => {
    const e = engine("cpu", 0);
    for (const mode of ["last", "all"] as const) {
      const logits = await e.forward(batch(mode));
      const ids = await e.forwardArgmax(batch(mode));
      expect(Array.from(ids)).toEqual(argmaxRows(logits, shape.vocabSize));
      expect(ids.length).toBe(mode === "last" ? 2 : prompts.flat().length);
    }
    expect(e.info().device).toBe("cpu");
    e.close();
  });

  it("forwardSample is refused on a CPU engine with a message saying what to call instead", async () => {
    const e = engine("cpu", 0);
    const row = { temperature: 1, topK: 0, topP: 1, minP: 0, seed: 1, position: 0 };
    await expect(e.forwardSample(batch("last"), [row, row])).rejects.toMatchObject({
      code: "NATIVE_INVALID_ARG",
      message: expect.stringMatching(/needs a GPU engine/),
    });
    e.close();
  });

  it("rejects an unknown device name, naming the accepted ones", () => {
    expect(() => new native.Engine({ shape, numPages: 4, blockSize: 4, maxBatchTokens: 8, device: "gpu" })).toThrow(
      /options.device must be "cpu", "cuda" or "cuda:N"/,
    );
  });

  it.runIf(build.cudaDevices === 0)("without a visible GPU, device cuda fails with NATIVE_NO_CUDA", () => {
    let err: { code?: string; message?: string } = {};
    try {
      new native.Engine({ shape, numPages: 4, blockSize: 4, maxBatchTokens: 8, device: "cuda" });
    } catch (e) {
      err = e as typeof err;
    }
    expect(err.code).toBe("NATIVE_NO_CUDA");
    expect(err.message).toMatch(/device "cpu"/);
  });

  it.runIf(build.cudaDevices > 0)("on a GPU, logits match the CPU engine (fp32 1e-4, int4 1e-4)", async () => {
    for (const group of [0, 32]) {
      const cpu = engine("cpu", group, gpuShape);
      const gpu = engine("cuda", group, gpuShape);
      const a = await cpu.forward(batch("all"));
      const b = await gpu.forward(batch("all"));
      let worst = 0;
      for (let i = 0; i < a.length; i++)
        worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / Math.max(1, Math.abs(a[i]!)));
      expect(worst).toBeLessThan(1e-4);
      expect(Array.from(await gpu.forwardArgmax(batch("last")))).toEqual(
        Array.from(await cpu.forwardArgmax(batch("last"))),
      );
      cpu.close();
      gpu.close();
    }
  });
});
