#!/usr/bin/env bash
# Session 30, call 4: attention_reduce_kernel's add_partitions helper (branch s30-add-partitions) against main at
# 512 and 1,024 tokens (batch 1) and 512 (batch 8); Nsight Compute on the QKV- and gate/up-shaped one-token GEMVs.
set -uo pipefail
t0=$(date +%s)
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz && tar xJf .device/bin.tar.xz -C .device
export NCCL_NVLS_ENABLE=0
exec > >(tee -a "$OUT/run.txt") 2>&1
nvidia-smi --query-gpu=name,clocks.sm,clocks.mem --format=csv
el() { echo "[t=$(( $(date +%s) - t0 ))s] $*"; }
N=native/build/Release/tpserve_native.node
cp $N /tmp/main.node
use() { if [[ $1 == ap ]]; then cp native/build-ap/Release/tpserve_native.node $N; else cp /tmp/main.node $N; fi; }
.device/bin/check_ops_ap --no-bench --json $OUT/check_ops_ap.json > /tmp/c3.log 2>&1; echo "check_ops (add_partitions) rc=$?"; grep -c PASS /tmp/c3.log; grep FAIL /tmp/c3.log | head
BW=$(python3 -c "import sys; sys.path.insert(0,'bench/gpu'); import peer; print(round(peer.copy_bandwidth()))")
el "copy bandwidth $BW"
for P in 512 1024; do
  for i in 1 2; do
    for v in main ap; do use $v; node dist/bench/gpu-step.js --shapes llama-2-7b --batches 1 --prompt $P --label $v-$P --bandwidth $BW --out $OUT/steps.jsonl 2>&1 | tail -1; done
  done
done
el batch 8
for i in 1 2; do
  for v in main ap; do use $v; node dist/bench/gpu-step.js --shapes llama-2-7b --batches 8 --prompt 512 --label $v-512-b8 --bandwidth $BW --out $OUT/steps.jsonl 2>&1 | tail -1; done
done
el golden with add_partitions
use ap; node dist/bench/gpu.js --golden-only --out $OUT/golden-ap.json 2>&1 | grep -E "long context|golden int4:|golden none:" | head -6
use main
el ncu
which ncu && for sh in 12288,4096,1 22016,4096,1 4096,4096,1; do
  timeout 120 ncu --clock-control none --section LaunchStats --section Occupancy --section WarpStateStats --section SchedulerStats --section MemoryWorkloadAnalysis -k regex:int4t_gemv_one --launch-skip 30 --launch-count 1 .device/bin/check_int4t --bench $sh > /tmp/ncu-$sh.txt 2>&1; echo "ncu $sh rc=$?"
  grep -E "Duration|Registers Per|Achieved Occupancy|Theoretical Occupancy|Block Limit|Warp Cycles Per Issued|Issued Warp Per|No Eligible|Active Warps Per|Eligible Warps|Memory Throughput|DRAM Throughput|L2 Hit|Stall|One or More" /tmp/ncu-$sh.txt | head -30
done
tar czf $OUT/ncu.tgz /tmp/ncu-*.txt 2>/dev/null
el end
