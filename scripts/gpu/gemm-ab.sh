#!/usr/bin/env bash
# On the GPU machine, the int4 GEMM's A/B (docs/gpu-runs.md run 61): check_int4t --quick under the GEMM planner and
# under forced plans, the planner's times at the Llama shapes for 24-4096 tokens, then the engine's decode step and
# prefill (bench/gpu-step.js, with a prefill profile) of this checkout against the build staged by
# `bash scripts/gpu/prepare-ab.sh REV` ("old"), new old new. Here: bash scripts/gpu/prepare.sh, then
# `cd .device && tar cJf bin-gemm.tar.xz bin/check_int4t`; device tool carry [".device/node.tar.xz",
# ".device/app.tar.xz", ".device/bin-gemm.tar.xz", ".device/app-ab.tar.xz"], command `bash scripts/gpu/gemm-ab.sh`.
set -uo pipefail
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
tar xJf .device/node.tar.xz -C /usr/local/bin && export PATH=/usr/local/bin:$PATH
tar xJf .device/app.tar.xz; tar xJf .device/bin-gemm.tar.xz -C .device
mkdir -p ab && tar xJf .device/app-ab.tar.xz -C ab && ln -sfn "$PWD/node_modules" ab/node_modules
cp dist/bench/gpu-step.js ab/dist/bench/gpu-step.js  # the prefill timing; the rest is the old code
echo "new $(git rev-parse --short HEAD 2>/dev/null); old $(cat ab/AB_REV)"
nvidia-smi --query-gpu=name --format=csv,noheader
B=.device/bin/check_int4t
for v in "plan:" "rt1:TPSERVE_GEMM_RT=1" "rt2:TPSERVE_GEMM_RT=2" "rt2s1:TPSERVE_GEMM_RT=2,TPSERVE_GEMM_SPLIT=1" "s8:TPSERVE_GEMM_SPLIT=8"; do
  label=${v%%:*}; IFS=',' read -ra kv <<< "${v#*:}"
  env "${kv[@]}" $B --quick > "$OUT/check_int4t_$label.log" 2>&1; echo "check_int4t $label rc $? $(grep -E 'checks,' "$OUT/check_int4t_$label.log")"
  grep FAIL "$OUT/check_int4t_$label.log" | head -5
done
for sh in 4096,4096 6144,4096 12288,4096 22016,4096 28672,4096 4096,11008 4096,14336; do for m in 24 32 48 64 128 4096; do
  echo "$($B --bench $sh,$m | grep bench)"
done; done 2>&1 | tee "$OUT/shapes.log"
S="--batches 1,24,32,48,64,128 --shapes llama-2-7b,llama-3-8b --bandwidth 4200 --out $OUT/gpu-step.jsonl"
node dist/bench/gpu-step.js --label new1 --profile-prefill $S
(cd ab && node dist/bench/gpu-step.js --label old1 --profile-prefill $S)
node dist/bench/gpu-step.js --label new2 $S
