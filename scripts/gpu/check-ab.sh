#!/usr/bin/env bash
# A kernel change checked and timed in one device call (after scripts/gpu/prepare.sh): the kernel checks named in
# CHECKS, the golden checks (bench/gpu.js --golden-only) under each setting of GOLDEN ("label:ENV=v,ENV=v;..."),
# then the decode step under each setting of VARIANTS (run.sh steps, one process per setting). Example (docs/gpu-runs.md
# run 29): CHECKS="check_int4t check_int4t_epilogue check_ops" GOLDEN="off:TPSERVE_ATTN_EARLY=0;on:" VARIANTS="off:TPSERVE_ATTN_EARLY=0;on:"
# bash scripts/gpu/check-ab.sh --batches 1,8 --shapes llama-2-7b,llama-3-8b
set -uo pipefail
export OUT=${OUT:-/tmp/o}
CHECKS=${CHECKS:-check_int4t check_int4t_epilogue} bash scripts/gpu/run.sh checks | grep -E "^==|FAIL|checks, .* failed|passed" | head -40
export PATH=/usr/local/bin:$PATH
IFS=';' read -ra gs <<< "${GOLDEN:-default:}"
for v in "${gs[@]}"; do
  label=${v%%:*}
  IFS=',' read -ra kv <<< "${v#*:}"
  env "${kv[@]}" node dist/bench/gpu.js --golden-only --out "$OUT/golden-$label.json" 2>&1 | grep -E "golden|rror" |
    sed "s/^/[$label] /" | head
done
VARIANTS=${VARIANTS:-default:} bash scripts/gpu/run.sh steps "$@" 2>&1 | grep -vE "^(NVIDIA|name|node v)" | tail -60
