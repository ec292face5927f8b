#!/usr/bin/env bash
# On a development machine (with nvcc): builds what a GPU run needs and stages it in .device/ (git-ignored):
# Node.js for the GPU machine (../shared/tools/gpu-bundle.sh), the addon with its CUDA kernels, dist/, production
# node_modules, and the standalone kernel checks. Then the device tool runs scripts/gpu/run.sh with
# carry [".device/node.tar.xz", ".device/app.tar.xz", ".device/bin.tar.xz"].
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
bash ../shared/tools/gpu-bundle.sh >/dev/null
# The addon for the GPU machine only (H100 / H200: sm_90 machine code, no PTX, no sm_80), in its own build folder:
# half the size of the default build's (80 and 90 with PTX), which the device tool's 64 MiB carry needs.
npx cmake-js compile -d native -O .device/build-node --CDCMAKE_BUILD_TYPE=Release \
  --CDCMAKE_CUDA_ARCHITECTURES=90-real >/dev/null
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
# Source maps and typings are not needed to run and take a fifth of the archive. A large xz dictionary makes a second
# addon (an A/B build staged beside the first by hand) add under 0.1 MB.
XZ_OPT="-9e --lzma2=preset=9e,dict=128MiB" tar cJf .device/app.tar.xz --exclude='*.map' --exclude='*.d.ts' \
  --exclude='node_modules/*/test' dist -C .device/stage native/build/Release/tpserve_native.node \
  -C "$PWD/.device/prod" node_modules
du -sh .device/node.tar.xz .device/app.tar.xz .device/bin.tar.xz
