// Original file: proto/tpserve/v1/generation.proto

import type { TokenIds as _tpserve_v1_TokenIds, TokenIds__Output as _tpserve_v1_TokenIds__Output } from '../../tpserve/v1/TokenIds';

export interface EmbedRequest {
  'text'?: (string);
  'tokenIds'?: (_tpserve_v1_TokenIds | null);
  'requestId'?: (string);
  'input'?: "text"|"tokenIds";
}

export interface EmbedRequest__Output {
  'text'?: (string);
  'tokenIds'?: (_tpserve_v1_TokenIds__Output | null);
  'requestId': (string);
  'input'?: "text"|"tokenIds";
}
