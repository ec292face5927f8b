#!/usr/bin/env bash
# On the GPU machine: the decode step of this checkout ("a") and of the build staged by prepare-ab.sh ("b"), each
# setting in its own process, alternating a b a b so that drift shows. One JSON line per (label, shape, batch) in
# $OUT/gpu-step.jsonl. Usage: [REPS=2] bash scripts/gpu/ab-steps.sh [flags for bench/gpu-step.js, e.g. --batches
# 1,8,32 --shapes llama-2-7b,llama-3-8b].
set -uo pipefail
OUT=${OUT:-/tmp/tpserve-out}
bash scripts/gpu/run.sh none >/dev/null 2>&1
export PATH=/usr/local/bin:$PATH
mkdir -p ab && tar xJf .device/app-ab.tar.xz -C ab && ln -sfn "$PWD/node_modules" ab/node_modules
echo "a: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); b: $(cat ab/AB_REV)"
rc=0
for rep in $(seq 1 "${REPS:-2}"); do
  node dist/bench/gpu-step.js --label "a$rep" --out "$OUT/gpu-step.jsonl" "$@" || rc=1
  (cd ab && node dist/bench/gpu-step.js --label "b$rep" --out "$OUT/gpu-step.jsonl" "$@") || rc=1
done
exit $rc
