// Original file: proto/tpserve/worker/v1/worker.proto

import type { NewSequence as _tpserve_worker_v1_NewSequence, NewSequence__Output as _tpserve_worker_v1_NewSequence__Output } from '../../../tpserve/worker/v1/NewSequence';
import type { ScheduledSequence as _tpserve_worker_v1_ScheduledSequence, ScheduledSequence__Output as _tpserve_worker_v1_ScheduledSequence__Output } from '../../../tpserve/worker/v1/ScheduledSequence';
import type { Long } from '@grpc/proto-loader';

export interface StepPlan {
  'stepId'?: (number | string | Long);
  'epoch'?: (number | string | Long);
  'newSequences'?: (_tpserve_worker_v1_NewSequence)[];
  'scheduled'?: (_tpserve_worker_v1_ScheduledSequence)[];
  /**
   * Sequences to forget (finished, cancelled or preempted); their pages return to the router's pool.
   */
  'drop'?: (number | string | Long)[];
  /**
   * When > 1 and the plan is decode only, the worker runs up to this many decode steps back to back,
   * answering each with its own result (pages for all of them are already in the block tables).
   */
  'decodeSteps'?: (number);
}

export interface StepPlan__Output {
  'stepId': (number);
  'epoch': (number);
  'newSequences': (_tpserve_worker_v1_NewSequence__Output)[];
  'scheduled': (_tpserve_worker_v1_ScheduledSequence__Output)[];
  /**
   * Sequences to forget (finished, cancelled or preempted); their pages return to the router's pool.
   */
  'drop': (number)[];
  /**
   * When > 1 and the plan is decode only, the worker runs up to this many decode steps back to back,
   * answering each with its own result (pages for all of them are already in the block tables).
   */
  'decodeSteps': (number);
}
