#!/usr/bin/env bash
# On a development machine (with nvcc): builds what a GPU run needs and stages it in .device/ (git-ignored):
# Node.js for the GPU machine (../shared/tools/gpu-bundle.sh), the addon with its CUDA kernels, dist/, production
# node_modules, and the standalone kernel checks. Then the device tool runs scripts/gpu/run.sh with
# carry [".device/node.tar.xz", ".device/app.tar.xz", ".device/bin.tar.xz"].
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
source scripts/gpu/device-build.sh
bash ../shared/tools/gpu-bundle.sh >/dev/null
device_addon .device/build-node  # in its own build folder: the local one keeps the default architectures
rm -rf .device/stage && mkdir -p .device/stage/native/build/Release
cp .device/build-node/Release/tpserve_native.node .device/stage/native/build/Release/
npm run --silent build:ts
cmake -S native/cuda -B .device/build-cuda -G Ninja -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_ARCHITECTURES=90-real \
  >/dev/null
cmake --build .device/build-cuda
rm -rf .device/bin && mkdir -p .device/bin
# Only this checkout's checks: the build folder keeps binaries of other branches' sources.
for src in native/cuda/checks/check_*.cu; do
  b=$(basename "$src" .cu)
  cp ".device/build-cuda/$b" .device/bin/
done
strip .device/bin/check_* 2>/dev/null || true
# The device tool carries at most 64 MiB. The checks share most of their machine code, which a dictionary as large
# as all of them finds: 2.7 MB instead of 7.8 with xz's default.
XZ_OPT="-9e --lzma2=preset=9e,dict=256MiB" tar cJf .device/bin.tar.xz -C .device bin
rm -rf .device/prod && mkdir -p .device/prod && cp package.json package-lock.json .device/prod/
(cd .device/prod && npm ci --omit=dev --ignore-scripts --no-audit --no-fund --silent)
# Source maps and typings are not needed to run and take a fifth of the archive.
XZ_OPT=$XZ_APP tar cJf .device/app.tar.xz --exclude='*.map' --exclude='*.d.ts' \
  --exclude='node_modules/*/test' dist -C .device/stage native/build/Release/tpserve_native.node \
  -C "$PWD/.device/prod" node_modules
du -sh .device/node.tar.xz .device/app.tar.xz .device/bin.tar.xz
