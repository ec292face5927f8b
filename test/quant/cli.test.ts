// `tpserve quantize` through the CLI entry: flag errors say what to change; an RTN run writes a loadable GPTQ
// folder with quantize_config.json and the per-layer report.
import { existsSync, mkdtempSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { run } from "../../services/cli/main.js";
import { readQuantConfig } from "../../services/worker/quant/checkpoint.js";

let errors: string[] = [];
beforeEach(() => {
  errors = [];
  vi.spyOn(console, "error").mockImplementation((m: string) => void errors.push(m));
  vi.spyOn(console, "log").mockImplementation(() => {});
  vi.spyOn(process.stderr, "write").mockImplementation(() => true);
});
afterEach(() => vi.restoreAllMocks());

describe("tpserve quantize", () => {
  const out = () => mkdtempSync(join(tmpdir(), "tpserve-cli-q-"));
  it.each([
    [["--method", "gptq", "--bits", "3"], /--bits 3 is not supported: tpserve quantizes to 4 bits only/],
    [["--method", "gptq"], /--method gptq needs calibration text: pass --calib FILE/],
    [["--method", "awq", "--act-order", "--calib", "x"], /--act-order needs --format gptq/],
    [["--method", "rtn", "--sym", "--asym"], /--sym and --asym exclude each other/],
    [["--method", "gptq", "--calib", "x", "--nsamples", "0"], /--nsamples must be an integer in 1..4096/],
    [["--method", "awq", "--calib", "x", "--awq-loss", "mse"], /--awq-loss must be one of linear\|block/],
    [["--method", "awq", "--calib", "x", "--awq-grid", "1"], /--awq-grid must be an integer in 2..1000/],
    [["--method", "awq", "--calib", "x", "--awq-clip", "qk"], /--awq-clip must be one of all\|skip-qk/],
  ])("refuses %j with a message naming the option", async (args, message) => {
    expect(await run(["quantize", ...args, "--out", out()])).toBe(2);
    expect(errors.join("\n")).toMatch(message);
  });

  it("an RTN run writes a GPTQ folder that reads back as gptq, with the report", async () => {
    const dir = out();
    expect(await run(["quantize", "--method", "rtn", "--group-size", "64", "--out", dir])).toBe(0);
    const qc = readQuantConfig(dir);
    expect(qc).toMatchObject({ method: "gptq", groupSize: 64, descAct: false, sym: true });
    expect(JSON.parse(readFileSync(join(dir, "quantize_config.json"), "utf8"))).toMatchObject({
      bits: 4,
      group_size: 64,
    });
    expect(existsSync(join(dir, "tokenizer.json"))).toBe(true);
    const report = JSON.parse(readFileSync(join(dir, "quantize_report.json"), "utf8")) as { layers: unknown[] };
    expect(report.layers).toHaveLength(8 * 7);
  }, 60_000);
});
