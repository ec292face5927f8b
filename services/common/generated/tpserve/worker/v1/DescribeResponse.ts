// Original file: proto/tpserve/worker/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface DescribeResponse {
  'model'?: (string);
  'vocabSize'?: (number);
  'maxContext'?: (number);
  /**
   * KV pool size including the reserved page 0
   */
  'numPages'?: (number);
  'blockSize'?: (number);
  'backend'?: (string);
  'backendReason'?: (string);
  'quantization'?: (string);
  'eosTokenId'?: (number);
  'tpRank'?: (number);
  'tpSize'?: (number);
  'epoch'?: (number | string | Long);
  /**
   * most tokens one plan may carry
   */
  'maxBatchTokens'?: (number);
  'eosTokenIds'?: (number)[];
}

export interface DescribeResponse__Output {
  'model': (string);
  'vocabSize': (number);
  'maxContext': (number);
  /**
   * KV pool size including the reserved page 0
   */
  'numPages': (number);
  'blockSize': (number);
  'backend': (string);
  'backendReason': (string);
  'quantization': (string);
  'eosTokenId': (number);
  'tpRank': (number);
  'tpSize': (number);
  'epoch': (number);
  /**
   * most tokens one plan may carry
   */
  'maxBatchTokens': (number);
  'eosTokenIds': (number)[];
}
