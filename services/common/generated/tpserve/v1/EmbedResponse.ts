// Original file: proto/tpserve/v1/generation.proto


export interface EmbedResponse {
  'values'?: (number | string)[];
  'promptTokens'?: (number);
}

export interface EmbedResponse__Output {
  'values': (number)[];
  'promptTokens': (number);
}
