#!/usr/bin/env bash
# Session 30, call 5 (run 104): a 3- or 4-slot register ring in the 4-warp one-token GEMV (QKV at TP = 1),
# TPSERVE_T_RING=3|4, against the 2-slot ring (unset).
set -uo pipefail
t0=$(date +%s)
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz && tar xJf .device/bin.tar.xz -C .device
export NCCL_NVLS_ENABLE=0
exec > >(tee -a "$OUT/run.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
el() { echo "[t=$(( $(date +%s) - t0 ))s] $*"; }
for R in 3 4; do
  TPSERVE_T_KS=4 TPSERVE_T_RING=$R .device/bin/check_int4t --quick --json $OUT/check_int4t-ring$R.json > /tmp/c1.log 2>&1; echo "check_int4t ks4 ring$R rc=$?"; grep -c PASS /tmp/c1.log; grep FAIL /tmp/c1.log | head -5
  TPSERVE_T_KS=4 TPSERVE_T_RING=$R .device/bin/check_int4t_epilogue > /tmp/c2.log 2>&1; echo "check_int4t_epilogue ks4 ring$R rc=$?"; grep -c PASS /tmp/c2.log; grep FAIL /tmp/c2.log | head -5
done
el alone
for i in 1 2; do for R in 0 3 4; do echo -n "ring$R "; TPSERVE_T_RING=$R .device/bin/check_int4t --bench 12288,4096,1 2>&1 | grep bench; done; done
BW=$(python3 -c "import sys; sys.path.insert(0,'bench/gpu'); import peer; print(round(peer.copy_bandwidth()))")
el "copy bandwidth $BW"
S="node dist/bench/gpu-step.js --shapes llama-2-7b --batches 1 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl"
for i in 1 2 3; do
  for R in 0 3 4; do TPSERVE_T_RING=$R $S --label ring$R 2>&1 | tail -1; done
done
el end
