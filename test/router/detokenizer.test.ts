import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Tokenizer } from "@huggingface/tokenizers";
import { describe, expect, it } from "vitest";
import { IncrementalDetokenizer } from "../../services/router/detokenizer.js";

const modelDir = fileURLToPath(new URL("../../models/tinyllama-brown/", import.meta.url));
const readJson = (name: string): unknown => JSON.parse(readFileSync(modelDir + name, "utf8"));

const tokenizer = new Tokenizer(readJson("tokenizer.json") as object, readJson("tokenizer_config.json") as object);
const decode = (ids: number[]): string => tokenizer.decode(ids);
const encode = (text: string): number[] => tokenizer.encode(text, { add_special_tokens: false }).ids;

interface Golden {
  prompt_ids: number[];
  greedy_ids: number[];
}
const golden = (readJson("golden.public.json") as { golden: Golden[] }).golden;

function stream(
  promptIds: number[],
  ids: number[],
  chunk = 1,
): { deltas: string[]; tail: string; det: IncrementalDetokenizer } {
  const det = new IncrementalDetokenizer(decode, promptIds);
  const deltas: string[] = [];
  for (let i = 0; i < ids.length; i += chunk) deltas.push(det.push(ids.slice(i, i + chunk)));
  return { deltas, tail: det.flush(), det };
}

describe("IncrementalDetokenizer", () => {
  it("has six golden texts", () => {
    expect(golden.length).toBe(6);
  });

  for (const [i, g] of golden.entries()) {
    it(`golden ${i}: joined deltas equal the full decode`, () => {
      const { deltas, tail, det } = stream(g.prompt_ids, g.greedy_ids);
      const full = decode(g.greedy_ids);
      expect(deltas.join("") + tail).toBe(full);
      expect(det.text).toBe(full);
      expect(deltas.join("")).toBe(full); // clean ASCII text: nothing left for flush
      // leading space of the first generated token survives
      expect(deltas.find((d) => d.length > 0)?.[0]).toBe(full[0]);
    });
  }

  it("multi-byte characters never produce a partial character", () => {
    const text = "naïve café — 日本語 😀 and more ünïcödé ✓✓ 🎉🎉 done";
    const ids = encode(text);
    expect(decode(ids)).toBe(text);
    const prompt = golden[0]!.prompt_ids;
    const { deltas, tail } = stream(prompt, ids);
    for (const d of deltas) expect(d).not.toContain("\uFFFD");
    expect(deltas.join("") + tail).toBe(text);
    expect(tail).toBe("");
    // some token boundaries split characters, so some pushes must have held text back
    expect(deltas.filter((d) => d === "").length).toBeGreaterThan(0);
  });

  it("works with multi-id pushes and no prompt", () => {
    const text = " 日本語 😀 café";
    const ids = encode(text);
    for (const chunk of [2, 3, 7]) {
      const { deltas, tail } = stream([], ids, chunk);
      for (const d of deltas) expect(d).not.toContain("\uFFFD");
      expect(deltas.join("") + tail).toBe(text);
    }
  });

  it("flush releases an incomplete character", () => {
    const ids = encode("ab 😀");
    const cut = ids.slice(0, -1); // last byte of the emoji missing
    const { deltas, tail } = stream([], cut);
    expect(deltas.join("")).toBe("ab ");
    expect(tail).toBe("\uFFFD");
    expect(deltas.join("") + tail).toBe(decode(cut));
  });

  it("handles long sequences (window compaction)", () => {
    const g = golden[1]!;
    const ids: number[] = [];
    while (ids.length < 3000) ids.push(...g.greedy_ids, ...encode(" 日本語 😀"));
    const { deltas, tail } = stream(g.prompt_ids, ids);
    expect(deltas.join("") + tail).toBe(decode(ids));
  });
});
