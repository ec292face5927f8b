// AWQ's clipping step: per (row, group) range factors chosen to minimize the linear's output error on the
// calibration inputs, trace(D H D^T) with D the weight error and H the Hessian of the (scaled) input.
import type { Kernels } from "../../../native/index.js";
import type { AwqOptions, ClipFactors } from "./awq.js";
import { groupParams, quantCode } from "./grid.js";
import { dense } from "./hessian.js";

/** Which factor a sweep of the clip search varies: both together, only the min's, only the max's. */
type Sweep = "both" | "lo" | "hi";

/**
 * Per-(row, group) clip factors minimizing the output error trace(D H D^T) of w (already scaled, h its input
 * Hessian in the same space). Coordinate descent over the groups, each (row, group) trying factors 1, 1 - 1/n,
 * ..., 1 - maxShrink with the other groups' current errors held fixed (the cross-group terms that AutoAWQ's
 * auto_clip leaves out are kept here). The first sweep varies the shared factor; with `clipSplit` (asymmetric
 * grids) two more sweeps per pass vary the min's factor with the max's held, then the max's; `clipPasses` is the
 * number of such passes (without clipSplit: of shared sweeps). Every
 * step keeps the current choice among its candidates, so the result is never worse than no clipping on the
 * calibration set.
 */
export function searchClip(
  kernels: Kernels,
  w: Float32Array,
  rows: number,
  cols: number,
  h: Float32Array,
  opts: AwqOptions,
): ClipFactors {
  const G = opts.groupSize;
  const groups = cols / G;
  const n = opts.clipGrid ?? 20;
  const steps = Math.round(n * (opts.maxShrink ?? 0.5));
  const lo = new Float32Array(rows * groups).fill(1);
  const hi = new Float32Array(rows * groups).fill(1);
  // The shared sweep only while lo = hi (so that its candidates include the current choice).
  const split = opts.clipSplit === true && !opts.symmetric;
  const sweeps: Sweep[] = ["both"];
  for (let p = 0; p < (opts.clipPasses ?? 1); p++) {
    if (split) sweeps.push("lo", "hi");
    else if (p > 0) sweeps.push("both");
  }
  // Error of group g of row r with factors (cLo, cHi), written to out[r * ld + off ..].
  const fillGroup = (out: Float32Array, ld: number, off: number, g: number, r: number, cLo: number, cHi: number) => {
    const base = r * cols + g * G;
    const p = groupParams(w, base, G, 1, opts, cHi, cLo);
    for (let i = 0; i < G; i++) {
      const x = w[base + i]!;
      out[r * ld + off + i] = x - Math.fround((quantCode(x, p.scale, p.zero) - p.zero) * p.scale);
    }
  };
  // D: current weight error (no clipping); DH = D H (rows, cols).
  const d = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) for (let g = 0; g < groups; g++) fillGroup(d, cols, g * G, g, r, 1, 1);
  const dh = kernels.matmul(d, rows, dense(h, [cols, cols]));
  const cand = new Float32Array(rows * G);
  const old = new Float32Array(rows * G);
  const best = new Float64Array(rows);
  const bestD = new Float32Array(rows * G);
  const hgs = Array.from({ length: groups }, (_, g) => {
    const hg = new Float32Array(G * G);
    for (let i = 0; i < G; i++) for (let j = 0; j < G; j++) hg[i * G + j] = h[(g * G + i) * cols + g * G + j]!;
    return dense(hg, [G, G]);
  });
  for (const sweep of sweeps) {
    for (let g = 0; g < groups; g++) {
      const ht = hgs[g]!;
      for (let r = 0; r < rows; r++) for (let i = 0; i < G; i++) old[r * G + i] = d[r * cols + g * G + i]!;
      // cross[r] = (D H)[r, group g] minus the group's own part D_g H_gg.
      const own = kernels.matmul(old, rows, ht);
      const cross = new Float32Array(rows * G);
      for (let r = 0; r < rows; r++)
        for (let i = 0; i < G; i++) cross[r * G + i] = dh[r * cols + g * G + i]! - own[r * G + i]!;
      best.fill(Number.POSITIVE_INFINITY);
      for (let t = 0; t < steps; t++) {
        const c = 1 - t / n;
        for (let r = 0; r < rows; r++) {
          const k = r * groups + g;
          fillGroup(cand, G, 0, g, r, sweep === "hi" ? lo[k]! : c, sweep === "lo" ? hi[k]! : c);
        }
        const ch = kernels.matmul(cand, rows, ht);
        for (let r = 0; r < rows; r++) {
          let e = 0;
          for (let i = 0; i < G; i++) e += cand[r * G + i]! * (ch[r * G + i]! + 2 * cross[r * G + i]!);
          if (e < best[r]!) {
            best[r] = e;
            const k = r * groups + g;
            if (sweep !== "hi") lo[k] = c;
            if (sweep !== "lo") hi[k] = c;
            for (let i = 0; i < G; i++) bestD[r * G + i] = cand[r * G + i]!;
          }
        }
      }
      // Update D and DH for the chosen factors: DH += (D_g new - D_g old) H[g rows, :].
      const delta = new Float32Array(rows * G);
      for (let r = 0; r < rows; r++) {
        for (let i = 0; i < G; i++) {
          delta[r * G + i] = bestD[r * G + i]! - old[r * G + i]!;
          d[r * cols + g * G + i] = bestD[r * G + i]!;
        }
      }
      const hcol = new Float32Array(cols * G); // (cols, G): row j holds H[j, group g] (= H[group g, j])
      for (let j = 0; j < cols; j++) for (let i = 0; i < G; i++) hcol[j * G + i] = h[j * cols + g * G + i]!;
      const upd = kernels.matmul(delta, rows, dense(hcol, [cols, G]));
      for (let k = 0; k < rows * cols; k++) dh[k]! += upd[k]!;
    }
  }
  return { lo, hi };
}
