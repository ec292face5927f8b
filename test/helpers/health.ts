// grpc.health.v1 from the outside, as a Kubernetes gRPC probe sees it.
import * as grpc from "@grpc/grpc-js";
import { unary } from "../../services/common/client.js";
import type { HealthCheckResponse__Output } from "../../services/common/generated/grpc/health/v1/HealthCheckResponse.js";
import { protos } from "../../services/common/proto.js";

/** grpc.health.v1 Check as a Kubernetes gRPC probe sends it; resolves to the status. */
export async function probe(address: string, service: string): Promise<string> {
  const health = new (protos().health.grpc.health.v1.Health)(address, grpc.credentials.createInsecure());
  try {
    const r = await unary<{ service: string }, HealthCheckResponse__Output>((req, cb) => health.Check(req, cb), {
      service,
    });
    return r.status;
  } finally {
    health.close();
  }
}
