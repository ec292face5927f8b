// A small random Llama checkpoint in a temp folder (config.json, one bf16 safetensors file, the bundled model's
// tokenizer files), for tests that need shapes the bundled model does not have: e.g. 8 KV heads, so a group of 8
// ranks splits every head instead of replicating. Weights are seeded, so every run writes the same bytes.
import { copyFileSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fromFloat32, type WriteTensor, writeSafetensors } from "../../services/common/model/safetensors.js";
import { bundledModelDir } from "../../services/common/paths.js";

export interface TinyLlamaShape {
  hidden: number;
  heads: number;
  kvHeads: number;
  headDim: number;
  intermediate: number;
  layers: number;
  /** The bundled tokenizer's 4096 unless a test does not go through it. */
  vocab: number;
  tied: boolean;
}

export interface TinyLlama {
  dir: string;
  shape: TinyLlamaShape;
  remove(): void;
}

/** mulberry32 uniform (0, 1), then Box-Muller: seeded normal values. */
function normals(seed: number): (n: number, std: number) => Float32Array {
  let s = seed >>> 0;
  const uniform = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return (n, std) => {
    const out = new Float32Array(n);
    for (let i = 0; i < n; i += 2) {
      const r = Math.sqrt(-2 * Math.log(uniform())) * std;
      const a = 2 * Math.PI * uniform();
      out[i] = r * Math.cos(a);
      if (i + 1 < n) out[i + 1] = r * Math.sin(a);
    }
    return out;
  };
}

/**
 * Writes the checkpoint. Scales are chosen so the model is not degenerate: embeddings and the LM head with
 * standard deviation 0.5 and 0.1 (logits of a unit-RMS hidden state spread by ~1.6), linears with 1/sqrt(fan-in)
 * (each layer's contribution is as large as the residual stream, so the context changes the next token), norms 1.
 */
export function writeTinyLlama(shape: TinyLlamaShape, seed = 1234): TinyLlama {
  const dir = mkdtempSync(join(tmpdir(), "tpserve-tiny-llama-"));
  const { hidden: h, heads, kvHeads, headDim, intermediate: inter, layers, vocab, tied } = shape;
  const normal = normals(seed);
  const tensors: Record<string, WriteTensor> = {};
  const put = (name: string, dims: number[], values: Float32Array) => {
    tensors[name] = { dtype: "BF16", shape: dims, data: fromFloat32(values, "BF16") };
  };
  const linear = (name: string, rows: number, cols: number) =>
    put(name, [rows, cols], normal(rows * cols, cols ** -0.5));
  const ones = (name: string) => put(name, [h], new Float32Array(h).fill(1));
  put("model.embed_tokens.weight", [vocab, h], normal(vocab * h, 0.5));
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    ones(`${p}.input_layernorm.weight`);
    linear(`${p}.self_attn.q_proj.weight`, heads * headDim, h);
    linear(`${p}.self_attn.k_proj.weight`, kvHeads * headDim, h);
    linear(`${p}.self_attn.v_proj.weight`, kvHeads * headDim, h);
    linear(`${p}.self_attn.o_proj.weight`, h, heads * headDim);
    ones(`${p}.post_attention_layernorm.weight`);
    linear(`${p}.mlp.gate_proj.weight`, inter, h);
    linear(`${p}.mlp.up_proj.weight`, inter, h);
    linear(`${p}.mlp.down_proj.weight`, h, inter);
  }
  ones("model.norm.weight");
  if (!tied) put("lm_head.weight", [vocab, h], normal(vocab * h, 0.1));
  writeSafetensors(join(dir, "model.safetensors"), tensors, { format: "pt" });
  const config = {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: h,
    intermediate_size: inter,
    num_attention_heads: heads,
    num_key_value_heads: kvHeads,
    head_dim: headDim,
    num_hidden_layers: layers,
    vocab_size: vocab,
    tie_word_embeddings: tied,
    max_position_embeddings: 1024,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    bos_token_id: 1,
    eos_token_id: 2,
    torch_dtype: "bfloat16",
  };
  writeFileSync(join(dir, "config.json"), `${JSON.stringify(config, null, 2)}\n`);
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(bundledModelDir(), f), join(dir, f));
  return { dir, shape, remove: () => rmSync(dir, { recursive: true, force: true }) };
}
