# syntax=docker/dockerfile:1
# tpserve worker: the native addon built with CUDA (nvcc from the CUDA devel image, cudart linked statically), run
# on the small CUDA base image. The GPU driver comes from the NVIDIA container runtime on the node.
#   docker build -f deploy/docker/worker.Dockerfile -t tpserve-worker .
#   docker build -f deploy/docker/worker.Dockerfile --build-arg CUDA_ARCHITECTURES="90" -t tpserve-worker:h100 .
ARG CUDA_VERSION=12.6.3
ARG UBUNTU=ubuntu24.04
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS node

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
ARG CUDA_ARCHITECTURES="80;90"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update && apt-get install -y --no-install-recommends cmake make g++ python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
    && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
# The CMake build finds nvcc in the devel image and compiles the CUDA sources for these architectures.
RUN npx cmake-js compile -d native -O native/build --CDCMAKE_BUILD_TYPE=Release \
      --CDCMAKE_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}" 2>&1 | tee /tmp/native-build.log \
    && grep -q "CUDA sources enabled" /tmp/native-build.log \
    && npm run build:ts && npm prune --omit=dev --no-audit --no-fund

FROM nvidia/cuda:${CUDA_VERSION}-base-${UBUNTU}
ENV NODE_ENV=production
WORKDIR /app
# NCCL for tensor parallelism on GPUs (loaded at run time from libnccl.so.2; the CUDA apt repository of the base
# image carries it). Without it a group still runs through CUDA IPC peer buffers when the GPUs have peer access.
RUN apt-get update && apt-get install -y --no-install-recommends libnccl2 && rm -rf /var/lib/apt/lists/*
RUN groupadd --gid 10001 tpserve && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tpserve
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=build /src/package.json ./
COPY --from=build /src/bin ./bin
COPY --from=build /src/proto ./proto
COPY --from=build /src/dist ./dist
COPY --from=build /src/node_modules ./node_modules
COPY --from=build /src/native/build/Release/tpserve_native.node ./native/build/Release/tpserve_native.node
# The 7.3M-parameter demo model (model.source=bundled, 15 MB); real models are mounted at run time, never baked.
COPY --from=build /src/models/tinyllama-brown ./models/tinyllama-brown
USER 10001:10001
EXPOSE 50061 9400
ENTRYPOINT ["node", "/app/bin/tpserve.js"]
CMD ["--help"]
