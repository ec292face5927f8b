// Starts the router: loads the tokenizer, connects to the workers, serves tpserve.v1 and grpc.health.v1.
import * as grpc from "@grpc/grpc-js";
import { type DestinationStream, pino } from "pino";
import type { ControlBus } from "../cluster/bus.js";
import type { PageLedger } from "../cluster/ledger.js";
import { NatsBus } from "../cluster/nats-bus.js";
import { RedisLedger } from "../cluster/redis-ledger.js";
import type { WorkerClient } from "../common/generated/tpserve/worker/v1/Worker.js";
import { serveHttp } from "../common/http.js";
import { loadTokenizer } from "../common/model/tokenizer.js";
import { protos, shutdownServer } from "../common/proto.js";
import { AUTH_HINT } from "./auth.js";
import { describeWorker, RouterCluster, workerClient } from "./cluster.js";
import type { RouterConfig } from "./config.js";
import { embedStaticGroups } from "./embedded.js";
import { OpenAiApi } from "./openai.js";
import { generationServiceWithUtf8Check, Router } from "./server.js";
import { StaticGroups } from "./static-groups.js";

export interface RouterHandle {
  router: Router;
  /** Cluster membership (lease, sweeper, group discovery); null with static --workers. */
  cluster: RouterCluster | null;
  port: number;
  address: string;
  /** Port of the HTTP listener (GET /metrics), or null when off. */
  httpPort: number | null;
  /** Stops taking requests, waits up to `graceMs` for in-flight ones, then closes. */
  close(graceMs?: number): Promise<void>;
}

/** Where the JSON logs go (stderr by default; tests pass their own stream). */
export interface RouterIo {
  logStream?: DestinationStream;
  /** A page ledger to join instead of the one REDIS_URL names (tests pass a shared MemoryLedger). */
  ledger?: PageLedger;
  /** A control bus instead of the one NATS_URL names (tests pass a shared MemoryBus). */
  bus?: ControlBus;
  /** Cluster mode: how long to wait for the first worker group in the ledger (default 60 s). */
  joinWaitMs?: number;
}

export async function startRouter(cfg: RouterConfig, io: RouterIo = {}): Promise<RouterHandle> {
  const log = pino({ level: cfg.logLevel, base: { service: "tpserve-router" } }, io.logStream ?? pino.destination(2));
  const tokenizer = loadTokenizer(cfg.model);
  const { health } = protos();
  let router: Router;
  let clients: WorkerClient[] = [];
  let cluster: RouterCluster | null = null;
  let statics: StaticGroups | null = null;
  if (io.ledger || cfg.cluster.redisUrl) {
    // Cluster mode: groups register themselves in the ledger; this router finds them there at run time.
    const ledger = io.ledger ?? (await RedisLedger.connect(cfg.cluster));
    const opts = { extentPages: cfg.pageExtent, starveMs: cfg.pageStarveMs, cacheKeepPages: cfg.prefixCacheKeepPages };
    const bus = io.bus ?? (cfg.cluster.natsUrl ? await NatsBus.connect(cfg.cluster, "router") : null);
    cluster = new RouterCluster(ledger, cfg.cluster, opts, log, bus);
    const { desc } = await cluster.join(io.joinWaitMs ?? 60_000);
    router = new Router(cfg, tokenizer, desc, [], [desc], log);
    cluster.start(router);
  } else {
    clients = cfg.workers.map(workerClient);
    const descs = await Promise.all(clients.map((c) => describeWorker(c, 60_000)));
    router = new Router(cfg, tokenizer, descs[0]!, [], descs, log);
    await embedStaticGroups(router, cfg, clients, descs);
    // Each worker's grpc.health.v1 status: a draining worker takes no new requests, a failed one that serves again
    // is put back in service.
    statics = new StaticGroups(router, cfg, clients, log);
  }

  const server = new grpc.Server();
  server.addService(generationServiceWithUtf8Check(), router.handlers() as grpc.UntypedServiceImplementation);
  const status = () => (router.healthy ? "SERVING" : "NOT_SERVING");
  server.addService(health.grpc.health.v1.Health.service, {
    Check: (call: grpc.ServerUnaryCall<{ service: string }, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (cfg.authHealthAndMetrics && !router.authorized(call.metadata)) {
        cb({ code: grpc.status.UNAUTHENTICATED, details: `missing or unknown API key: ${AUTH_HINT}` });
        return;
      }
      const svc = call.request.service;
      if (svc !== "" && svc !== "tpserve.v1.Generation") {
        cb({ code: grpc.status.NOT_FOUND, details: `unknown service "${svc}"` });
        return;
      }
      cb(null, { status: status() });
    },
    Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
      if (cfg.authHealthAndMetrics && !router.authorized(call.metadata)) {
        call.emit("error", { code: grpc.status.UNAUTHENTICATED, details: `missing or unknown API key: ${AUTH_HINT}` });
        return;
      }
      call.write({ status: status() });
      const timer = setInterval(() => call.write({ status: status() }), 1000);
      call.on("cancelled", () => clearInterval(timer));
    },
  });
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `${cfg.host}:${cfg.port}`,
      cfg.tls
        ? grpc.ServerCredentials.createSsl(null, [{ cert_chain: cfg.tls.cert, private_key: cfg.tls.key }], false)
        : grpc.ServerCredentials.createInsecure(),
      (err, p) => (err ? reject(new Error(`cannot listen on ${cfg.host}:${cfg.port}: ${err.message}`)) : resolve(p)),
    ),
  );
  const openai = new OpenAiApi(router);
  const http =
    cfg.httpPort === null
      ? null
      : await serveHttp(
          router.metrics.registry,
          cfg.host,
          cfg.httpPort,
          async (req, res) => {
            const path = (req.url ?? "").split("?")[0] ?? "";
            const guarded = path.startsWith("/v1/") || (path === "/metrics" && cfg.authHealthAndMetrics);
            if (guarded && cfg.apiKeys && !cfg.apiKeys.allows(req.headers.authorization)) {
              res.writeHead(401, { "content-type": "application/json", "www-authenticate": "Bearer" });
              const message = `missing or unknown API key: ${AUTH_HINT}`;
              res.end(
                JSON.stringify({
                  error: { message, type: "authentication_error", param: null, code: "invalid_api_key" },
                }),
              );
              return true;
            }
            return openai.handle(req, res);
          },
          cfg.tls,
        );
  return {
    router,
    cluster,
    port,
    address: `${cfg.host}:${port}`,
    httpPort: http?.port ?? null,
    async close(graceMs = 0) {
      statics?.close();
      router.drain();
      const until = Date.now() + graceMs;
      while (router.inFlight > 0 && Date.now() < until) await new Promise((r) => setTimeout(r, 20));
      router.close();
      await cluster?.close();
      await shutdownServer(server, 1000);
      if (http) await new Promise<void>((r) => http.server.close(() => r()));
      for (const c of clients) c.close();
    },
  };
}
