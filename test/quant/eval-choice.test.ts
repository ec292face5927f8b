// The multiple-choice next-word check: items are a fixed function of the text and seed, the answer is the word
// that follows the context in the text, and the bundled model scores well above chance (25%).
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadNative } from "../../native/index.js";
import { buildChoiceItems, scoreChoices } from "../../services/cli/eval-choice.js";
import { loadModelConfig, toModelShape } from "../../services/common/model/config.js";
import { loadTokenizer } from "../../services/common/model/tokenizer.js";
import { loadWeights } from "../../services/worker/load.js";
import { asStored } from "../helpers/load-options.js";

const root = join(import.meta.dirname, "../..");
const text = readFileSync(join(root, "data/brown/brown.test.txt"), "utf8");

describe("eval choice", () => {
  it("builds deterministic items whose answer is the next word of the text", () => {
    const a = buildChoiceItems(text, 50, 1);
    expect(buildChoiceItems(text, 50, 1)).toEqual(a);
    expect(buildChoiceItems(text, 50, 2)).not.toEqual(a);
    expect(a).toHaveLength(50);
    for (const item of a) {
      expect(new Set(item.choices).size).toBe(4);
      expect(text).toContain(
        `${item.context.split("\n").pop()!.split(" ").slice(-3).join(" ")} ${item.choices[item.answer]}`,
      );
    }
  });

  it("the bundled model picks the true word far more often than chance", async () => {
    const dir = join(root, "models/tinyllama-brown");
    const cfg = loadModelConfig(dir);
    const e = new (loadNative().Engine)({
      shape: toModelShape(cfg),
      numPages: 33,
      blockSize: 16,
      maxBatchTokens: 512,
      threads: 1,
    });
    loadWeights(e, asStored(cfg, { dir }));
    const r = await scoreChoices(e, loadTokenizer(dir), buildChoiceItems(text, 24, 1), {
      blockSize: 16,
      vocab: cfg.vocabSize,
      maxContext: 128,
    });
    expect(r.items).toBe(24);
    expect(r.accuracy).toBeGreaterThan(0.5);
    e.close();
  }, 60_000);
});
