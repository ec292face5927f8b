#!/usr/bin/env python3
"""Reads the exchange traces of a TP=2 run (TPSERVE_TP_TRACE_DIR; native/cuda/gpu_comm.cu writes one file a rank)
and prints where the one-token GEMV's exchange spends its time (docs/gpu-runs.md, run 74).

Per call and block each rank recorded, on its own GPU's globaltimer: when the block's loop began (after the wait
for the previous kernel), when it pushed its 16 sums, and when the peer's 16 were in. The two clocks differ by an
offset d; for blocks whose rank waited, 'peer in' - 'peer pushed' = L + d (A's clock) or L - d (B's), so the
medians of the two give both the in-step one-way latency L and d.

usage: exchange_trace.py DIR [--skip-last CALLS] [--calls N]
"""
import argparse
import json
import sys

import numpy as np

BLOCKS, CALLS = 1024, 8192


def load(path):
    a = np.fromfile(path, dtype=np.uint64).astype(np.int64)
    counts = a[:BLOCKS]
    rec = a[BLOCKS:].reshape(CALLS, BLOCKS, 4)
    return counts, rec


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--skip-last", type=int, default=256, help="calls at the end left out (the eager profile)")
    ap.add_argument("--calls", type=int, default=1536, help="calls analysed, before the skipped ones")
    ap.add_argument("--json")
    args = ap.parse_args()
    c0, r0 = load(f"{args.dir}/exchange-rank0.bin")
    c1, r1 = load(f"{args.dir}/exchange-rank1.bin")
    grid = int(r0[0, 0, 3])
    n = int(min(c0[:grid].min(), c1[:grid].min(), CALLS))
    end = n - args.skip_last
    start = max(0, end - args.calls)
    if end <= start:
        sys.exit(f"only {n} calls recorded")
    A, B = r0[start:end, :grid], r1[start:end, :grid]
    waitA, waitB = A[..., 2] - A[..., 1], B[..., 2] - B[..., 1]
    # Pairs where one side clearly waited for the other: its 'in' is the other's push plus the latency.
    aw, bw = waitA > 300, waitB > 300
    xa = (A[..., 2] - B[..., 1])[aw]  # L + d
    xb = (B[..., 2] - A[..., 1])[bw]  # L - d
    d = (np.median(xa) - np.median(xb)) / 2 if xa.size and xb.size else 0.0
    L = (np.median(xa) + np.median(xb)) / 2 if xa.size and xb.size else float("nan")
    Bs = B.copy()
    Bs[..., :3] += int(d)  # rank 1's times on rank 0's clock

    def q(x):
        return [float(np.percentile(x, p)) / 1000 for p in (10, 50, 90)] + [float(x.max()) / 1000]

    out = {"calls": int(end - start), "grid": grid, "recorded": n, "offset_us": d / 1000, "latency_us": L / 1000}
    for name, R, W in (("rank0", A, waitA), ("rank1", Bs, waitB)):
        lastPush = R[..., 1].max(axis=1)
        lastIn = R[..., 2].max(axis=1)
        firstLoop = R[..., 0].min(axis=1)
        out[name] = {
            "wait_us_p10_p50_p90_max": q(W),
            "loop_to_push_us_p10_p50_p90_max": q(R[..., 1] - R[..., 0]),
            "push_spread_us_mean": float((lastPush - np.median(R[..., 1], axis=1)).mean()) / 1000,
            "last_push_to_last_in_us_mean": float((lastIn - lastPush).mean()) / 1000,
            "first_loop_to_last_in_us_mean": float((lastIn - firstLoop).mean()) / 1000,
            # From this call's last 'in' to the next call's first loop start: the kernels in between (attention
            # and QKV, or gate/up) plus the launch gaps.
            "in_to_next_loop_us_mean": float((firstLoop[1:] - lastIn[:-1]).mean()) / 1000,
        }
    # Which rank pushed last in each call, and by how much (on one clock).
    lastA, lastB = A[..., 1].max(axis=1), Bs[..., 1].max(axis=1)
    out["rank1_last_push_minus_rank0_us_p10_p50_p90"] = q(lastB - lastA)[:3]
    out["rank0_pushed_last_fraction"] = float((lastA > lastB).mean())
    # Per block: how far the pair's pushes are apart (the later one waits for nothing; the earlier waits that + L).
    pair = np.abs(A[..., 1] - Bs[..., 1])
    out["pair_push_gap_us_p10_p50_p90_max"] = q(pair)
    print(json.dumps(out, indent=1))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
