// Cluster discovery admits only groups that can serve with the router (services/router/admission.ts): a group found
// later with another KV block size, or with a pool too small for the router's context limit, is refused and stays
// out of service; a matching one found at the same time is admitted.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clusterConfigFromEnv } from "../../services/cluster/config.js";
import { MemoryLedger } from "../../services/cluster/memory-ledger.js";
import { generate } from "../../services/common/client.js";
import { Flags } from "../../services/common/flags.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import { startWorker, type WorkerHandle } from "../../services/worker/server.js";
import { type RouterNode, startRouterNode, waitFor } from "../helpers/multi-router.js";

describe("cluster admission", () => {
  const ledger = new MemoryLedger();
  const cluster = clusterConfigFromEnv({ TPSERVE_LEASE_TTL_MS: "3000", TPSERVE_SWEEP_MS: "100" });
  const workers: WorkerHandle[] = [];
  let router: RouterNode;
  const worker = async (group: string, over: { numPages?: number; blockSize?: number } = {}) => {
    const base = workerConfigFromFlags(new Flags([]));
    const cfg = { ...base, threads: 1, numPages: 96, group, cluster, port: 0, ...over };
    workers.push(await startWorker(cfg, undefined, { ledger }));
  };
  const names = () => router.handle.router.groups.map((g) => g.name).sort();
  beforeAll(async () => {
    await worker("g1");
    router = await startRouterNode(cluster, {}, ledger);
    await waitFor(() => router.handle.router.groups.length === 1, "the router to find g1");
  });
  afterAll(async () => {
    await router.close();
    for (const w of workers) await w.close();
  });

  it("refuses a group with another block size or a smaller pool, and admits a matching one", async () => {
    expect(router.handle.router.maxContext).toBeGreaterThan(7 * 16); // the model's limit, within g1's pool
    await worker("g2-block", { blockSize: 32 });
    await worker("g3-small", { numPages: 8 }); // 7 x 16 = 112 tokens < the limit
    await worker("g4");
    await waitFor(() => names().includes("g4"), "the router to admit g4");
    await new Promise((r) => setTimeout(r, 600)); // several discovery rounds more
    expect(names()).toEqual(["g1", "g4"]);
    const out = await generate(router.client, { text: "The jury said", maxTokens: 4, ignoreEos: true });
    expect(out.ids.length).toBe(4);
  });
});
