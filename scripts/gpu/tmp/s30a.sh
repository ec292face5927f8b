#!/usr/bin/env bash
# Session 30, call 1: float16 scales (Int4Tiled::hscales) checks and step A/B against float32 (TPSERVE_HALF_SCALES=0).
set -uo pipefail
t0=$(date +%s)
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz && tar xJf .device/bin.tar.xz -C .device
export NCCL_NVLS_ENABLE=0
L=$OUT/run.txt
exec > >(tee -a "$L") 2>&1
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
el() { echo "[t=$(( $(date +%s) - t0 ))s] $*"; }
el checks
.device/bin/check_int4t --quick --json $OUT/check_int4t.json > /tmp/c1.log 2>&1; echo "check_int4t rc=$?"; grep -c PASS /tmp/c1.log; grep -E "FAIL" /tmp/c1.log | head; grep f16s /tmp/c1.log | head -5
.device/bin/check_int4t_epilogue --json $OUT/check_int4t_epilogue.json > /tmp/c2.log 2>&1; echo "check_int4t_epilogue rc=$?"; grep -c PASS /tmp/c2.log; grep -E "FAIL" /tmp/c2.log | head; grep f16s /tmp/c2.log | head -3
.device/bin/check_ops --no-bench --json /tmp/ops.json > /tmp/c3.log 2>&1; echo "check_ops rc=$?"; grep -c PASS /tmp/c3.log; grep FAIL /tmp/c3.log | head
el kernel benches
for sh in 4096,4096,1 12288,4096,1 22016,4096,1 4096,11008,1 22016,4096,8; do .device/bin/check_int4t --bench $sh 2>&1 | grep bench; .device/bin/check_int4t --bench $sh 2>&1 | grep bench; done
BW=$(python3 -c "import sys; sys.path.insert(0,'bench/gpu'); import peer; print(round(peer.copy_bandwidth()))")
el "copy bandwidth $BW"
S="node dist/bench/gpu-step.js --batches 1 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl"
for i in 1 2 3; do
  $S --shapes llama-2-7b --label half 2>&1 | grep -E "^b1|ms" | tail -1
  TPSERVE_HALF_SCALES=0 $S --shapes llama-2-7b --label float 2>&1 | grep -E "^b1|ms" | tail -1
done
el llama-3-8b
$S --shapes llama-3-8b --label half8b 2>&1 | tail -1
TPSERVE_HALF_SCALES=0 $S --shapes llama-3-8b --label float8b 2>&1 | tail -1
el batch 8
S8="node dist/bench/gpu-step.js --batches 8 --prompt 128 --bandwidth $BW --out $OUT/steps.jsonl --shapes llama-2-7b"
$S8 --label half-b8 2>&1 | tail -1
TPSERVE_HALF_SCALES=0 $S8 --label float-b8 2>&1 | tail -1
el gpu-quant
node dist/bench/gpu-quant.js --ppl-tokens 8192 --out $OUT/gpu-quant.json 2>&1 | grep -v '^loading' | tail -14
el golden
node dist/bench/gpu.js --golden-only --out $OUT/golden.json 2>&1 | tail -22
el end
