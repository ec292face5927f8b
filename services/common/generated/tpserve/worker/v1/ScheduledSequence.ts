// Original file: proto/tpserve/worker/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

/**
 * Work for one sequence in this step.
 */
export interface ScheduledSequence {
  'seqId'?: (number | string | Long);
  /**
   * Tokens to compute in this step: a prefill chunk (from the worker's copy of the prompt) or 1 for decode.
   */
  'numTokens'?: (number);
  /**
   * Pages appended to the sequence's block table before this step.
   */
  'newPages'?: (number)[];
}

/**
 * Work for one sequence in this step.
 */
export interface ScheduledSequence__Output {
  'seqId': (number);
  /**
   * Tokens to compute in this step: a prefill chunk (from the worker's copy of the prompt) or 1 for decode.
   */
  'numTokens': (number);
  /**
   * Pages appended to the sequence's block table before this step.
   */
  'newPages': (number)[];
}
