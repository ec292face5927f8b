#!/usr/bin/env bash
# A second build for an A/B of two commits in one device call (after scripts/gpu/prepare.sh for this checkout):
# builds REV in a git worktree and stages what bench/gpu-step.js needs from it in .device/app-ab.tar.xz (dist, the
# addon, package.json, proto, the dummy model configs and bench/shapes where REV has it; node_modules come from
# this checkout's on the device).
# Usage: bash scripts/gpu/prepare-ab.sh REV. Then on the device tool, with carry [".device/node.tar.xz",
# ".device/app.tar.xz", ".device/bin.tar.xz", ".device/app-ab.tar.xz"]: bash scripts/gpu/ab-steps.sh.
set -euo pipefail
rev=${1:?usage: prepare-ab.sh REV}
cd "$(git rev-parse --show-toplevel)"
source scripts/gpu/device-build.sh
root=$PWD
wt=$root/.device/ab-src
git worktree remove --force "$wt" 2>/dev/null || rm -rf "$wt"
git worktree add --detach "$wt" "$rev" >/dev/null
trap 'cd "$root" && git worktree remove --force "$wt"' EXIT
cd "$wt"
ln -s "$root/node_modules" node_modules
device_addon native/build
npm run --silent build:ts
echo "$(git rev-parse --short HEAD) $(git log -1 --format=%s | cut -c1-80)" > AB_REV
XZ_OPT=$XZ_APP tar cJf "$root/.device/app-ab.tar.xz" AB_REV dist native/build/Release/tpserve_native.node package.json \
  proto models/dummy $(ls -d bench/shapes 2>/dev/null)
du -sh "$root/.device/app-ab.tar.xz"
