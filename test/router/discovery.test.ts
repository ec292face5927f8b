// Where the router finds its workers: a fixed list, or every address a DNS name (a headless Service) resolves to.
import { describe, expect, it } from "vitest";
import { parseWorkersDns, resolveWorkers } from "../../services/router/discovery.js";

describe("worker discovery", () => {
  it("takes a fixed --workers list as given", async () => {
    expect(await resolveWorkers({ workers: "a:1, b.svc:50061", minWorkers: 1, waitMs: 0 })).toEqual([
      "a:1",
      "b.svc:50061",
    ]);
    await expect(resolveWorkers({ workers: "nohost", minWorkers: 1, waitMs: 0 })).rejects.toThrow(/host:port/);
    await expect(resolveWorkers({ workers: "a:1", workersDns: "x:1", minWorkers: 1, waitMs: 0 })).rejects.toThrow(
      /either --workers or --workers-dns/,
    );
  });

  it("expands --workers-dns into every resolved address times every port, sorted", async () => {
    const out = await resolveWorkers({ workersDns: "localhost:50061,50062", minWorkers: 1, waitMs: 0 });
    expect(out.length).toBeGreaterThanOrEqual(2);
    expect(out.length % 2).toBe(0);
    expect(out.filter((a) => a.endsWith(":50061")).length).toBe(out.length / 2);
    expect(out).toContain("127.0.0.1:50061");
    expect(out).toContain("127.0.0.1:50062");
  });

  it("names the flag when DNS gives too few addresses or the spec is malformed", async () => {
    await expect(resolveWorkers({ workersDns: "localhost:50061", minWorkers: 99, waitMs: 0 })).rejects.toThrow(
      /fewer than --min-workers 99/,
    );
    await expect(resolveWorkers({ workersDns: "no-such-host.invalid:1", minWorkers: 1, waitMs: 0 })).rejects.toThrow(
      /--workers-dns no-such-host.invalid:1: no workers/,
    );
    expect(() => parseWorkersDns("svc:0")).toThrow(/NAME:PORT/);
    expect(parseWorkersDns("w.ns.svc.cluster.local:50061,50062")).toEqual({
      name: "w.ns.svc.cluster.local",
      ports: [50061, 50062],
    });
  });
});
