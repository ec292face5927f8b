#!/usr/bin/env bash
# Folded RMSNorms (docs/gpu.md run 26), the whole check in one device call (after scripts/gpu/prepare.sh): kernel
# checks (check_int4t has the folded-norm cases), the golden checks with the fold off and on (greedy over gRPC in
# int4 takes the folded decode steps; teacher-forced all-position passes do not), then the step A/B in separate
# processes.
set -uo pipefail
export OUT=${OUT:-/tmp/o}
CHECKS=check_int4t bash scripts/gpu/run.sh checks | grep -E "==|FAIL|all .* passed" | head -30
export PATH=/usr/local/bin:$PATH
for fold in 0 1; do
  TPSERVE_FOLD_NORM=$fold node dist/bench/gpu.js --golden-only --out $OUT/golden-fold$fold.json 2>&1 | grep -E "golden" | head
done
VARIANTS="nofold:TPSERVE_FOLD_NORM=0;fold:;nofold2:TPSERVE_FOLD_NORM=0;fold2:" \
  bash scripts/gpu/run.sh steps --batches ${BATCHES:-1,4,8,16} --shapes llama-2-7b,llama-3-8b 2>&1 | grep -E "^(nofold|fold)|rror"
