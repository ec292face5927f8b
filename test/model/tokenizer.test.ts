import { readFileSync } from "node:fs";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadTokenizer } from "../../services/common/model/tokenizer.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");
const golden = JSON.parse(readFileSync(join(MODEL, "golden.public.json"), "utf8")) as {
  golden: { prompt: string; prompt_ids: number[]; greedy_ids: number[] }[];
};

describe("tokenizer", () => {
  const tok = loadTokenizer(MODEL);

  it("has the special tokens and vocab size", () => {
    expect(tok.bosTokenId).toBe(1);
    expect(tok.eosTokenId).toBe(2);
    expect(tok.bosToken).toBe("<s>");
    expect(tok.vocabSize).toBe(4096);
    expect(tok.idToToken(1)).toBe("<s>");
    expect(tok.idToToken(4096)).toBeUndefined();
  });

  it("encodes the six golden prompts to their ids (BOS from the post-processor)", () => {
    expect(golden.golden).toHaveLength(6);
    for (const g of golden.golden) {
      expect(tok.encode(g.prompt, { addSpecialTokens: true })).toEqual(g.prompt_ids);
      expect(tok.encode(g.prompt, { addSpecialTokens: false })).toEqual(g.prompt_ids.slice(1));
    }
  });

  it("decodes back to the text", () => {
    for (const g of golden.golden) {
      const ids = tok.encode(g.prompt);
      expect(tok.decode(ids, { skipSpecialTokens: true })).toBe(g.prompt);
      expect(tok.decode(ids)).toBe(`<s>${g.prompt}`);
      expect(typeof tok.decode(g.greedy_ids)).toBe("string");
    }
    const text = "Hello, world!  Two spaces\nand a newline; 1961 -- \u00e9t\u00e9.";
    expect(tok.decode(tok.encode(text, { addSpecialTokens: false }))).toBe(text);
  });

  it("renders the chat template", () => {
    const messages = [
      { role: "user", content: "Hi there" },
      { role: "assistant", content: "Hello" },
    ];
    expect(tok.hasChatTemplate).toBe(true);
    expect(tok.applyChatTemplate(messages)).toBe("user: Hi there\nassistant: Hello\n");
    expect(tok.applyChatTemplate(messages, { addGenerationPrompt: true })).toBe(
      "user: Hi there\nassistant: Hello\nassistant:",
    );
  });
});

describe("chat template context", () => {
  it("exposes bos_token and eos_token and raise_exception", async () => {
    const { copyFileSync, mkdtempSync, writeFileSync } = await import("node:fs");
    const { tmpdir } = await import("node:os");
    const dir = mkdtempSync(join(tmpdir(), "tpserve-tok-"));
    copyFileSync(join(MODEL, "tokenizer.json"), join(dir, "tokenizer.json"));
    const chat_template =
      "{{ bos_token }}{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('bad role') }}{% endif %}" +
      "[{{ m.role }}] {{ m.content }}{{ eos_token }}{% endfor %}";
    writeFileSync(
      join(dir, "tokenizer_config.json"),
      JSON.stringify({ bos_token: "<s>", eos_token: { content: "</s>" }, chat_template }),
    );
    const tok = loadTokenizer(dir);
    expect(tok.eosTokenId).toBe(2);
    expect(tok.applyChatTemplate([{ role: "user", content: "x" }])).toBe("<s>[user] x</s>");
    expect(() => tok.applyChatTemplate([{ role: "bad", content: "x" }])).toThrow(/bad role/);
  });
});
