// Original file: proto/tpserve/v1/generation.proto

import type { FinishReason as _tpserve_v1_FinishReason, FinishReason__Output as _tpserve_v1_FinishReason__Output } from '../../tpserve/v1/FinishReason';
import type { Usage as _tpserve_v1_Usage, Usage__Output as _tpserve_v1_Usage__Output } from '../../tpserve/v1/Usage';

export interface GenerateChunk {
  'requestId'?: (string);
  /**
   * tokens sampled since the previous chunk
   */
  'tokenIds'?: (number)[];
  /**
   * text delta (UTF-8 safe: never half a character)
   */
  'text'?: (string);
  /**
   * set on the last chunk only
   */
  'finishReason'?: (_tpserve_v1_FinishReason);
  /**
   * set on the last chunk only
   */
  'usage'?: (_tpserve_v1_Usage | null);
}

export interface GenerateChunk__Output {
  'requestId': (string);
  /**
   * tokens sampled since the previous chunk
   */
  'tokenIds': (number)[];
  /**
   * text delta (UTF-8 safe: never half a character)
   */
  'text': (string);
  /**
   * set on the last chunk only
   */
  'finishReason': (_tpserve_v1_FinishReason__Output);
  /**
   * set on the last chunk only
   */
  'usage': (_tpserve_v1_Usage__Output | null);
}
