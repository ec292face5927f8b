// Original file: proto/tpserve/v1/generation.proto


export interface TokenizeResponse {
  'ids'?: (number)[];
  'tokens'?: (string)[];
}

export interface TokenizeResponse__Output {
  'ids': (number)[];
  'tokens': (string)[];
}
