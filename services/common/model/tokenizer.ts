// Tokenizer: @huggingface/tokenizers over tokenizer.json + tokenizer_config.json, and the chat template through
// @huggingface/jinja.
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";
import { Template } from "@huggingface/jinja";
import { Tokenizer } from "@huggingface/tokenizers";
import { ModelLoadError } from "../errors.js";

export interface ChatMessage {
  role: string;
  content: string;
}

export interface TpTokenizer {
  encode(text: string, opts?: { addSpecialTokens?: boolean }): number[];
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  idToToken(id: number): string | undefined;
  tokenToId(token: string): number | undefined;
  readonly bosTokenId: number | undefined;
  readonly eosTokenId: number | undefined;
  readonly bosToken: string | undefined;
  readonly eosToken: string | undefined;
  /** One more than the largest token id (vocab plus added tokens). */
  readonly vocabSize: number;
  readonly hasChatTemplate: boolean;
  /** The chat template's Jinja source, or "" when the model has none. */
  readonly chatTemplate: string;
  applyChatTemplate(messages: ChatMessage[], opts?: { addGenerationPrompt?: boolean }): string;
}

type Obj = Record<string, unknown>;

function readJson(path: string): Obj {
  let v: unknown;
  try {
    v = JSON.parse(readFileSync(path, "utf8"));
  } catch (e) {
    throw new ModelLoadError(`cannot read ${path}: ${(e as Error).message}`);
  }
  if (typeof v !== "object" || v === null || Array.isArray(v)) throw new ModelLoadError(`${path}: not a JSON object`);
  return v as Obj;
}

/** tokenizer_config.json gives special tokens as a string or as an AddedToken object {content: ...}. */
function tokenString(v: unknown): string | undefined {
  if (typeof v === "string") return v;
  if (typeof v === "object" && v !== null && typeof (v as Obj)["content"] === "string") {
    return (v as Obj)["content"] as string;
  }
  return undefined;
}

function findChatTemplate(dir: string, cfg: Obj): string | undefined {
  const t = cfg["chat_template"];
  if (typeof t === "string") return t;
  if (Array.isArray(t)) {
    // [{name, template}], as transformers saves several named templates.
    for (const e of t) {
      if (typeof e === "object" && e !== null && (e as Obj)["name"] === "default") {
        const tpl = (e as Obj)["template"];
        if (typeof tpl === "string") return tpl;
      }
    }
  }
  const file = join(dir, "chat_template.jinja");
  if (existsSync(file)) return readFileSync(file, "utf8");
  return undefined;
}

/** Loads `dir/tokenizer.json` and `dir/tokenizer_config.json` (the latter optional). */
export function loadTokenizer(dir: string): TpTokenizer {
  const tokJsonPath = join(dir, "tokenizer.json");
  if (!existsSync(tokJsonPath))
    throw new ModelLoadError(`${dir}: no tokenizer.json (only fast tokenizers are supported)`);
  const tokJson = readJson(tokJsonPath);
  const cfgPath = join(dir, "tokenizer_config.json");
  const cfg = existsSync(cfgPath) ? readJson(cfgPath) : {};
  let tok: Tokenizer;
  try {
    tok = new Tokenizer(tokJson, cfg);
  } catch (e) {
    throw new ModelLoadError(`${tokJsonPath}: cannot build tokenizer: ${(e as Error).message}`);
  }

  const bosToken = tokenString(cfg["bos_token"]);
  const eosToken = tokenString(cfg["eos_token"]);
  const bosTokenId = bosToken === undefined ? undefined : tok.token_to_id(bosToken);
  const eosTokenId = eosToken === undefined ? undefined : tok.token_to_id(eosToken);
  let maxId = -1;
  for (const id of tok.get_vocab(true).values()) if (id > maxId) maxId = id;

  const templateSrc = findChatTemplate(dir, cfg);
  let template: Template | undefined;
  const specials: Obj = {};
  for (const key of ["bos_token", "eos_token", "unk_token", "pad_token"]) {
    const s = tokenString(cfg[key]);
    if (s !== undefined) specials[key] = s;
  }

  return {
    encode: (text, opts) => tok.encode(text, { add_special_tokens: opts?.addSpecialTokens ?? true }).ids,
    decode: (ids, opts) => tok.decode(ids, { skip_special_tokens: opts?.skipSpecialTokens ?? false }),
    idToToken: (id) => tok.id_to_token(id),
    tokenToId: (token) => tok.token_to_id(token),
    bosTokenId,
    eosTokenId,
    bosToken,
    eosToken,
    vocabSize: maxId + 1,
    hasChatTemplate: templateSrc !== undefined,
    chatTemplate: templateSrc ?? "",
    applyChatTemplate(messages, opts) {
      if (templateSrc === undefined) throw new ModelLoadError(`${dir}: the tokenizer has no chat_template`);
      if (!template) {
        try {
          template = new Template(templateSrc);
        } catch (e) {
          throw new ModelLoadError(`${cfgPath}: chat_template does not parse: ${(e as Error).message}`);
        }
      }
      return template.render({
        ...specials,
        messages,
        add_generation_prompt: opts?.addGenerationPrompt ?? false,
      });
    },
  };
}
