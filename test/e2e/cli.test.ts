// The CLI as a user runs it: `tpserve serve` (router here, worker as a child process), `tpserve generate --json`
// against it, and a clean exit on SIGTERM. Runs the compiled dist/ (npm test builds it first).
import { type ChildProcess, execFile, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { promisify } from "node:util";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { packageRoot } from "../../services/common/paths.js";
import { loadGolden } from "../helpers/golden.js";

const run = promisify(execFile);
const bin = join(packageRoot(), "bin", "tpserve.js");
const golden = loadGolden().golden;

describe("tpserve CLI", () => {
  let serve: ChildProcess;
  let address = "";
  let output = "";
  let exited: Promise<number | null>;

  beforeAll(async () => {
    expect(existsSync(join(packageRoot(), "dist", "services", "cli", "main.js")), "run `npm run build` first").toBe(
      true,
    );
    serve = spawn(process.execPath, [bin, "serve", "--port", "0", "--http-port", "0", "--kv-cache-mib", "64"], {
      stdio: ["ignore", "pipe", "pipe"],
    });
    exited = new Promise((resolve) => serve.once("exit", (code) => resolve(code)));
    await new Promise<void>((resolve, reject) => {
      const onData = (d: Buffer) => {
        output += d.toString();
        const m = /gRPC on (\S+) /.exec(output);
        if (m && output.includes("try: ")) {
          address = m[1]!;
          resolve();
        }
      };
      serve.stdout!.on("data", onData);
      serve.stderr!.on("data", (d: Buffer) => {
        output += d.toString();
      });
      serve.once("exit", (code) => reject(new Error(`serve exited early (${code}):\n${output}`)));
    });
  }, 60_000);

  afterAll(() => {
    if (serve.exitCode === null) serve.kill("SIGKILL");
  });

  it("serve shows a loading display, the address, and a demo completion streamed over gRPC", () => {
    expect(output).toMatch(/loading model/);
    expect(output).toMatch(/tpserve ready in [\d.]+s: gRPC on 127\.0\.0\.1:\d+/);
    expect(output).toContain(`demo over gRPC> The committee said that${golden[0]!.text.slice(0, 40)}`);
  });

  it("generate --json prints the greedy ids and text", async () => {
    const g = golden[0]!;
    const { stdout } = await run(process.execPath, [
      bin,
      "generate",
      "--address",
      address,
      "--prompt",
      g.prompt,
      "--max-tokens",
      "32",
      "--json",
    ]);
    const out = JSON.parse(stdout.trim()) as { ids: number[]; text: string; finish_reason: string };
    expect(out.ids).toEqual(g.greedy_ids);
    expect(out.text).toBe(g.text);
  });

  it("generate reports bad input with the server's message and a non-zero exit", async () => {
    const err = await run(process.execPath, [
      bin,
      "generate",
      "--address",
      address,
      "--prompt",
      "Hi",
      "--max-tokens",
      "0",
    ]).catch((e: { code: number; stderr: string }) => e);
    expect((err as { code: number }).code).toBe(3);
    expect((err as { stderr: string }).stderr).toMatch(/max_tokens must be >= 1/);
  });

  it("serve reports a worker that cannot start with its code and message, exit 2, no stack trace", async () => {
    const err = (await run(process.execPath, [
      bin,
      "serve",
      "--port",
      "0",
      "--device",
      "cpu",
      "--kv-cache-dtype",
      "f16",
    ])
      .then(() => ({ code: 0, stderr: "" }))
      .catch((e: { code: number; stderr: string }) => e)) as { code: number; stderr: string };
    expect(err.code).toBe(2);
    expect(err.stderr).toMatch(/^tpserve serve: NATIVE_INVALID_ARG: worker failed to start: .*"f16" runs on the GPU/m);
    expect(err.stderr).not.toMatch(/\n\s+at /);
  }, 60_000);

  it("exits 0 on SIGTERM", async () => {
    serve.kill("SIGTERM");
    expect(await exited).toBe(0);
  });
});
