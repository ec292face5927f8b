#!/usr/bin/env bash
# Session 30, call 7: in-step cost of each GEMV of the Llama-2-7B batch-1 step (ablations, unfolded norms).
set -uo pipefail
t0=$(date +%s)
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz
export NCCL_NVLS_ENABLE=0
exec > >(tee -a "$OUT/run.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
BW=$(python3 -c "import sys; sys.path.insert(0,'bench/gpu'); import peer; print(round(peer.copy_bandwidth()))")
echo "copy bandwidth $BW"
S="node dist/bench/gpu-step.js --shapes llama-2-7b --batches 1 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl"
$S --label default 2>&1 | tail -1
TPSERVE_ABLATE=attn $S --label no-attn 2>&1 | tail -1
for i in 1 2; do
  TPSERVE_FOLD_NORM=0 $S --label unfolded 2>&1 | tail -1
  for a in qkv o gateup down; do TPSERVE_FOLD_NORM=0 TPSERVE_ABLATE=$a $S --label unfolded-no-$a 2>&1 | tail -1; done
done
echo "[t=$(( $(date +%s) - t0 ))s] end"
