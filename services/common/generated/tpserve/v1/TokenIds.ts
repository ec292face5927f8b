// Original file: proto/tpserve/v1/generation.proto


export interface TokenIds {
  'ids'?: (number)[];
}

export interface TokenIds__Output {
  'ids': (number)[];
}
