#!/usr/bin/env bash
# On the GPU machine: the decode step of this checkout ("a") and of the build staged by prepare-ab.sh ("b"), each
# setting in its own process, alternating a b a b so that drift shows. One JSON line per (label, shape, batch) in
# $OUT/gpu-step.jsonl. Usage: [REPS=2] bash scripts/gpu/ab-steps.sh [flags for bench/gpu-step.js, e.g. --batches
# 1,8,32 --shapes llama-2-7b,llama-3-8b]. AB_BENCH=gpu-tp runs bench/gpu-tp.js instead (a machine with 2+ GPUs; its
# flags, e.g. --quick --parts decode --tps 1,2,4), writing $OUT/gpu-tp-a1.json, -b1.json, ...
set -uo pipefail
OUT=${OUT:-/tmp/tpserve-out}
bash scripts/gpu/run.sh none >/dev/null 2>&1
export PATH=/usr/local/bin:$PATH NCCL_NVLS_ENABLE=0
mkdir -p ab && tar xJf .device/app-ab.tar.xz -C ab && ln -sfn "$PWD/node_modules" ab/node_modules
echo "a: $(git rev-parse --short HEAD 2>/dev/null || echo '?'); b: $(cat ab/AB_REV)"
bench=${AB_BENCH:-gpu-step}
out() {  # label
  if [[ $bench == gpu-step ]]; then echo "--label $1 --out $OUT/gpu-step.jsonl"; else echo "--out $OUT/$bench-$1.json"; fi
}
rc=0
for rep in $(seq 1 "${REPS:-2}"); do
  # shellcheck disable=SC2046
  node "dist/bench/$bench.js" $(out "a$rep") "$@" || rc=1
  # shellcheck disable=SC2046
  (cd ab && node "dist/bench/$bench.js" $(out "b$rep") "$@") || rc=1
done
exit $rc
