// Original file: proto/tpserve/v1/generation.proto


export interface ModelInfoResponse {
  'model'?: (string);
  'vocabSize'?: (number);
  'maxContext'?: (number);
  'bosTokenId'?: (number);
  'eosTokenId'?: (number);
  /**
   * "none" or "int4-g128-sym" ...
   */
  'quantization'?: (string);
  /**
   * "cpu" ...
   */
  'backend'?: (string);
  'blockSize'?: (number);
  'numPages'?: (number);
  'maxConcurrentRequests'?: (number);
  'maxQueue'?: (number);
  'chatTemplate'?: (string);
}

export interface ModelInfoResponse__Output {
  'model': (string);
  'vocabSize': (number);
  'maxContext': (number);
  'bosTokenId': (number);
  'eosTokenId': (number);
  /**
   * "none" or "int4-g128-sym" ...
   */
  'quantization': (string);
  /**
   * "cpu" ...
   */
  'backend': (string);
  'blockSize': (number);
  'numPages': (number);
  'maxConcurrentRequests': (number);
  'maxQueue': (number);
  'chatTemplate': (string);
}
