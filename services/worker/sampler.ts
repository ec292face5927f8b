// Token sampling over one row of float32 logits.
//
// Order (as Hugging Face `generate` and vLLM): temperature scaling, top-k, top-p (nucleus over the
// sorted probabilities), min-p, renormalize, then draw by inverse CDF. The draw walks the kept
// tokens in increasing id order, so the same kept set gives the same token whichever path found it.
// The uniform number is a pure function of (seed, position): a sequence that is preempted and
// recomputed, or batched differently, samples the same tokens.

export interface SamplingOptions {
  /** 0 = greedy argmax (ties -> lowest id); otherwise logits are divided by it. */
  temperature: number;
  /** 0 = off; otherwise keep the k most likely tokens. */
  topK: number;
  /** In (0, 1]; 1 = off. Keep the smallest set of most likely tokens with cumulative prob >= topP. */
  topP: number;
  /** In [0, 1); 0 = off. Drop tokens with prob < minP * maxProb. */
  minP: number;
  /** Any integer; combined with the position to give the random draw. */
  seed: number;
}

/** Returns a message naming the limit broken by the first invalid value, or null when all are valid. */
export function validateSampling(o: SamplingOptions): string | null {
  if (typeof o.temperature !== "number" || !Number.isFinite(o.temperature) || o.temperature < 0) {
    return `temperature must be a finite number >= 0 (0 = greedy), got ${String(o.temperature)}`;
  }
  if (typeof o.topK !== "number" || !Number.isInteger(o.topK) || o.topK < 0) {
    return `top_k must be an integer >= 0 (0 = off), got ${String(o.topK)}`;
  }
  if (typeof o.topP !== "number" || Number.isNaN(o.topP) || !(o.topP > 0 && o.topP <= 1)) {
    return `top_p must be in (0, 1] (1 = off), got ${String(o.topP)}`;
  }
  if (typeof o.minP !== "number" || Number.isNaN(o.minP) || !(o.minP >= 0 && o.minP < 1)) {
    return `min_p must be in [0, 1) (0 = off), got ${String(o.minP)}`;
  }
  if (typeof o.seed !== "number" || !Number.isInteger(o.seed)) {
    return `seed must be an integer, got ${String(o.seed)}`;
  }
  return null;
}

const MASK64 = (1n << 64n) - 1n;
const GOLDEN64 = 0x9e3779b97f4a7c15n;

function mix64(x: bigint): bigint {
  let z = x & MASK64;
  z = ((z ^ (z >> 30n)) * 0xbf58476d1ce4e5b9n) & MASK64;
  z = ((z ^ (z >> 27n)) * 0x94d049bb133111ebn) & MASK64;
  return z ^ (z >> 31n);
}

function toU64(n: number): bigint {
  const t = Number.isFinite(n) ? Math.trunc(n) : 0;
  return BigInt.asUintN(64, BigInt(t));
}

/**
 * Uniform double in [0, 1), a pure function of (seed, position): element `position` of a
 * splitmix64 stream whose start is the mixed seed.
 */
export function uniformAt(seed: number, position: number): number {
  const start = mix64(toU64(seed) ^ 0x5851f42d4c957f2dn);
  const h = mix64(start + (toU64(position) + 1n) * GOLDEN64);
  return Number(h >> 11n) / 2 ** 53;
}

/** Greedy: first index of the largest logit (NaN counts as -Infinity). Single pass. */
function argmax(logits: Float32Array, offset: number, vocab: number): number {
  let best = 0;
  let bestV = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < vocab; i++) {
    const v = logits[offset + i]!;
    if (v > bestV) {
      bestV = v;
      best = i;
    }
  }
  return best;
}

// Scratch buffers reused across calls (the worker samples one row at a time).
let scratchIdx = new Int32Array(0);
let scratchW = new Float64Array(0);

function ensureScratch(n: number): void {
  if (scratchIdx.length < n) {
    const size = Math.max(n, scratchIdx.length * 2);
    scratchIdx = new Int32Array(size);
    scratchW = new Float64Array(size);
  }
}

// Histogram of probability mass by distance below the max, in nats: bucket b covers
// [b/BUCKETS_PER_NAT, (b+1)/BUCKETS_PER_NAT); the last bucket takes everything further down.
const BUCKETS_PER_NAT = 16;
const NUM_BUCKETS = BUCKETS_PER_NAT * 40 + 1;
const hist = new Float64Array(NUM_BUCKETS);

function bucketOf(d: number): number {
  const b = Math.floor(d * BUCKETS_PER_NAT);
  return Math.min(b, NUM_BUCKETS - 1);
}

/**
 * Inverse-CDF draw over `ids[0..n)` (ascending token ids) with weights `w[0..n)` (unnormalized).
 * Returns the first id whose cumulative weight exceeds u * total; never a zero-weight token.
 */
function drawSorted(ids: Int32Array, w: Float64Array, n: number, u: number): number {
  let total = 0;
  for (let j = 0; j < n; j++) total += w[j]!;
  const target = u * total;
  let cum = 0;
  let lastPositive = ids[0]!;
  for (let j = 0; j < n; j++) {
    const wj = w[j]!;
    if (wj > 0) {
      cum += wj;
      lastPositive = ids[j]!;
      if (cum > target) return ids[j]!;
    }
  }
  return lastPositive;
}

/**
 * Samples one token id from `logits[offset .. offset + vocab)`.
 * `position` is the index of the generated token within the sequence (0 for the first one).
 */
export function sampleToken(
  logits: Float32Array,
  offset: number,
  vocab: number,
  opts: SamplingOptions,
  position: number,
): number {
  if (!(vocab > 0) || offset < 0 || offset + vocab > logits.length) {
    throw new RangeError(`logits row [${offset}, ${offset + vocab}) is outside a buffer of ${logits.length}`);
  }
  const T = opts.temperature;
  const topK = opts.topK > 0 && opts.topK < vocab ? Math.floor(opts.topK) : 0;
  if (!(T > 0) || topK === 1) return argmax(logits, offset, vocab);

  // Max logit; an infinite max, or all masked, has no meaningful softmax: fall back to argmax.
  const maxIdx = argmax(logits, offset, vocab);
  const m = logits[offset + maxIdx]!;
  if (!Number.isFinite(m)) return maxIdx;

  const u = uniformAt(opts.seed, position);
  const topP = opts.topP > 0 && opts.topP < 1 ? opts.topP : 1;
  const minP = opts.minP > 0 && opts.minP < 1 ? opts.minP : 0;

  if (topK > 0) return sampleTopK(logits, offset, vocab, topK, T, m, topP, minP, u);
  return sampleFull(logits, offset, vocab, T, m, topP, minP, u);
}

/** Top-k by partial selection (a min-heap of size k), then top-p / min-p over the k sorted candidates. */
function sampleTopK(
  logits: Float32Array,
  offset: number,
  vocab: number,
  k: number,
  T: number,
  m: number,
  topP: number,
  minP: number,
  u: number,
): number {
  ensureScratch(k);
  const heap = scratchIdx; // heap[0] is the worst kept token: lowest logit, then highest id
  let size = 0;
  const val = (i: number): number => {
    const v = logits[offset + i]!;
    return Number.isNaN(v) ? Number.NEGATIVE_INFINITY : v;
  };
  // a is worse than b
  const worse = (a: number, b: number): boolean => {
    const va = val(a);
    const vb = val(b);
    return va < vb || (va === vb && a > b);
  };
  const siftDown = (start: number): void => {
    let i = start;
    for (;;) {
      const l = 2 * i + 1;
      if (l >= size) return;
      const r = l + 1;
      let c = l;
      if (r < size && worse(heap[r]!, heap[l]!)) c = r;
      if (!worse(heap[c]!, heap[i]!)) return;
      const t = heap[i]!;
      heap[i] = heap[c]!;
      heap[c] = t;
      i = c;
    }
  };
  for (let i = 0; i < vocab; i++) {
    if (size < k) {
      // sift up
      let j = size++;
      heap[j] = i;
      while (j > 0) {
        const p = (j - 1) >> 1;
        if (!worse(heap[j]!, heap[p]!)) break;
        const t = heap[j]!;
        heap[j] = heap[p]!;
        heap[p] = t;
        j = p;
      }
    } else if (worse(heap[0]!, i)) {
      heap[0] = i;
      siftDown(0);
    }
  }
  // Sort candidates best first: logit desc, id asc.
  const cand = heap.subarray(0, size);
  cand.sort((a, b) => {
    const d = val(b) - val(a);
    return d !== 0 && !Number.isNaN(d) ? d : a - b;
  });
  const w = scratchW;
  let z = 0;
  for (let j = 0; j < size; j++) {
    const wj = Math.exp((val(cand[j]!) - m) / T);
    w[j] = wj;
    z += wj;
  }
  let keep = size;
  if (topP < 1) {
    const target = topP * z;
    let cum = 0;
    for (let j = 0; j < size; j++) {
      cum += w[j]!;
      if (cum >= target) {
        keep = j + 1;
        break;
      }
    }
  }
  if (minP > 0) {
    let j = 1; // the best token (w = 1) always stays
    while (j < keep && w[j]! >= minP) j++;
    keep = j;
  }
  return drawKept(cand, keep, logits, offset, T, m, u);
}

/** Sort the kept ids ascending, recompute their weights, and draw. */
function drawKept(
  ids: Int32Array,
  keep: number,
  logits: Float32Array,
  offset: number,
  T: number,
  m: number,
  u: number,
): number {
  const kept = ids.subarray(0, keep);
  kept.sort();
  const w = scratchW;
  for (let j = 0; j < keep; j++) {
    const v = logits[offset + kept[j]!]!;
    w[j] = v > Number.NEGATIVE_INFINITY ? Math.exp((v - m) / T) : 0;
  }
  return drawSorted(kept, w, keep, u);
}

/** No top-k: full softmax mass; top-p sorts only the tokens of the histogram bucket where the nucleus ends. */
function sampleFull(
  logits: Float32Array,
  offset: number,
  vocab: number,
  T: number,
  m: number,
  topP: number,
  minP: number,
  u: number,
): number {
  ensureScratch(vocab);
  const w = scratchW;
  const ids = scratchIdx;

  if (topP >= 1) {
    // Optionally min-p (a set filter), then draw in id order: no sort at all.
    let n = 0;
    for (let i = 0; i < vocab; i++) {
      const v = logits[offset + i]!;
      if (!(v > Number.NEGATIVE_INFINITY)) continue;
      const wi = Math.exp((v - m) / T);
      if (wi > 0 && wi >= minP) {
        ids[n] = i;
        w[n] = wi;
        n++;
      }
    }
    return drawSorted(ids, w, n, u);
  }

  // Top-p: mass histogram by distance below the max.
  hist.fill(0);
  let z = 0;
  for (let i = 0; i < vocab; i++) {
    const v = logits[offset + i]!;
    if (!(v > Number.NEGATIVE_INFINITY)) continue;
    const d = (m - v) / T;
    const wi = Math.exp(-d);
    z += wi;
    hist[bucketOf(d)]! += wi;
  }
  const target = topP * z;
  let boundary = NUM_BUCKETS - 1;
  let massBefore = 0;
  {
    let cum = 0;
    for (let b = 0; b < NUM_BUCKETS; b++) {
      const hb = hist[b]!;
      if (cum + hb >= target) {
        boundary = b;
        massBefore = cum;
        break;
      }
      cum += hb;
    }
  }
  // Tokens in buckets before the boundary are all in the nucleus; the boundary bucket is sorted
  // to find where the nucleus ends inside it.
  let nSure = 0;
  let nEdge = 0; // edge tokens are stored from the top of the scratch array downwards
  for (let i = 0; i < vocab; i++) {
    const v = logits[offset + i]!;
    if (!(v > Number.NEGATIVE_INFINITY)) continue;
    const b = bucketOf((m - v) / T);
    if (b < boundary) ids[nSure++] = i;
    else if (b === boundary) ids[vocab - 1 - nEdge++] = i;
  }
  const edge = ids.subarray(vocab - nEdge, vocab);
  edge.sort((a, b) => {
    const d = logits[offset + b]! - logits[offset + a]!;
    return d !== 0 ? d : a - b;
  });
  let cum = massBefore;
  let takeEdge = nEdge;
  for (let j = 0; j < nEdge; j++) {
    cum += Math.exp((logits[offset + edge[j]!]! - m) / T);
    if (cum >= target) {
      takeEdge = j + 1;
      break;
    }
  }
  // Gather the nucleus contiguously, then apply min-p (a set filter: prob >= minP * maxProb).
  for (let j = 0; j < takeEdge; j++) ids[nSure + j] = edge[j]!;
  let n = nSure + takeEdge;
  if (minP > 0) {
    let k = 0;
    for (let j = 0; j < n; j++) {
      const id = ids[j]!;
      if (Math.exp((logits[offset + id]! - m) / T) >= minP) ids[k++] = id;
    }
    n = k;
  }
  return drawKept(ids, n, logits, offset, T, m, u);
}
