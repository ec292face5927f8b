// The container images without a Docker daemon: the Dockerfiles' structure (multi-stage, CUDA build for the
// worker, non-root user matching the chart, model not baked in), and each image's final file layout, assembled
// from the Dockerfile's own COPY lines in a temporary folder, actually runs: a router from the router layout (no
// native addon in it) serves a worker from the worker layout.
import { cpSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { tmpdir } from "node:os";
import { basename, dirname, join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";
import { generate, generationClient } from "../../services/common/client.js";
import { packageRoot } from "../../services/common/paths.js";
import { type Proc, startRouterProcess, startWorkerProcess } from "../helpers/procs.js";

const ROOT = packageRoot();
const read = (f: string) => readFileSync(join(ROOT, f), "utf8");

interface Stage {
  from: string;
  name?: string;
  lines: string[];
}

/** The stages of a Dockerfile (continuation lines joined). */
function stages(file: string): Stage[] {
  const text = read(file).replace(/\\\n/g, " ");
  const out: Stage[] = [];
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "" || line.startsWith("#")) continue;
    const from = /^FROM\s+(\S+)(?:\s+AS\s+(\S+))?/i.exec(line);
    if (from) out.push({ from: from[1]!, ...(from[2] ? { name: from[2] } : {}), lines: [] });
    else out.at(-1)?.lines.push(line);
  }
  return out;
}

/** COPY --from=build /src/a [/src/b ...] dest of the final stage, as [source paths in the repo, destination]. */
function finalCopies(file: string): { sources: string[]; dest: string }[] {
  const last = stages(file).at(-1)!;
  return last.lines
    .filter((l) => l.startsWith("COPY --from=build "))
    .map((l) => {
      const parts = l.split(/\s+/).slice(2);
      return { sources: parts.slice(0, -1).map((p) => p.replace(/^\/src\//, "")), dest: parts.at(-1)! };
    });
}

/** Lays out the final image's /app from the repository (built here) as the Dockerfile's COPY lines say. */
function layout(file: string): string {
  const app = mkdtempSync(join(tmpdir(), `tpserve-${basename(file, ".Dockerfile")}-`));
  for (const { sources, dest } of finalCopies(file)) {
    for (const src of sources) {
      const target = dest.endsWith("/") ? join(app, dest, basename(src)) : join(app, dest);
      mkdirSync(dirname(target), { recursive: true });
      if (src === "node_modules")
        symlinkSync(join(ROOT, src), target); // npm prune --omit=dev in the image
      else cpSync(join(ROOT, src), target, { recursive: true });
    }
  }
  return app;
}

const procs: Proc[] = [];
const dirs: string[] = [];
afterAll(() => {
  for (const p of procs) if (p.child.exitCode === null) p.child.kill("SIGKILL");
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe("container images", () => {
  it("router: multi-stage on slim Node, non-root, no native addon and no weights", () => {
    const s = stages("deploy/docker/router.Dockerfile");
    expect(s.length).toBeGreaterThanOrEqual(2);
    expect(s.at(-1)!.from).toMatch(/^\$\{NODE_IMAGE\}$/);
    expect(read("deploy/docker/router.Dockerfile")).toMatch(/ARG NODE_IMAGE=node:20-bookworm-slim/);
    const last = s.at(-1)!;
    expect(last.lines).toContain("USER 10001:10001");
    const copied = finalCopies("deploy/docker/router.Dockerfile").flatMap((c) => c.sources);
    expect(copied.some((p) => p.includes("native/build"))).toBe(false);
    expect(copied.some((p) => p.endsWith(".safetensors") || p === "models/tinyllama-brown")).toBe(false);
  });

  it("worker: builds the addon with nvcc on the CUDA devel image, runs on the CUDA base image as non-root", () => {
    const s = stages("deploy/docker/worker.Dockerfile");
    const build = s.find((x) => x.name === "build")!;
    expect(build.from).toMatch(/^nvidia\/cuda:\$\{CUDA_VERSION\}-devel-/);
    expect(s.at(-1)!.from).toMatch(/^nvidia\/cuda:\$\{CUDA_VERSION\}-base-/);
    const compile = build.lines.find((l) => l.includes("cmake-js compile"))!;
    expect(compile).toMatch(/CMAKE_CUDA_ARCHITECTURES/);
    // the build fails unless CMake reports the CUDA sources, with the message native/CMakeLists.txt prints
    const marker = /grep -q "([^"]+)"/.exec(compile)![1]!;
    expect(read("native/CMakeLists.txt")).toContain(`message(STATUS "tpserve: ${marker}`);
    expect(s.at(-1)!.lines).toContain("USER 10001:10001");
    // NCCL for tensor parallelism on GPUs, loaded at run time (native/cuda/nccl_api.cu dlopens libnccl.so.2)
    expect(s.at(-1)!.lines.some((l) => /apt-get install .*\blibnccl2\b/.test(l))).toBe(true);
    expect(read("native/cuda/nccl_api.cu")).toContain('dlopen("libnccl.so.2"');
    // the chart's pods run as this user
    expect(read("helm/tpserve/templates/_helpers.tpl")).toMatch(/runAsUser: 10001/);
  });

  it(".dockerignore keeps build outputs, git history and other weights out of the context", () => {
    const ignore = read(".dockerignore").split("\n");
    for (const p of ["node_modules", "dist", "native/build", ".git", "**/*.safetensors"]) expect(ignore).toContain(p);
    expect(ignore).toContain("!models/tinyllama-brown/model.safetensors");
  });

  it("the images' file layouts run: a router without the addon serves through a worker", async () => {
    const routerApp = layout("deploy/docker/router.Dockerfile");
    const workerApp = layout("deploy/docker/worker.Dockerfile");
    dirs.push(routerApp, workerApp);
    expect(() => readFileSync(join(routerApp, "native", "build", "Release", "tpserve_native.node"))).toThrow();
    const worker = await startWorkerProcess([], join(workerApp, "bin", "tpserve.js"));
    procs.push(worker);
    const router = await startRouterProcess([worker.address], [], join(routerApp, "bin", "tpserve.js"));
    procs.push(router);
    const client = generationClient(router.address);
    const out = await generate(client, { text: "The committee said that", maxTokens: 8 });
    client.close();
    expect(out.completionTokens).toBe(8);
    expect(out.finishReason).toBe("FINISH_REASON_LENGTH");
    router.child.kill("SIGTERM");
    worker.child.kill("SIGTERM");
    expect(await router.exited).toBe(0);
    expect(await worker.exited).toBe(0);
  });
});
