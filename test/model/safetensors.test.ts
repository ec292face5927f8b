import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ModelLoadError } from "../../services/common/errors.js";
import { fromFloat32, openCheckpoint, toFloat32, writeSafetensors } from "../../services/common/model/safetensors.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");
const tmp = (): string => mkdtempSync(join(tmpdir(), "tpserve-st-"));

describe("float conversions", () => {
  it("round-trips exactly representable values", () => {
    const v = [0, -0, 1, -2.5, 0.125, 65504, 2 ** -14, 2 ** -24, -3.75];
    for (const d of ["BF16", "F16", "F32"] as const) {
      const back = Array.from(toFloat32(fromFloat32(v, d), d));
      if (d === "BF16") expect(back.slice(0, 5)).toEqual(v.slice(0, 5));
      else expect(back).toEqual(v);
    }
  });

  it("rounds to nearest even", () => {
    // 1 + 2^-8 is halfway between bf16 1 and 1 + 2^-7: ties to even (1). 1 + 3*2^-8 ties up to 1 + 2^-6.
    expect(Array.from(toFloat32(fromFloat32([1 + 2 ** -8, 1 + 3 * 2 ** -8], "BF16"), "BF16"))).toEqual([
      1,
      1 + 2 ** -6,
    ]);
    expect(Array.from(toFloat32(fromFloat32([1 + 2 ** -11, 1 + 3 * 2 ** -11, 1e6], "F16"), "F16"))).toEqual([
      1,
      1 + 2 ** -9,
      Number.POSITIVE_INFINITY,
    ]);
  });
});

describe("safetensors", () => {
  it("writes and reads back bf16, f16 and f32 tensors", () => {
    const dir = tmp();
    const vals = [1, -2, 0.5, 3.25, -0.125, 8];
    writeSafetensors(
      join(dir, "model.safetensors"),
      {
        a: { dtype: "BF16", shape: [2, 3], data: fromFloat32(vals, "BF16") },
        b: { dtype: "F16", shape: [3, 2], data: fromFloat32(vals, "F16") },
        c: { dtype: "F32", shape: [6], data: fromFloat32(vals, "F32") },
      },
      { format: "pt" },
    );
    // header length is a multiple of 8
    expect(readFileSync(join(dir, "model.safetensors")).readBigUInt64LE(0) % 8n).toBe(0n);
    const ck = openCheckpoint(dir);
    expect(ck.names().sort()).toEqual(["a", "b", "c"]);
    expect(ck.info("b")).toMatchObject({ dtype: "F16", shape: [3, 2], byteLength: 12 });
    for (const [name, dtype, shape] of [
      ["a", "BF16", [2, 3]],
      ["b", "F16", [3, 2]],
      ["c", "F32", [6]],
    ] as const) {
      const t = ck.read(name);
      expect(t.dtype).toBe(dtype);
      expect(t.shape).toEqual(shape);
      expect(Array.from(toFloat32(t.data, t.dtype))).toEqual(vals);
    }
    expect(() => ck.read("zzz")).toThrow(/"zzz" not in checkpoint/);
    ck.close();
  });

  it("reads a sharded checkpoint through the index", () => {
    const dir = tmp();
    const f32 = (v: number[]) => fromFloat32(v, "F32");
    writeSafetensors(join(dir, "model-00001-of-00002.safetensors"), {
      x: { dtype: "F32", shape: [2], data: f32([1, 2]) },
      y: { dtype: "BF16", shape: [1], data: fromFloat32([3], "BF16") },
    });
    writeSafetensors(join(dir, "model-00002-of-00002.safetensors"), {
      z: { dtype: "F32", shape: [3], data: f32([4, 5, 6]) },
    });
    const weight_map = {
      x: "model-00001-of-00002.safetensors",
      y: "model-00001-of-00002.safetensors",
      z: "model-00002-of-00002.safetensors",
    };
    writeFileSync(join(dir, "model.safetensors.index.json"), JSON.stringify({ metadata: {}, weight_map }));
    const ck = openCheckpoint(dir);
    expect(ck.files).toHaveLength(2);
    expect(ck.names().sort()).toEqual(["x", "y", "z"]);
    expect(Array.from(toFloat32(ck.read("z").data, "F32"))).toEqual([4, 5, 6]);
    expect(Array.from(toFloat32(ck.read("y").data, "BF16"))).toEqual([3]);
    ck.close();

    writeFileSync(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: { ...weight_map, w: "model-00002-of-00002.safetensors" } }),
    );
    expect(() => openCheckpoint(dir)).toThrow(/"w" is listed in the index for model-00002-of-00002/);
    writeFileSync(
      join(dir, "model.safetensors.index.json"),
      JSON.stringify({ weight_map: { q: "missing.safetensors" } }),
    );
    expect(() => openCheckpoint(dir)).toThrow(/cannot open shard .*missing\.safetensors/);
  });

  it("opens the bundled bf16 model", () => {
    const ck = openCheckpoint(MODEL);
    expect(ck.info("model.embed_tokens.weight")).toMatchObject({ dtype: "BF16", shape: [4096, 256] });
    expect(ck.read("model.norm.weight").data.byteLength).toBe(512);
    ck.close();
  });

  it("writes the same bytes in small pieces as in one", () => {
    const dir = tmp();
    const tensors = {
      a: { dtype: "F32" as const, shape: [7], data: fromFloat32([1, 2, 3, 4, 5, 6, 7], "F32") },
      b: { dtype: "BF16" as const, shape: [3], data: fromFloat32([0.5, -1, 2], "BF16") },
    };
    writeSafetensors(join(dir, "one.safetensors"), tensors);
    writeSafetensors(join(dir, "model.safetensors"), tensors, undefined, 5);
    expect(readFileSync(join(dir, "model.safetensors")).equals(readFileSync(join(dir, "one.safetensors")))).toBe(true);
    const ck = openCheckpoint(dir);
    expect(Array.from(toFloat32(ck.read("a").data, "F32"))).toEqual([1, 2, 3, 4, 5, 6, 7]);
    ck.close();
  });

  it("rejects corrupt and truncated files", () => {
    const dir = tmp();
    const path = join(dir, "model.safetensors");
    expect(() => openCheckpoint(dir)).toThrow(/no model.safetensors/);
    writeSafetensors(path, { t: { dtype: "F32", shape: [4], data: fromFloat32([1, 2, 3, 4], "F32") } });
    const good = readFileSync(path);

    writeFileSync(path, good.subarray(0, good.length - 4));
    expect(() => openCheckpoint(dir)).toThrow(/"t": data_offsets \[0, 16\] outside the data \(12 bytes\)/);

    const badLen = Buffer.from(good);
    badLen.writeBigUInt64LE(1n << 40n, 0);
    writeFileSync(path, badLen);
    expect(() => openCheckpoint(dir)).toThrow(/corrupt header/);

    const badJson = Buffer.from(good);
    badJson[8] = "x".charCodeAt(0);
    writeFileSync(path, badJson);
    expect(() => openCheckpoint(dir)).toThrow(ModelLoadError);
    expect(() => openCheckpoint(dir)).toThrow(/not valid JSON/);

    writeFileSync(path, Buffer.from([1, 2, 3]));
    expect(() => openCheckpoint(dir)).toThrow(/too short/);

    const writeHeader = (header: object, dataBytes: number) => {
      const h = Buffer.from(JSON.stringify(header));
      const buf = Buffer.alloc(8 + h.length + dataBytes);
      buf.writeBigUInt64LE(BigInt(h.length), 0);
      h.copy(buf, 8);
      writeFileSync(path, buf);
    };
    writeHeader({ t: { dtype: "F32", shape: [3], data_offsets: [0, 16] } }, 16);
    expect(() => openCheckpoint(dir)).toThrow(/holds 16 bytes but shape \[3\] of F32 needs 12/);
    writeHeader({ t: { dtype: "Q4", shape: [2], data_offsets: [0, 1] } }, 1);
    expect(() => openCheckpoint(dir)).toThrow(/"t": unknown dtype "Q4"/);
    writeHeader({ t: { dtype: "I64", shape: [2], data_offsets: [0, 16] } }, 16);
    const ck = openCheckpoint(dir);
    expect(() => ck.read("t")).toThrow(/tensor "t" has dtype I64; only BF16, F16 and F32 are supported/);
    ck.close();
  });
});
