#!/usr/bin/env bash
# On the GPU machine (after scripts/gpu/prepare.sh here): the kernel checks, the PyTorch peer and bench/gpu in one
# run. Usage: bash scripts/gpu/run.sh [checks|peer|bench|all|tp|tp-quick|tp-shared|steps] [extra flags for bench/gpu.js,
# gpu-tp.js or gpu-step.js].
# Results go to $OUT (run.log, check_*.json, peer.json, gpu.json, gpu-quant.json). `tp` (a machine with 2+ GPUs):
# check_allreduce and check_ops, the peer's kernels and copy bandwidth, then bench/gpu-tp.js (gpu-tp.json).
# `tp-quick` (4 or 8 GPUs lent briefly; not run yet, meant to take a few minutes): the copy bandwidth alone
# (peer.py --copy-only), check_allreduce, then gpu-tp.js --quick for the 70B shapes at TP=4 and 8 (those the machine
# holds), batch 1 and 32, and the TP=8 greedy equality (issue 9).
# `tp-shared` (any machine, one GPU is enough): groups of up to 8 ranks all on GPU 0, for correctness only:
# check_allreduce --virtual-ranks 8, then under MPS bench/gpu-tp.js --shared-gpu --parts equality (gpu-tp-shared.json;
# --equality-only llama-70b-layer,llama-3-70b-layer: one layer at the 70B models' widths, about 3 minutes each).
# CHECKS="a b" limits the checks to those programs.
set -uo pipefail
stage=${1:-all}
shift || true
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/tpserve-out}
mkdir -p "$OUT"
exec > >(tee -a "$OUT/run.log") 2>&1
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz
[[ -f .device/bin.tar.xz ]] && tar xJf .device/bin.tar.xz -C .device
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem --format=csv
echo "node $(node --version); commit $(git rev-parse --short HEAD 2>/dev/null || echo '?')"
rc=0
# The copy bandwidth peer.py measured (the floors' denominator), 0 when it did not run.
peer_bw() { python3 -c "import json;print(json.load(open('$OUT/peer.json'))['copy_GBps'])" 2>/dev/null || echo 0; }
[[ $stage == tp ]] && CHECKS=${CHECKS:-check_allreduce check_ops}
if [[ $stage == all || $stage == checks || $stage == tp ]]; then
  for c in .device/bin/check_*; do
    [[ -x $c ]] || continue
    n=$(basename "$c")
    [[ -n ${CHECKS:-} && " $CHECKS " != *" $n "* ]] && continue
    flags=()
    [[ $n == check_matmul && -z ${FULL_MATMUL:-} ]] && flags=(--quick)  # its variant benchmarks take minutes
    "$c" --json "$OUT/$n.json" "${flags[@]}" > "$OUT/$n.log" 2>&1
    r=$?
    echo "== $n exit $r"
    grep -E "FAIL|error" "$OUT/$n.log" | head -20
    tail -60 "$OUT/$n.log"
    [[ $r == 0 ]] || rc=1
  done
fi
if [[ $stage == all || $stage == peer || $stage == tp ]]; then
  e2e=--e2e
  [[ $stage == tp ]] && e2e=
  python3 bench/gpu/peer.py $e2e --json "$OUT/peer.json" > "/tmp/peer.log" 2>&1 || rc=1
  grep -v "attention mask" /tmp/peer.log | tail -24
fi
if [[ $stage == tp ]]; then
  bw=$(peer_bw)
  nvidia-smi topo -m
  node dist/bench/gpu-tp.js --bandwidth "$bw" --out "$OUT/gpu-tp.json" "$@" || rc=1
  # The single-GPU engine steps and the KV pool sized from --gpu-memory-utilization, on GPU 0 of the same machine.
  [[ -n ${TP_WITH_SINGLE:-} ]] && { node dist/bench/gpu.js --quick --skip-golden --skip-e2e --bandwidth "$bw" --out "$OUT/gpu.json" || rc=1; }
fi
if [[ $stage == tp-quick ]]; then
  python3 bench/gpu/peer.py --copy-only --json "$OUT/peer.json" || rc=1
  bw=$(peer_bw)
  nvidia-smi topo -m
  .device/bin/check_allreduce --json "$OUT/check_allreduce.json" > "$OUT/check_allreduce.log" 2>&1 || rc=1
  grep -E "FAIL|passed|FAILED" "$OUT/check_allreduce.log" | tail -5
  gpus=$(nvidia-smi -L | wc -l)
  tps=4; [[ $gpus -ge 8 ]] && tps=4,8
  node dist/bench/gpu-tp.js --bandwidth "$bw" --tps "$tps" --parts decode,equality --quick \
    --models llama-2-70b,llama-3-70b --batches 1,32 --equality-only tiny-8kv --out "$OUT/gpu-tp.json" "$@" || rc=1
fi
if [[ $stage == tp-shared ]]; then
  CUDA_MODULE_LOADING=EAGER .device/bin/check_allreduce --virtual-ranks 8 --json "$OUT/check_allreduce-virtual.json" \
    > "$OUT/check_allreduce-virtual.log" 2>&1 || rc=1
  grep -E "FAIL|passed|FAILED" "$OUT/check_allreduce-virtual.log" | tail -5
  # MPS lets the ranks' processes run kernels at the same time, which the p2p waits between ranks need.
  export CUDA_MPS_PIPE_DIRECTORY=/tmp/tpserve-mps-pipe CUDA_MPS_LOG_DIRECTORY=/tmp/tpserve-mps-log
  mkdir -p "$CUDA_MPS_PIPE_DIRECTORY" "$CUDA_MPS_LOG_DIRECTORY"
  nvidia-cuda-mps-control -d || rc=1
  node dist/bench/gpu-tp.js --shared-gpu --tps 1,2,4,8 --parts equality --out "$OUT/gpu-tp-shared.json" "$@" || rc=1
  echo quit | nvidia-cuda-mps-control
fi
if [[ $stage == steps ]]; then
  # The decode step under each setting of VARIANTS ("label:ENV=v,ENV2=v;label2:..."; empty settings: the default),
  # each in its own process (bench/gpu-step.js); one JSON line per step in gpu-step.jsonl.
  IFS=';' read -ra vs <<< "${VARIANTS:-default:}"
  for v in "${vs[@]}"; do
    label=${v%%:*}
    envs=${v#*:}
    IFS=',' read -ra kv <<< "$envs"
    env "${kv[@]}" node dist/bench/gpu-step.js --label "$label" --out "$OUT/gpu-step.jsonl" "$@" || rc=1
  done
fi
if [[ $stage == all || $stage == bench ]]; then
  bw=$(peer_bw)
  node dist/bench/gpu.js --bandwidth "$bw" --out "$OUT/gpu.json" "$@" || rc=1
  # GPTQ (act-order too) and AWQ checkpoints on the GPU against the CPU engine on the same files.
  [[ $stage == all ]] && { node dist/bench/gpu-quant.js --out "$OUT/gpu-quant.json" | grep -v '^loading' || rc=1; }
fi
# The device tool brings back at most 8 files: the check logs travel as one archive.
(cd "$OUT" && ls check_*.log >/dev/null 2>&1 && tar czf checks-logs.tgz check_*.log && rm -f check_*.log)
exit $rc
