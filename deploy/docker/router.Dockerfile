# syntax=docker/dockerfile:1
# tpserve router: TypeScript only (tokenizer, scheduler, gRPC/HTTP). It never loads the native addon.
#   docker build -f deploy/docker/router.Dockerfile -t tpserve-router .
ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY . .
RUN npm run build:ts && npm prune --omit=dev --no-audit --no-fund

FROM ${NODE_IMAGE}
ENV NODE_ENV=production
WORKDIR /app
RUN groupadd --gid 10001 tpserve && useradd --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin tpserve
COPY --from=build /src/package.json ./
COPY --from=build /src/bin ./bin
COPY --from=build /src/proto ./proto
COPY --from=build /src/dist ./dist
COPY --from=build /src/node_modules ./node_modules
# Only the demo model's tokenizer (for model.source=bundled); real models are mounted at run time.
COPY --from=build /src/models/tinyllama-brown/config.json /src/models/tinyllama-brown/tokenizer.json /src/models/tinyllama-brown/tokenizer_config.json ./models/tinyllama-brown/
USER 10001:10001
EXPOSE 50051 8080
ENTRYPOINT ["node", "/app/bin/tpserve.js"]
CMD ["--help"]
