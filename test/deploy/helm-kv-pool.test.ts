// The chart's KV pool values: by default GPU workers size the pool from --gpu-memory-utilization (no
// --kv-cache-mib), workers.kvCacheMiB fixes it, and the schema refuses fractions outside (0, 1]. The rendered args
// go through the worker's own flag parser.
import { beforeAll, describe, expect, it } from "vitest";
import { Flags } from "../../services/common/flags.js";
import { workerConfigFromFlags } from "../../services/worker/config.js";
import { argValue, expandArgs, k8sTools, parseManifests, runTool } from "../helpers/k8s.js";

const CHART = "helm/tpserve";
let helm = "";

function workerArgs(...set: string[]): string[] {
  const objs = parseManifests(
    runTool(helm, [
      "template",
      "rel",
      CHART,
      "--namespace",
      "llm",
      ...set.flatMap((s) => (s.startsWith("--") ? [s] : ["--set", s])),
    ]),
  );
  // biome-ignore lint/suspicious/noExplicitAny: a rendered pod template
  const w = objs.find((o: any) => o.kind === "StatefulSet" && o.metadata.name.endsWith("-worker")) as any;
  // as the kubelet expands them for a pod (its name and IP come from the downward API)
  return expandArgs(w.spec.template.spec.containers[0], {
    "metadata.name": "rel-tpserve-worker-0",
    "status.podIP": "10.1.2.3",
  });
}

const parse = (args: string[]) => workerConfigFromFlags(new Flags(args.slice(1), ["asym"]));

describe("helm chart: KV pool values", () => {
  beforeAll(() => {
    helm = k8sTools().helm;
  });

  it("defaults: --gpu-memory-utilization 0.9 and no --kv-cache-mib, so a GPU worker sizes its pool from memory", () => {
    const args = workerArgs();
    expect(argValue(args, "--gpu-memory-utilization")).toBe("0.9");
    expect(args).not.toContain("--kv-cache-mib");
    const cfg = parse(args);
    expect(cfg.gpuMemoryUtilization).toBe(0.9);
    expect(cfg.kvCacheMiB).toBeNull();
    expect(cfg.kvCacheDtype).toBe("auto");
  });

  it("workers.kvCacheDtype reaches the worker's flag; the schema refuses other types", () => {
    expect(parse(workerArgs("workers.kvCacheDtype=int8")).kvCacheDtype).toBe("int8");
    expect(() => workerArgs("workers.kvCacheDtype=fp8")).toThrow(/kvCacheDtype/);
  });

  it("workers.kvCacheMiB fixes the pool; workers.gpuMemoryUtilization sets the fraction", () => {
    const fixed = parse(workerArgs("workers.kvCacheMiB=4096"));
    expect(fixed.kvCacheMiB).toBe(4096);
    expect(parse(workerArgs("--set-json=workers.gpuMemoryUtilization=0.75")).gpuMemoryUtilization).toBe(0.75);
  });

  it("refuses a fraction outside (0, 1] and a pool of 0 MiB, naming the value", () => {
    for (const bad of ["0", "1.5"]) {
      expect(() => workerArgs(`--set-json=workers.gpuMemoryUtilization=${bad}`), bad).toThrow(/gpuMemoryUtilization/);
    }
    expect(() => workerArgs("workers.kvCacheMiB=0")).toThrow(/kvCacheMiB/);
  });
});
