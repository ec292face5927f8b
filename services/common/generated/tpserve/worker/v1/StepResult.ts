// Original file: proto/tpserve/worker/v1/worker.proto

import type { SampledToken as _tpserve_worker_v1_SampledToken, SampledToken__Output as _tpserve_worker_v1_SampledToken__Output } from '../../../tpserve/worker/v1/SampledToken';
import type { Long } from '@grpc/proto-loader';

export interface StepResult {
  'stepId'?: (number | string | Long);
  /**
   * 0 .. decode_steps-1
   */
  'subStep'?: (number);
  /**
   * the last result for this plan
   */
  'last'?: (boolean);
  'tokens'?: (_tpserve_worker_v1_SampledToken)[];
  'forwardMs'?: (number | string);
  /**
   * Set instead of tokens when the step failed; the router fails the step's sequences with it.
   */
  'errorCode'?: (string);
  'errorMessage'?: (string);
}

export interface StepResult__Output {
  'stepId': (number);
  /**
   * 0 .. decode_steps-1
   */
  'subStep': (number);
  /**
   * the last result for this plan
   */
  'last': (boolean);
  'tokens': (_tpserve_worker_v1_SampledToken__Output)[];
  'forwardMs': (number);
  /**
   * Set instead of tokens when the step failed; the router fails the step's sequences with it.
   */
  'errorCode': (string);
  'errorMessage': (string);
}
