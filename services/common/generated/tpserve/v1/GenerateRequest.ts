// Original file: proto/tpserve/v1/generation.proto

import type { TokenIds as _tpserve_v1_TokenIds, TokenIds__Output as _tpserve_v1_TokenIds__Output } from '../../tpserve/v1/TokenIds';
import type { SamplingParams as _tpserve_v1_SamplingParams, SamplingParams__Output as _tpserve_v1_SamplingParams__Output } from '../../tpserve/v1/SamplingParams';

export interface GenerateRequest {
  /**
   * Optional client-chosen id, echoed in every chunk; the router makes one when empty.
   */
  'requestId'?: (string);
  /**
   * prompt text; BOS is added as the tokenizer's post-processor says
   */
  'text'?: (string);
  /**
   * prompt already tokenized
   */
  'tokenIds'?: (_tpserve_v1_TokenIds | null);
  'sampling'?: (_tpserve_v1_SamplingParams | null);
  /**
   * Cap on generated tokens: 1 ..= max_context - prompt length. Unset means "up to the context".
   */
  'maxTokens'?: (number);
  /**
   * Generation stops when the text contains one of these; the stop string is not returned.
   */
  'stop'?: (string)[];
  /**
   * Keep generating after EOS.
   */
  'ignoreEos'?: (boolean);
  /**
   * Add BOS (and other special tokens) when tokenizing `text`. Default true when unset.
   */
  'addSpecialTokens'?: (boolean);
  'prompt'?: "text"|"tokenIds";
  '_maxTokens'?: "maxTokens";
  '_addSpecialTokens'?: "addSpecialTokens";
}

export interface GenerateRequest__Output {
  /**
   * Optional client-chosen id, echoed in every chunk; the router makes one when empty.
   */
  'requestId': (string);
  /**
   * prompt text; BOS is added as the tokenizer's post-processor says
   */
  'text'?: (string);
  /**
   * prompt already tokenized
   */
  'tokenIds'?: (_tpserve_v1_TokenIds__Output | null);
  'sampling': (_tpserve_v1_SamplingParams__Output | null);
  /**
   * Cap on generated tokens: 1 ..= max_context - prompt length. Unset means "up to the context".
   */
  'maxTokens'?: (number);
  /**
   * Generation stops when the text contains one of these; the stop string is not returned.
   */
  'stop': (string)[];
  /**
   * Keep generating after EOS.
   */
  'ignoreEos': (boolean);
  /**
   * Add BOS (and other special tokens) when tokenizing `text`. Default true when unset.
   */
  'addSpecialTokens'?: (boolean);
  'prompt'?: "text"|"tokenIds";
  '_maxTokens'?: "maxTokens";
  '_addSpecialTokens'?: "addSpecialTokens";
}
