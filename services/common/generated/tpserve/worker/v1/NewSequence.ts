// Original file: proto/tpserve/worker/v1/worker.proto

import type { Sampling as _tpserve_worker_v1_Sampling, Sampling__Output as _tpserve_worker_v1_Sampling__Output } from '../../../tpserve/worker/v1/Sampling';
import type { Long } from '@grpc/proto-loader';

/**
 * A sequence the worker has not seen yet (or sees again after preemption).
 */
export interface NewSequence {
  'seqId'?: (number | string | Long);
  /**
   * prompt (plus tokens generated before a preemption)
   */
  'tokens'?: (number)[];
  'sampling'?: (_tpserve_worker_v1_Sampling | null);
  /**
   * tokens already generated (after preemption); seeds the sampler position
   */
  'numGenerated'?: (number);
  /**
   * the worker stops the sequence itself at this count
   */
  'maxNewTokens'?: (number);
  'ignoreEos'?: (boolean);
  /**
   * the public request id, for the worker's logs
   */
  'requestId'?: (string);
  /**
   * Leading tokens whose K/V are already on the sequence's first pages (prefix cache hits): the first
   * ScheduledSequence computes from here. A multiple of the block size, less than len(tokens).
   */
  'numComputed'?: (number);
}

/**
 * A sequence the worker has not seen yet (or sees again after preemption).
 */
export interface NewSequence__Output {
  'seqId': (number);
  /**
   * prompt (plus tokens generated before a preemption)
   */
  'tokens': (number)[];
  'sampling': (_tpserve_worker_v1_Sampling__Output | null);
  /**
   * tokens already generated (after preemption); seeds the sampler position
   */
  'numGenerated': (number);
  /**
   * the worker stops the sequence itself at this count
   */
  'maxNewTokens': (number);
  'ignoreEos': (boolean);
  /**
   * the public request id, for the worker's logs
   */
  'requestId': (string);
  /**
   * Leading tokens whose K/V are already on the sequence's first pages (prefix cache hits): the first
   * ScheduledSequence computes from here. A multiple of the block size, less than len(tokens).
   */
  'numComputed': (number);
}
