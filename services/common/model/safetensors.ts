// Safetensors checkpoints (one file or sharded with model.safetensors.index.json): header parsing and validation,
// on-demand reads of one tensor's bytes, float conversions, and a writer for tests and tools.
import { closeSync, existsSync, fstatSync, openSync, readFileSync, readSync, writeSync } from "node:fs";
import { basename, join } from "node:path";
import { ModelLoadError } from "../errors.js";

/** Dtypes the loader can use. */
export type StDType = "BF16" | "F16" | "F32";

/** Element sizes of every safetensors dtype (used to validate headers; only StDType can be read). */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1,
  U8: 1,
  I8: 1,
  F8_E4M3: 1,
  F8_E5M2: 1,
  I16: 2,
  U16: 2,
  F16: 2,
  BF16: 2,
  I32: 4,
  U32: 4,
  F32: 4,
  I64: 8,
  U64: 8,
  F64: 8,
};

export function isSupportedDType(d: string): d is StDType {
  return d === "BF16" || d === "F16" || d === "F32";
}

export interface TensorInfo {
  name: string;
  /** Safetensors dtype string as stored (e.g. "BF16"). */
  dtype: string;
  shape: number[];
  file: string;
  /** Absolute byte offset in `file`. */
  offset: number;
  byteLength: number;
}

export interface Checkpoint {
  readonly files: string[];
  names(): string[];
  info(name: string): TensorInfo | undefined;
  /** Raw little-endian bytes of one tensor (BF16/F16/F32 only). */
  read(name: string): { dtype: StDType; shape: number[]; data: Uint8Array };
  /**
   * Rows [begin, end) (dim 0) or columns [begin, end) (dim 1) of a 2-D tensor, reading only those bytes from the
   * file (one ranged read for rows, one per row for columns): a tensor-parallel shard.
   */
  readSlice(
    name: string,
    dim: 0 | 1,
    begin: number,
    end: number,
  ): { dtype: StDType; shape: number[]; data: Uint8Array };
  /** Tensor bytes read from the files so far. */
  bytesRead(): number;
  /** Raw little-endian bytes of one tensor of any dtype (quantized checkpoints: I32 packed weights). */
  readRaw(name: string): { dtype: string; shape: number[]; data: Uint8Array };
  /** readSlice for any dtype; a 1-D tensor slices along dim 0 (one ranged read). */
  readRawSlice(
    name: string,
    dim: 0 | 1,
    begin: number,
    end: number,
  ): { dtype: string; shape: number[]; data: Uint8Array };
  close(): void;
}

const MAX_HEADER = 100 * 1024 * 1024;

function readExact(fd: number, buf: Uint8Array, position: number, file: string): void {
  let done = 0;
  while (done < buf.length) {
    const chunk = Math.min(buf.length - done, 1 << 30);
    const n = readSync(fd, buf, done, chunk, position + done);
    if (n <= 0) throw new ModelLoadError(`${file}: unexpected end of file at byte ${position + done}`);
    done += n;
  }
}

/** Parses and validates the header of one safetensors file. */
export function readHeader(file: string, fd: number): TensorInfo[] {
  const size = fstatSync(fd).size;
  if (size < 8) throw new ModelLoadError(`${file}: too short to be a safetensors file (${size} bytes)`);
  const lenBuf = Buffer.alloc(8);
  readExact(fd, lenBuf, 0, file);
  const headerLen = Number(lenBuf.readBigUInt64LE(0));
  if (headerLen > MAX_HEADER || 8 + headerLen > size) {
    throw new ModelLoadError(`${file}: corrupt header (header length ${headerLen}, file size ${size})`);
  }
  const hBuf = Buffer.alloc(headerLen);
  readExact(fd, hBuf, 8, file);
  let header: unknown;
  try {
    header = JSON.parse(hBuf.toString("utf8"));
  } catch (e) {
    throw new ModelLoadError(`${file}: corrupt header, not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== "object" || header === null || Array.isArray(header)) {
    throw new ModelLoadError(`${file}: corrupt header, not a JSON object`);
  }
  const dataStart = 8 + headerLen;
  const dataSize = size - dataStart;
  const out: TensorInfo[] = [];
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === "__metadata__") continue;
    const bad = (why: string): never => {
      throw new ModelLoadError(`${file}: tensor "${name}": ${why}`);
    };
    if (typeof raw !== "object" || raw === null) bad("header entry is not an object");
    const e = raw as Record<string, unknown>;
    const dtype = e["dtype"];
    const shape = e["shape"];
    const offs = e["data_offsets"];
    if (typeof dtype !== "string" || DTYPE_BYTES[dtype] === undefined) bad(`unknown dtype ${JSON.stringify(dtype)}`);
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 0)) bad("invalid shape");
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isInteger(d) && d >= 0)) {
      bad("invalid data_offsets");
    }
    const [begin, end] = offs as [number, number];
    const dims = shape as number[];
    const expected = dims.reduce((a, b) => a * b, 1) * (DTYPE_BYTES[dtype as string] ?? 0);
    if (end < begin || end > dataSize) bad(`data_offsets [${begin}, ${end}] outside the data (${dataSize} bytes)`);
    if (end - begin !== expected) {
      bad(`holds ${end - begin} bytes but shape [${dims.join(", ")}] of ${dtype} needs ${expected}`);
    }
    out.push({ name, dtype: dtype as string, shape: dims, file, offset: dataStart + begin, byteLength: end - begin });
  }
  const sorted = [...out].sort((a, b) => a.offset - b.offset);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.offset < prev.offset + prev.byteLength) {
      throw new ModelLoadError(`${file}: tensors "${prev.name}" and "${cur.name}" overlap`);
    }
  }
  return out;
}

/** Opens `dir/model.safetensors` or the shards listed in `dir/model.safetensors.index.json`. */
export function openCheckpoint(dir: string): Checkpoint {
  const single = join(dir, "model.safetensors");
  const indexPath = join(dir, "model.safetensors.index.json");
  let files: string[];
  let weightMap: Record<string, string> | undefined;
  if (existsSync(indexPath)) {
    let index: unknown;
    try {
      index = JSON.parse(readFileSync(indexPath, "utf8"));
    } catch (e) {
      throw new ModelLoadError(`${indexPath}: cannot parse (${(e as Error).message})`);
    }
    const wm = (index as { weight_map?: unknown } | null)?.weight_map;
    if (typeof wm !== "object" || wm === null || Array.isArray(wm)) {
      throw new ModelLoadError(`${indexPath}: missing "weight_map" object`);
    }
    weightMap = {};
    for (const [k, v] of Object.entries(wm)) {
      if (typeof v !== "string" || v.includes("/") || v.includes("\\")) {
        throw new ModelLoadError(`${indexPath}: weight_map["${k}"] must be a shard file name`);
      }
      weightMap[k] = v;
    }
    files = [...new Set(Object.values(weightMap))].map((f) => join(dir, f));
  } else if (existsSync(single)) {
    files = [single];
  } else {
    throw new ModelLoadError(`${dir}: no model.safetensors or model.safetensors.index.json`);
  }

  const fds = new Map<string, number>();
  const tensors = new Map<string, TensorInfo>();
  const closeAll = (): void => {
    for (const fd of fds.values()) closeSync(fd);
    fds.clear();
  };
  try {
    for (const file of files) {
      let fd: number;
      try {
        fd = openSync(file, "r");
      } catch (e) {
        throw new ModelLoadError(`cannot open shard ${file}: ${(e as Error).message}`);
      }
      fds.set(file, fd);
      for (const t of readHeader(file, fd)) {
        if (tensors.has(t.name)) throw new ModelLoadError(`tensor "${t.name}" appears in more than one shard`);
        tensors.set(t.name, t);
      }
    }
    if (weightMap) {
      for (const [name, shard] of Object.entries(weightMap)) {
        const t = tensors.get(name);
        if (!t) throw new ModelLoadError(`tensor "${name}" is listed in the index for ${shard} but not found there`);
        if (basename(t.file) !== shard) {
          throw new ModelLoadError(`tensor "${name}" is listed in the index for ${shard} but found in ${t.file}`);
        }
      }
    }
  } catch (e) {
    closeAll();
    throw e;
  }

  let bytesRead = 0;
  const open = (name: string): { t: TensorInfo & { dtype: StDType }; fd: number } => {
    const t = tensors.get(name);
    if (!t) throw new ModelLoadError(`tensor "${name}" not in checkpoint`);
    if (!isSupportedDType(t.dtype)) {
      throw new ModelLoadError(`tensor "${name}" has dtype ${t.dtype}; only BF16, F16 and F32 are supported`);
    }
    const fd = fds.get(t.file);
    if (fd === undefined) throw new ModelLoadError(`checkpoint closed (reading "${name}")`);
    return { t: t as TensorInfo & { dtype: StDType }, fd };
  };
  /** Rows (one ranged read) or columns (one read per row) [begin, end) of a 2-D tensor; 1-D: elements, dim 0. */
  const slice = (t: TensorInfo, fd: number, dim: 0 | 1, begin: number, end: number) => {
    const [rows, cols] = t.shape.length === 1 ? [t.shape[0]!, 1] : (t.shape as [number, number]);
    const extent = dim === 0 ? rows : cols;
    const ok = t.shape.length === 2 || (t.shape.length === 1 && dim === 0);
    if (!ok || !(Number.isInteger(begin) && Number.isInteger(end) && 0 <= begin && begin < end && end <= extent)) {
      throw new ModelLoadError(
        `tensor "${t.name}" [${t.shape.join(", ")}]: cannot slice dim ${dim} at [${begin}, ${end})`,
      );
    }
    const es = DTYPE_BYTES[t.dtype]!;
    const shape = t.shape.length === 1 ? [end - begin] : dim === 0 ? [end - begin, cols] : [rows, end - begin];
    if (dim === 0) {
      const data = new Uint8Array((end - begin) * cols * es);
      readExact(fd, data, t.offset + begin * cols * es, t.file);
      bytesRead += data.byteLength;
      return { shape, data };
    }
    const w = (end - begin) * es;
    const data = new Uint8Array(rows * w);
    for (let r = 0; r < rows; r++)
      readExact(fd, data.subarray(r * w, (r + 1) * w), t.offset + (r * cols + begin) * es, t.file);
    bytesRead += data.byteLength;
    return { shape, data };
  };
  return {
    files,
    names: () => [...tensors.keys()],
    info: (name) => tensors.get(name),
    read(name) {
      const { t, fd } = open(name);
      const data = new Uint8Array(t.byteLength);
      readExact(fd, data, t.offset, t.file);
      bytesRead += data.byteLength;
      return { dtype: t.dtype, shape: [...t.shape], data };
    },
    readRaw(name) {
      const t = tensors.get(name);
      if (!t) throw new ModelLoadError(`tensor "${name}" not in checkpoint`);
      const fd = fds.get(t.file);
      if (fd === undefined) throw new ModelLoadError(`checkpoint closed (reading "${name}")`);
      const data = new Uint8Array(t.byteLength);
      readExact(fd, data, t.offset, t.file);
      bytesRead += data.byteLength;
      return { dtype: t.dtype, shape: [...t.shape], data };
    },
    readSlice(name, dim, begin, end) {
      const { t, fd } = open(name);
      return { ...slice(t, fd, dim, begin, end), dtype: t.dtype };
    },
    readRawSlice(name, dim, begin, end) {
      const t = tensors.get(name);
      if (!t) throw new ModelLoadError(`tensor "${name}" not in checkpoint`);
      const fd = fds.get(t.file);
      if (fd === undefined) throw new ModelLoadError(`checkpoint closed (reading "${name}")`);
      return { ...slice(t, fd, dim, begin, end), dtype: t.dtype };
    },
    bytesRead: () => bytesRead,
    close: closeAll,
  };
}

export interface WriteTensor {
  /** StDType, or I32 for quantized checkpoints' packed weights. */
  dtype: StDType | "I32";
  shape: number[];
  data: Uint8Array;
}

/**
 * Writes one safetensors file (header padded to 8 bytes with spaces, as the reference writer does), tensor by
 * tensor in writes of at most `pieceBytes` (1 GiB; tests set less): one buffer for the whole file would stop at
 * 4 GiB, one write at 2 GiB.
 */
export function writeSafetensors(
  path: string,
  tensors: Record<string, WriteTensor>,
  metadata?: Record<string, string>,
  pieceBytes = 1 << 30,
): void {
  const header: Record<string, unknown> = {};
  if (metadata) header["__metadata__"] = metadata;
  let offset = 0;
  const entries = Object.entries(tensors);
  for (const [name, t] of entries) {
    const need = t.shape.reduce((a, b) => a * b, 1) * (DTYPE_BYTES[t.dtype] ?? 0);
    if (need !== t.data.byteLength) {
      throw new Error(`writeSafetensors: "${name}" has ${t.data.byteLength} bytes, shape needs ${need}`);
    }
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + need] };
    offset += need;
  }
  let json = JSON.stringify(header);
  json += " ".repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const hBytes = Buffer.from(json, "utf8");
  const head = Buffer.alloc(8 + hBytes.length);
  head.writeBigUInt64LE(BigInt(hBytes.length), 0);
  hBytes.copy(head, 8);
  const fd = openSync(path, "w");
  try {
    writeSync(fd, head);
    for (const [, t] of entries) {
      for (let at = 0; at < t.data.byteLength; at += pieceBytes) {
        const piece = t.data.subarray(at, Math.min(at + pieceBytes, t.data.byteLength));
        for (let done = 0; done < piece.byteLength; ) done += writeSync(fd, piece, done);
      }
    }
  } finally {
    closeSync(fd);
  }
}

// ---- float conversions (little-endian hosts) ----

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

function halfToFloat(h: number): number {
  const s = h & 0x8000 ? -1 : 1;
  const e = (h >> 10) & 0x1f;
  const m = h & 0x3ff;
  if (e === 0) return s * m * 2 ** -24;
  if (e === 31) return m ? Number.NaN : s * Number.POSITIVE_INFINITY;
  return s * (1 + m / 1024) * 2 ** (e - 15);
}

function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 31) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    let r = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && r & 1)) r++;
    return sign | r;
  }
  let r = (e << 10) | (mant >>> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && r & 1)) r++;
  return sign | r;
}

/** Decodes raw BF16/F16/F32 bytes into float32 values. */
export function toFloat32(data: Uint8Array, dtype: StDType): Float32Array {
  if (dtype === "F32") {
    const out = new Float32Array(data.byteLength / 4);
    new Uint8Array(out.buffer).set(data);
    return out;
  }
  const n = data.byteLength / 2;
  const src = data.byteOffset % 2 === 0 ? data : data.slice();
  const h = new Uint16Array(src.buffer, src.byteOffset, n);
  const out = new Float32Array(n);
  if (dtype === "BF16") {
    const bits = new Uint32Array(out.buffer);
    for (let i = 0; i < n; i++) bits[i] = h[i]! << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(h[i]!);
  }
  return out;
}

/** Encodes float values as BF16/F16 (round to nearest even) or F32 bytes. */
export function fromFloat32(values: ArrayLike<number>, dtype: StDType): Uint8Array {
  const n = values.length;
  const out = new Uint8Array(n * (dtype === "F32" ? 4 : 2));
  const dv = new DataView(out.buffer);
  for (let i = 0; i < n; i++) {
    const v = values[i]!;
    if (dtype === "F32") dv.setFloat32(i * 4, v, true);
    else if (dtype === "F16") dv.setUint16(i * 2, floatToHalf(v), true);
    else {
      f32[0] = v;
      const x = u32[0]!;
      const isNan = (x & 0x7fffffff) > 0x7f800000;
      const b = isNan ? (x >>> 16) | 0x40 : (x + 0x7fff + ((x >>> 16) & 1)) >>> 16;
      dv.setUint16(i * 2, b & 0xffff, true);
    }
  }
  return out;
}
