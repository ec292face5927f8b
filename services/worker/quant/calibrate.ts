// Calibration through the project's own engine: token windows from a text file, and per decoder layer the
// statistics (hessian.ts) of the inputs of its linear layers, captured with Engine.captureSync.
import type { Engine, Kernels } from "../../../native/index.js";
import { ConfigError } from "../../common/errors.js";
import type { ModelConfig } from "../../common/model/config.js";
import type { TpTokenizer } from "../../common/model/tokenizer.js";
import { InputStats } from "./hessian.js";

export interface CalibOptions {
  nsamples: number;
  seqLen: number;
  eos: number;
}

/**
 * `nsamples` windows of `seqLen` tokens, starting at documents spread evenly over the text (documents split on
 * blank lines, each BOS + ids + EOS as in `tpserve eval ppl`), concatenating following documents to fill a window.
 */
export function calibrationWindows(text: string, tok: TpTokenizer, opts: CalibOptions): Int32Array[] {
  const docs = text
    .split("\n\n")
    .map((d) => d.trim())
    .filter((d) => d.length > 0);
  if (docs.length === 0) throw new ConfigError("the calibration file (--calib) holds no text");
  const cache = new Map<number, number[]>();
  const enc = (i: number): number[] => {
    let ids = cache.get(i);
    if (!ids) {
      ids = [...tok.encode(docs[i]!, { addSpecialTokens: true }), opts.eos];
      cache.set(i, ids);
    }
    return ids;
  };
  const windows: Int32Array[] = [];
  for (let k = 0; k < opts.nsamples; k++) {
    const ids: number[] = [];
    let d = Math.floor((k * docs.length) / opts.nsamples);
    for (let n = 0; n < docs.length && ids.length < opts.seqLen; n++, d = (d + 1) % docs.length) {
      for (const t of enc(d)) ids.push(t);
    }
    if (ids.length < opts.seqLen) {
      throw new ConfigError(`the calibration file (--calib) has fewer than --seq-len ${opts.seqLen} tokens`);
    }
    windows.push(Int32Array.from(ids.slice(0, opts.seqLen)));
  }
  return windows;
}

/** Input sites of a decoder layer, in Engine.captureSync's order. */
export const SITES = ["attn_in", "o_in", "mlp_in", "down_in"] as const;

export function siteWidths(cfg: ModelConfig): number[] {
  return [cfg.hiddenSize, cfg.numHeads * cfg.headDim, cfg.hiddenSize, cfg.intermediateSize];
}

/**
 * The raw inputs of some sites for some calibration windows (AWQ's block-output search runs the attention and MLP
 * blocks on them): `rows[site]` is (windows.length * seqLen, width of the site), windows in increasing order.
 */
export class SiteSamples {
  readonly rows = new Map<number, Float32Array>();
  private filled = 0;
  constructor(
    readonly sites: number[],
    readonly windows: number[],
    readonly seqLen: number,
    widths: number[],
  ) {
    for (const s of sites) this.rows.set(s, new Float32Array(windows.length * seqLen * widths[s]!));
  }
  /** Copies the window's slice of the capture (T rows of `width` floats, the site at `offset`). */
  take(window: number, cap: Float32Array, width: number, site: number, offset: number, k: number): void {
    const slot = this.windows.indexOf(window);
    const dst = this.rows.get(site);
    if (slot < 0 || !dst) return;
    for (let t = 0; t < this.seqLen; t++) {
      dst.set(cap.subarray(t * width + offset, t * width + offset + k), (slot * this.seqLen + t) * k);
    }
    this.filled++;
  }
  get complete(): boolean {
    return this.filled === this.sites.length * this.windows.length;
  }
}
/** `count` window indices spread evenly over `total` (all of them when count >= total). */
export function spreadWindows(total: number, count: number): number[] {
  const n = Math.min(total, count);
  return Array.from({ length: n }, (_, i) => Math.floor((i * total) / n));
}

/**
 * Runs every window through the engine up to `layer` and accumulates the statistics of its four input sites;
 * `samples`, when given, also receives the raw inputs of its sites for its windows.
 */
export function captureLayerStats(
  engine: Engine,
  kernels: Kernels,
  cfg: ModelConfig,
  layer: number,
  windows: Int32Array[],
  blockSize: number,
  onWindow?: (i: number, n: number) => void,
  samples?: SiteSamples,
): InputStats[] {
  if (!engine.captureSync) throw new ConfigError("this engine cannot capture calibration inputs (CPU engine needed)");
  const widths = siteWidths(cfg);
  const width = widths.reduce((a, b) => a + b, 0);
  const stats = widths.map((k) => new InputStats(k));
  for (let w = 0; w < windows.length; w++) {
    const tokens = windows[w]!;
    const T = tokens.length;
    const pages = Math.ceil(T / blockSize);
    const cap = engine.captureSync(
      {
        tokens,
        seqLens: Int32Array.of(T),
        contextLens: Int32Array.of(T),
        blockTables: Int32Array.from({ length: pages }, (_, i) => i + 1),
        maxBlocksPerSeq: pages,
        logits: "hidden",
      },
      layer,
    );
    let off = 0;
    for (let s = 0; s < widths.length; s++) {
      stats[s]!.add(kernels, cap, T, width, off);
      samples?.take(w, cap, width, s, off, widths[s]!);
      off += widths[s]!;
    }
    onWindow?.(w + 1, windows.length);
  }
  return stats;
}
