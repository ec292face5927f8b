# Sourced by prepare.sh and prepare-ab.sh: how a build for the GPU machine is made and packed, so both builds of an
# A/B match. The device tool carries at most 64 MiB.
# The addon for the GPU machine only (H100 / H200: sm_90 machine code, no PTX, no sm_80) into OUT/Release: half the
# size of the default build's (80 and 90 with PTX). Usage: device_addon OUT (run in the checkout's root).
device_addon() {
  npx cmake-js compile -d native -O "$1" --CDCMAKE_BUILD_TYPE=Release --CDCMAKE_CUDA_ARCHITECTURES=90-real >/dev/null
}
# xz for the app archives: a dictionary large enough that a second addon beside the first adds under 0.1 MB.
XZ_APP="-9e --lzma2=preset=9e,dict=128MiB"
