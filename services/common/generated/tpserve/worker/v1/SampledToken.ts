// Original file: proto/tpserve/worker/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface SampledToken {
  'seqId'?: (number | string | Long);
  'token'?: (number);
  /**
   * Set when the worker ended the sequence itself (EOS or max_new_tokens).
   */
  'finished'?: (boolean);
  'eos'?: (boolean);
}

export interface SampledToken__Output {
  'seqId': (number);
  'token': (number);
  /**
   * Set when the worker ended the sequence itself (EOS or max_new_tokens).
   */
  'finished': (boolean);
  'eos': (boolean);
}
