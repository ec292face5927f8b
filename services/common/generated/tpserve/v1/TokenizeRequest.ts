// Original file: proto/tpserve/v1/generation.proto


export interface TokenizeRequest {
  'text'?: (string);
  'addSpecialTokens'?: (boolean);
  '_addSpecialTokens'?: "addSpecialTokens";
}

export interface TokenizeRequest__Output {
  'text': (string);
  'addSpecialTokens'?: (boolean);
  '_addSpecialTokens'?: "addSpecialTokens";
}
