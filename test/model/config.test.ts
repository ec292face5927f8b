import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { ModelLoadError } from "../../services/common/errors.js";
import { loadModelConfig, modelConfigFromJson, toModelShape } from "../../services/common/model/config.js";

const MODEL = join(import.meta.dirname, "../../models/tinyllama-brown");

const base = {
  model_type: "llama",
  vocab_size: 100,
  hidden_size: 64,
  intermediate_size: 128,
  num_hidden_layers: 2,
  num_attention_heads: 4,
  max_position_embeddings: 256,
};

describe("model config", () => {
  it("loads the bundled model (rope_parameters form)", () => {
    const cfg = loadModelConfig(MODEL);
    expect(cfg).toMatchObject({
      vocabSize: 4096,
      hiddenSize: 256,
      intermediateSize: 768,
      numLayers: 8,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 64,
      ropeTheta: 10000,
      rmsNormEps: 1e-5,
      tieWordEmbeddings: true,
      bosTokenId: 1,
      eosTokenIds: [2],
      maxPositionEmbeddings: 1024,
      dtype: "bf16",
    });
    expect(toModelShape(cfg)).toEqual({
      vocabSize: 4096,
      hiddenSize: 256,
      intermediateSize: 768,
      numLayers: 8,
      numHeads: 4,
      numKvHeads: 2,
      headDim: 64,
      ropeTheta: 10000,
      rmsNormEps: 1e-5,
      tieWordEmbeddings: true,
    });
  });

  it("supports top-level rope_theta and defaults", () => {
    const cfg = modelConfigFromJson({ ...base, rope_theta: 500000, eos_token_id: [7, 8], torch_dtype: "float16" });
    expect(cfg.ropeTheta).toBe(500000);
    expect(cfg.headDim).toBe(16);
    expect(cfg.numKvHeads).toBe(4);
    expect(cfg.tieWordEmbeddings).toBe(false);
    expect(cfg.eosTokenIds).toEqual([7, 8]);
    expect(cfg.bosTokenId).toBeUndefined();
    expect(cfg.dtype).toBe("f16");
  });

  it("supports rope_parameters without a top-level rope_theta", () => {
    const cfg = modelConfigFromJson({ ...base, rope_parameters: { rope_theta: 1e6, rope_type: "default" } });
    expect(cfg.ropeTheta).toBe(1e6);
  });

  it("refuses scaled RoPE in either form", () => {
    expect(() => modelConfigFromJson({ ...base, rope_parameters: { rope_theta: 5e5, rope_type: "llama3" } })).toThrow(
      /rope_type = "llama3" is not supported/,
    );
    expect(() => modelConfigFromJson({ ...base, rope_scaling: { type: "linear", factor: 2 } })).toThrow(
      /rope_scaling.rope_type = "linear"/,
    );
  });

  it("names the bad field", () => {
    const { hidden_size: _, ...noHidden } = base;
    expect(() => modelConfigFromJson(noHidden)).toThrow(ModelLoadError);
    expect(() => modelConfigFromJson(noHidden)).toThrow(/"hidden_size"/);
    expect(() => modelConfigFromJson({ ...base, num_hidden_layers: -1 })).toThrow(
      /"num_hidden_layers" must be a positive/,
    );
    expect(() => modelConfigFromJson({ ...base, num_key_value_heads: 3 })).toThrow(/not a multiple/);
    expect(() => modelConfigFromJson({ ...base, model_type: "gpt2" })).toThrow(/model_type "gpt2"/);
    expect(() => modelConfigFromJson({ ...base, attention_bias: true })).toThrow(/attention_bias/);
    expect(() => modelConfigFromJson({ ...base, eos_token_id: "x" })).toThrow(/eos_token_id/);
  });

  it("reports unreadable or invalid config.json with its path", () => {
    const dir = mkdtempSync(join(tmpdir(), "tpserve-cfg-"));
    expect(() => loadModelConfig(dir)).toThrow(/config\.json/);
    writeFileSync(join(dir, "config.json"), "{not json");
    expect(() => loadModelConfig(dir)).toThrow(/not valid JSON/);
  });
});
