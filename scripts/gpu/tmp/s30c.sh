#!/usr/bin/env bash
# Session 30, call 3: float16 scales converted at the load (run 100's form) on every weight (all) or only where the
# one-token GEMV takes 4 warps a tile (ks4: Llama-2-7B's QKV), against float32 (0).
set -uo pipefail
t0=$(date +%s)
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz && tar xJf .device/bin.tar.xz -C .device
export NCCL_NVLS_ENABLE=0
exec > >(tee -a "$OUT/run.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
el() { echo "[t=$(( $(date +%s) - t0 ))s] $*"; }
.device/bin/check_int4t --quick --json $OUT/check_int4t.json > /tmp/c1.log 2>&1; echo "check_int4t rc=$?"; grep -c PASS /tmp/c1.log; grep FAIL /tmp/c1.log | head
.device/bin/check_int4t_epilogue --json $OUT/check_int4t_epilogue.json > /tmp/c2.log 2>&1; echo "check_int4t_epilogue rc=$?"; grep -c PASS /tmp/c2.log; grep FAIL /tmp/c2.log | head
for sh in 12288,4096,1 22016,4096,1; do .device/bin/check_int4t --bench $sh 2>&1 | grep bench; done
BW=$(python3 -c "import sys; sys.path.insert(0,'bench/gpu'); import peer; print(round(peer.copy_bandwidth()))")
el "copy bandwidth $BW"
S="node dist/bench/gpu-step.js --batches 1 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl"
for i in 1 2 3; do
  TPSERVE_HALF_SCALES=0 $S --shapes llama-2-7b --label float 2>&1 | tail -1
  TPSERVE_HALF_SCALES=ks4 $S --shapes llama-2-7b --label ks4 2>&1 | tail -1
  TPSERVE_HALF_SCALES=all $S --shapes llama-2-7b --label all 2>&1 | tail -1
done
el llama-3-8b
TPSERVE_HALF_SCALES=0 $S --shapes llama-3-8b --label float8b 2>&1 | tail -1
TPSERVE_HALF_SCALES=all $S --shapes llama-3-8b --label all8b 2>&1 | tail -1
el batch 8
S8="node dist/bench/gpu-step.js --batches 8 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl --shapes llama-2-7b"
TPSERVE_HALF_SCALES=0 $S8 --label float-b8 2>&1 | tail -1
TPSERVE_HALF_SCALES=ks4 $S8 --label ks4-b8 2>&1 | tail -1
el end
