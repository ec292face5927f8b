// The Grafana dashboard only queries metrics the router exports (a renamed metric would leave a panel empty).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { packageRoot } from "../../services/common/paths.js";
import { RouterMetrics } from "../../services/router/metrics.js";

describe("Grafana dashboard", () => {
  it("is valid JSON whose every query uses exported tpserve_* metrics", () => {
    const dash = JSON.parse(
      readFileSync(join(packageRoot(), "deploy", "grafana", "tpserve-dashboard.json"), "utf8"),
    ) as {
      panels: { title: string; targets: { expr: string }[] }[];
    };
    const m = new RouterMetrics(() => ({ running: 0, waiting: 0, pagesTotal: 1, pagesFree: 1 }));
    const exported = new Set<string>();
    for (const metric of m.registry.getMetricsAsArray()) {
      exported.add(metric.name);
      if (String(metric.type) === "histogram")
        for (const s of ["_bucket", "_sum", "_count"]) exported.add(metric.name + s);
    }
    expect(dash.panels.length).toBeGreaterThanOrEqual(8);
    for (const p of dash.panels) {
      expect(p.targets.length, p.title).toBeGreaterThan(0);
      for (const t of p.targets) {
        const used = t.expr.match(/tpserve_\w+/g) ?? [];
        expect(used.length, `${p.title}: ${t.expr}`).toBeGreaterThan(0);
        for (const u of used) expect(exported.has(u), `${p.title} queries ${u}`).toBe(true);
      }
    }
  });
});
