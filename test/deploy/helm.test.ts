// The Helm chart, proven without a cluster: helm lint, helm template with the defaults and the value sets in
// helm/tpserve/ci/, every rendered object against the Kubernetes schemas, and the pods' GPUs, groups, ranks,
// Redis/NATS and TP settings against the values. The pods' args, expanded as the kubelet does, must be accepted
// by the CLI's own flag parsers: with REDIS_URL every group registers under its own name and routers take their
// groups from the ledger (no --workers-dns, several replicas allowed); without it one router reads DNS.
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it, vi } from "vitest";
import { ROUTER_BOOLEAN_FLAGS, workerSourceFromFlags } from "../../services/cli/router.js";
import { Flags } from "../../services/common/flags.js";
import { routerConfigFromFlags } from "../../services/router/config.js";
import { parseWorkersDns } from "../../services/router/discovery.js";
import { RouterMetrics } from "../../services/router/metrics.js";
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

const CHART = "helm/tpserve";
const SETS: Record<string, string[]> = {
  defaults: [],
  perNode: ["-f", `${CHART}/ci/per-node-8gpu-tp2-values.yaml`],
  perGroup: ["-f", `${CHART}/ci/per-group-tp4-values.yaml`],
  external: ["-f", `${CHART}/ci/external-state-values.yaml`],
  standalone: ["--set", "redis.mode=none", "--set", "nats.mode=none"],
};
/** What the downward API gives a worker pod at run time (for `$(POD_NAME)` and `$(POD_IP)` in args). */
const POD = { "metadata.name": "rel-tpserve-worker-0", "status.podIP": "10.1.2.3", "spec.nodeName": "gpu-node-1" };

let helm = "";
const rendered: Record<string, K8sObject[]> = {};

function template(args: string[]): K8sObject[] {
  return parseManifests(runTool(helm, ["template", "rel", CHART, "--namespace", "llm", ...args]));
}

// biome-ignore lint/suspicious/noExplicitAny: containers of rendered pod templates
type Container = any;
const podSpec = (o: K8sObject) => o.spec.template.spec;
const containers = (o: K8sObject): Container[] => podSpec(o).containers;
const workers = (objs: K8sObject[]) =>
  objs.find((o) => (o.kind === "DaemonSet" || o.kind === "StatefulSet") && o.metadata.name.endsWith("-worker"))!;
const router = (objs: K8sObject[]) => containers(one(objs, "Deployment", "-router"))[0]!;
const gpus = (c: Container) => c.resources?.limits?.["nvidia.com/gpu"];

/** A worker container's config as its process would read it: args expanded for pod POD, then parsed. */
function workerConfigOf(c: Container) {
  const args = expandArgs(c, POD);
  expect(args[0]).toBe("worker");
  const f = new Flags(args.slice(1), ["asym"]);
  const cfg = workerConfigFromFlags(f);
  f.rejectUnknown();
  return cfg;
}

describe("helm chart helm/tpserve", () => {
  beforeAll(() => {
    helm = k8sTools().helm;
    for (const [name, args] of Object.entries(SETS)) rendered[name] = template(args);
  });

  it("passes helm lint --strict with the defaults and every CI value set", () => {
    for (const args of Object.values(SETS)) {
      expect(runTool(helm, ["lint", "--strict", CHART, ...args])).toMatch(/1 chart\(s\) linted, 0 chart\(s\) failed/);
    }
  });

  it("renders objects that all validate against the Kubernetes schemas", () => {
    for (const [name, objs] of Object.entries(rendered)) {
      expect(objs.length, name).toBeGreaterThanOrEqual(6);
      for (const o of objs) validateObject(o);
    }
    // and a broken object does fail, so the check is real
    const bad = structuredClone(one(rendered["defaults"]!, "Deployment", "-router"));
    bad.spec.template.spec.containers[0].ports[0].containerPort = "grpc-port";
    expect(() => validateObject(bad)).toThrow(/containerPort/);
  });

  it("defaults: one group of one GPU in a StatefulSet, Redis and NATS deployed and wired into the pods", () => {
    const objs = rendered["defaults"]!;
    const w = workers(objs);
    expect(w.kind).toBe("StatefulSet");
    expect(w.spec.replicas).toBe(1);
    expect(containers(w)).toHaveLength(1);
    const c = containers(w)[0];
    expect(gpus(c)).toBe(1);
    expect(c.resources.requests["nvidia.com/gpu"]).toBe(1);
    expect(c.args).not.toContain("--tp");
    expect(argValue(c.args, "--model")).toBeUndefined(); // the bundled demo model
    expect(podSpec(w).tolerations).toContainEqual({ key: "nvidia.com/gpu", operator: "Exists", effect: "NoSchedule" });
    expect(podSpec(w).nodeSelector).toEqual({ "nvidia.com/gpu.present": "true" });
    expect(one(objs, "Deployment", "-redis").spec.template.spec.containers[0].image).toMatch(/^redis:/);
    expect(one(objs, "Deployment", "-nats").spec.template.spec.containers[0].image).toMatch(/^nats:/);
    for (const pod of [c, router(objs)]) {
      const env = envOf(pod);
      expect(env.get("REDIS_URL")?.value).toBe("redis://rel-tpserve-redis:6379");
      expect(env.get("NATS_URL")?.value).toBe("nats://rel-tpserve-nats:4222");
    }
    expect(ofKind(objs, "HorizontalPodAutoscaler")).toHaveLength(0);
    expect(ofKind(objs, "ServiceMonitor")).toHaveLength(0);
  });

  it("per node, 8 GPUs and tp 2: a DaemonSet with 4 groups of 2 GPUs per node, each its own port and ranks", () => {
    const objs = rendered["perNode"]!;
    const w = workers(objs);
    expect(w.kind).toBe("DaemonSet");
    const cs = containers(w);
    expect(cs).toHaveLength(4); // gpusPerNode / tp groups per node
    expect(cs.reduce((n: number, c: Container) => n + gpus(c), 0)).toBe(8); // every GPU of the node
    cs.forEach((c: Container, g: number) => {
      expect(gpus(c)).toBe(2); // tp GPUs: ranks 0 and 1 of this group
      expect(argValue(c.args, "--tp")).toBe("2");
      expect(argValue(c.args, "--worker-port")).toBe(String(50061 + g));
      expect(argValue(c.args, "--worker-metrics-port")).toBe(String(9400 + g));
      expect(argValue(c.args, "--model")).toBe("/models/Llama-2-7b-hf");
      const env = envOf(c);
      expect(env.get("TPSERVE_TP_SIZE")?.value).toBe("2");
      expect(env.get("TPSERVE_GROUP_INDEX")?.value).toBe(String(g));
      // Redis is on: the group registers as <pod>-g<index>, reached at the pod IP on its own port
      const cfg = workerConfigOf(c);
      expect(cfg.group).toBe(`rel-tpserve-worker-0-g${g}`);
      expect(cfg.advertiseHost).toBe("10.1.2.3");
      expect(cfg.tp).toBe(2);
      expect(argValue(c.args, "--tp-rank")).toBeUndefined(); // the container runs the whole group
      expect(c.readinessProbe.grpc).toEqual({ port: 50061 + g, service: "tpserve.worker.v1.Worker" });
    });
    expect(podSpec(w).volumes).toContainEqual({
      name: "model",
      hostPath: { path: "/mnt/models", type: "Directory" },
    });
    expect(new Set(cs.map((c: Container) => workerConfigOf(c).group)).size).toBe(4); // unique in the pod
    // the router finds the groups of every node in the ledger, not through DNS
    const r = router(objs);
    expect(argValue(r.args, "--workers-dns")).toBeUndefined();
    expect(argValue(r.args, "--min-workers")).toBeUndefined();
    const svc = one(objs, "Service", "-worker");
    expect(svc.spec.clusterIP).toBe("None");
    expect(svc.spec.ports.map((p: { port: number }) => p.port)).toEqual([
      50061, 9400, 50062, 9401, 50063, 9402, 50064, 9403,
    ]);
    const sm = one(objs, "ServiceMonitor", "-worker");
    expect(sm.spec.endpoints.map((e: { port: string }) => e.port)).toEqual([
      "metrics-0",
      "metrics-1",
      "metrics-2",
      "metrics-3",
    ]);
  });

  it("per group, tp 4 and 3 replicas: a StatefulSet of 3 pods of one 4-GPU group each, model from the PVC", () => {
    const objs = rendered["perGroup"]!;
    const w = workers(objs);
    expect(w.kind).toBe("StatefulSet");
    expect(w.spec.replicas).toBe(3);
    expect(w.spec.serviceName).toBe("rel-tpserve-worker");
    const cs = containers(w);
    expect(cs).toHaveLength(1);
    expect(gpus(cs[0])).toBe(4);
    expect(argValue(cs[0].args, "--tp")).toBe("4");
    expect(envOf(cs[0]).get("TPSERVE_TP_SIZE")?.value).toBe("4");
    // Helm merges maps: the chart's GPU-node label stays, the value set adds the product
    expect(podSpec(w).nodeSelector).toEqual({
      "nvidia.com/gpu.present": "true",
      "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3",
    });
    expect(podSpec(w).volumes).toContainEqual({
      name: "model",
      persistentVolumeClaim: { claimName: "llama-70b", readOnly: true },
    });
    expect(workerConfigOf(cs[0]).group).toBe("rel-tpserve-worker-0-g0"); // StatefulSet pods: -0, -1, -2
    const r = router(objs);
    expect(argValue(r.args, "--workers-dns")).toBeUndefined();
    expect(argValue(r.args, "--model")).toBe("/models/Llama-2-70b-hf"); // the tokenizer comes from the same folder
    expect(argValue(r.args, "--api-keys-file")).toBe("/etc/tpserve/api-keys/api-keys");
    const keys = podSpec(one(objs, "Deployment", "-router")).volumes.find(
      (v: { name: string }) => v.name === "api-keys",
    );
    expect(keys.secret.secretName).toBe("tpserve-keys");
  });

  it("external Redis and NATS: URLs come from Secrets, nothing of theirs is deployed; the HPA scales on queue depth", () => {
    const objs = rendered["external"]!;
    expect(ofKind(objs, "Deployment", "-redis")).toHaveLength(0);
    expect(ofKind(objs, "Deployment", "-nats")).toHaveLength(0);
    const secret = one(objs, "Secret", "-redis");
    expect(secret.stringData).toEqual({ url: "redis://redis.infra.svc:6379/0" });
    for (const pod of [containers(workers(objs))[0], router(objs)]) {
      const env = envOf(pod);
      expect(env.get("NATS_URL")?.valueFrom).toEqual({ secretKeyRef: { name: "nats-credentials", key: "nats-url" } });
    }
    expect(envOf(router(objs)).get("REDIS_URL")?.valueFrom).toEqual({
      secretKeyRef: { name: "rel-tpserve-redis", key: "url" },
    });
    expect(podSpec(workers(objs)).volumes).toContainEqual({
      name: "model",
      image: { reference: "registry.example.com/models/tinyllama-brown:1", pullPolicy: "IfNotPresent" },
    });
    const hpa = one(objs, "HorizontalPodAutoscaler", "-router");
    expect(hpa.spec).toMatchObject({ minReplicas: 2, maxReplicas: 6 });
    const metric = hpa.spec.metrics[0].pods.metric.name;
    expect(metric).toBe("tpserve_num_requests_waiting");
    const exported = new RouterMetrics(() => ({ running: 0, waiting: 0, pagesTotal: 1, pagesFree: 1 })).registry
      .getMetricsAsArray()
      .map((m) => m.name);
    expect(exported).toContain(metric); // the router exports what the HPA scales on
    expect(one(objs, "Deployment", "-router").spec.replicas).toBeUndefined(); // the HPA owns replicas
  });

  it("drains: preStop, grace periods longer than the drain deadlines, readiness on grpc.health.v1, PDBs", () => {
    for (const objs of Object.values(rendered)) {
      const dep = one(objs, "Deployment", "-router");
      const r = router(objs);
      const drain = Number(argValue(r.args, "--drain-timeout-s"));
      expect(r.lifecycle.preStop.exec.command).toEqual(["sleep", "5"]);
      expect(podSpec(dep).terminationGracePeriodSeconds).toBeGreaterThan(drain + 5);
      expect(r.readinessProbe.grpc.port).toBe(50051);
      const w = workers(objs);
      const wDrain = Number(argValue(containers(w)[0].args, "--drain-timeout-s"));
      expect(podSpec(w).terminationGracePeriodSeconds).toBeGreaterThan(wDrain);
      expect(one(objs, "PodDisruptionBudget", "-worker").spec.maxUnavailable).toBe(1);
      expect(one(objs, "PodDisruptionBudget", "-router").spec.maxUnavailable).toBe(1);
      for (const c of [r, ...containers(w)]) {
        expect(c.securityContext.allowPrivilegeEscalation).toBe(false);
      }
      expect(podSpec(w).securityContext.runAsNonRoot).toBe(true);
    }
  });

  it("without Redis (mode none): one router reads every group of every node from DNS; groups do not register", () => {
    const objs = template([...SETS["perNode"]!, ...SETS["standalone"]!]);
    for (const o of objs) validateObject(o);
    expect(ofKind(objs, "Deployment", "-redis")).toHaveLength(0);
    expect(one(objs, "Deployment", "-router").spec.replicas).toBe(1);
    const r = router(objs);
    const dns = parseWorkersDns(argValue(r.args, "--workers-dns")!);
    expect(dns).toEqual({ name: "rel-tpserve-worker", ports: [50061, 50062, 50063, 50064] });
    expect(argValue(r.args, "--min-workers")).toBe("8"); // 4 groups on each of the 2 expected nodes
    for (const c of containers(workers(objs))) {
      const cfg = workerConfigOf(c);
      expect(cfg.group).toBeNull();
      expect(cfg.advertiseHost).toBeNull();
      expect(envOf(c).has("REDIS_URL")).toBe(false);
    }
  });

  it("allows several routers and the HPA only with Redis and NATS on", () => {
    const objs = template(["--set", "router.replicas=3"]);
    for (const o of objs) validateObject(o);
    expect(one(objs, "Deployment", "-router").spec.replicas).toBe(3);
    expect(argValue(router(objs).args, "--workers-dns")).toBeUndefined();
    const hpa = one(template(["--set", "router.autoscaling.enabled=true"]), "HorizontalPodAutoscaler", "-router");
    expect(hpa.spec).toMatchObject({ minReplicas: 1, maxReplicas: 4 });
    for (const off of ["redis", "nats"]) {
      for (const many of ["router.replicas=2", "router.autoscaling.enabled=true"]) {
        expect(() => template(["--set", many, "--set", `${off}.mode=none`]), `${many} ${off}`).toThrow(
          new RegExp(`${off}/mode`),
        );
      }
    }
  });

  it("gives pods only arguments the CLI accepts, consistent with their REDIS_URL", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpserve-helm-"));
    const keyFile = join(dir, "keys");
    writeFileSync(keyFile, "k1\n");
    for (const [name, objs] of Object.entries(rendered)) {
      const r = router(objs);
      const clustered = envOf(r).has("REDIS_URL");
      expect(clustered, name).toBe(name !== "standalone");
      const rargs = r.args as string[];
      expect(rargs[0], name).toBe("router");
      // files from Secrets exist only in the pod: point the parser at a local stand-in
      const local = rargs.slice(1).map((a) => (a.startsWith("/etc/tpserve/") ? keyFile : a));
      const rf = new Flags(local, ROUTER_BOOLEAN_FLAGS);
      const src = workerSourceFromFlags(rf, clustered); // refuses --workers(-dns) with REDIS_URL
      expect(src.waitMs).toBe(1800_000);
      // the router reads REDIS_URL itself: its literal value, or a stand-in for one from a Secret
      if (clustered) vi.stubEnv("REDIS_URL", envOf(r).get("REDIS_URL")?.value ?? "redis://from-secret:6379");
      const rc = routerConfigFromFlags(rf, clustered ? [] : ["x:1"]);
      vi.unstubAllEnvs();
      rf.rejectUnknown();
      expect(rc.cluster.redisUrl !== null).toBe(clustered);
      expect(rc.host).toBe("0.0.0.0");
      if (clustered) expect(() => workerSourceFromFlags(new Flags(local, ROUTER_BOOLEAN_FLAGS))).toThrow(/REDIS_URL/);
      const names: string[] = [];
      for (const c of containers(workers(objs))) {
        const wc = workerConfigOf(c);
        expect(wc.host).toBe("0.0.0.0");
        expect(c.ports[0].containerPort).toBe(wc.port);
        expect(wc.drainTimeoutMs).toBe(60_000);
        expect(envOf(c).has("REDIS_URL")).toBe(clustered);
        if (clustered) names.push(wc.group!);
        else expect(wc.group).toBeNull();
      }
      expect(new Set(names).size, name).toBe(names.length);
    }
  });

  it("CPU workers request no GPU; TLS mounts the certificate and probes the router over TCP", () => {
    const objs = template(["--set", "workers.device=cpu", "--set", "tls.enabled=true", "--set", "tls.secretName=tls"]);
    for (const o of objs) validateObject(o);
    const c = containers(workers(objs))[0];
    expect(argValue(c.args, "--device")).toBe("cpu");
    expect(c.resources.limits["nvidia.com/gpu"]).toBeUndefined();
    expect(c.resources.requests["nvidia.com/gpu"]).toBeUndefined();
    const r = router(objs);
    expect(argValue(r.args, "--tls-cert")).toBe("/etc/tpserve/tls/tls.crt");
    expect(argValue(r.args, "--tls-key")).toBe("/etc/tpserve/tls/tls.key");
    expect(r.readinessProbe).toMatchObject({ tcpSocket: { port: "grpc" } });
    expect(r.readinessProbe.grpc).toBeUndefined(); // kubelet's gRPC probe speaks no TLS
    const tls = podSpec(one(objs, "Deployment", "-router")).volumes.find((v: { name: string }) => v.name === "tls");
    expect(tls.secret.secretName).toBe("tls");
  });

  it("refuses bad values with a message naming them", () => {
    const bad: [string[], RegExp][] = [
      [["--set", "tp=3"], /tp.*1, 2, 4, 8/],
      [
        ["--set", "workers.mode=perNode", "--set", "workers.gpusPerNode=6", "--set", "tp=4"],
        /gpusPerNode \(6\) must be a multiple of tp \(4\)/,
      ],
      [["--set", "model.source=pvc"], /claimName/],
      [
        ["--set", "workers.drainTimeoutSeconds=120"],
        /terminationGracePeriodSeconds \(90\) must exceed workers.drainTimeoutSeconds/,
      ],
      [["--set", "redis.mode=external"], /redis.external.url or redis.external.existingSecret is required/],
      [["--set", "workers.podDisruptionBudget.maxUnavailbale=1"], /maxUnavailbale/],
    ];
    for (const [args, re] of bad) expect(() => template(args), args.join(" ")).toThrow(re);
  });

  it("renders NOTES with how to reach the router, how groups are found, and how a tp > 1 group uses its GPUs", () => {
    const notes = (args: string[]) =>
      runTool(helm, ["install", "rel", CHART, "--dry-run=client", "--namespace", "llm", ...args]).split("NOTES:")[1] ??
      "";
    const perNode = notes(SETS["perNode"]!);
    expect(perNode).toMatch(/4 group\(s\) of tp=2 per node/);
    expect(perNode).toMatch(/port-forward svc\/rel-tpserve-router 50051 8080/);
    expect(perNode).toMatch(/registers in the Redis ledger as <pod name>-g<group index>/);
    expect(perNode).toMatch(/`tpserve worker --tp 2`, which starts all 2 ranks itself/);
    expect(perNode).toMatch(/rank r uses the container's GPU r \(all 2 are visible to every rank\)/);
    expect(perNode).toMatch(/NCCL \(libnccl\.so\.2 in the image\)/);
    expect(notes(SETS["external"]!)).toMatch(/HPA \(2\.\.6\) and share the workers through the ledger/);
    const standalone = notes(SETS["standalone"]!);
    expect(standalone).toMatch(/one router, which reads the worker groups from DNS once at start/);
    expect(standalone).not.toMatch(/CUDA IPC/); // tp 1
  });
});
