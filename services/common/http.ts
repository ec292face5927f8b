// The HTTP listener shared by router and worker: GET /metrics (Prometheus text format) plus whatever handler the
// service adds (the router's OpenAI API), over TLS when given a certificate.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import { createServer as createHttpsServer } from "node:https";
import type { Registry } from "prom-client";

/**
 * Serves GET /metrics (Prometheus text format) on host:port, and whatever `other` takes (it answers true when it
 * handled the request); resolves to the bound port.
 */
export function serveHttp(
  registry: Registry,
  host: string,
  port: number,
  other?: (req: IncomingMessage, res: ServerResponse) => Promise<boolean>,
  tls?: { cert: Buffer; key: Buffer } | null,
): Promise<{ server: Server; port: number }> {
  const handler = async (req: IncomingMessage, res: ServerResponse) => {
    if (other && (await other(req, res))) return;
    if (req.method === "GET" && (req.url === "/metrics" || req.url?.startsWith("/metrics?"))) {
      registry.metrics().then(
        (text) => {
          res.writeHead(200, { "content-type": registry.contentType });
          res.end(text);
        },
        (err: Error) => {
          res.writeHead(500, { "content-type": "text/plain" });
          res.end(`metrics collection failed: ${err.message}\n`);
        },
      );
      return;
    }
    res.writeHead(404, { "content-type": "text/plain" });
    res.end("not found: the router serves GET /metrics and the OpenAI API under /v1/ here\n");
  };
  const server: Server = tls ? createHttpsServer({ cert: tls.cert, key: tls.key }, handler) : createServer(handler);
  return new Promise((resolve, reject) => {
    server.once("error", (e) => reject(new Error(`cannot serve metrics on ${host}:${port}: ${e.message}`)));
    server.listen(port, host, () => {
      const addr = server.address();
      resolve({ server, port: typeof addr === "object" && addr ? addr.port : port });
    });
  });
}
