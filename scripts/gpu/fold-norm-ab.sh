#!/usr/bin/env bash
# Branch fold-norm: the folded-RMSNorm experiment's whole check in one device call (after scripts/gpu/prepare.sh):
# kernel checks (check_int4t has the folded-norm cases), golden greedy over gRPC with the fold on (the decode steps
# take it; all-position passes do not), then the decode step A/B in separate processes.
set -uo pipefail
export OUT=${OUT:-/tmp/o}
CHECKS=check_int4t bash scripts/gpu/run.sh checks | grep -E "==|FAIL|folded" | head -30
export PATH=/usr/local/bin:$PATH
TPSERVE_FOLD_NORM=1 node dist/bench/gpu.js --quick --skip-e2e --bandwidth 0 --out $OUT/gpu-fold.json 2>&1 |
  grep -E "golden|batch 1:|FOLD" | head
VARIANTS="base:;fold:TPSERVE_FOLD_NORM=1;base2:;fold2:TPSERVE_FOLD_NORM=1" \
  bash scripts/gpu/run.sh steps --batches 1,4,8,16 --shapes llama-2-7b,llama-3-8b 2>&1 | grep -E "^(base|fold)"
