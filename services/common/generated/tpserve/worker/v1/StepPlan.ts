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
  /**
   * When set, this message is not a plan: it asks the worker to end plan `cut_step_id` after the decode step in
   * progress (that step's result becomes the last), because the router has new work (a request waiting, or every
   * sequence of the plan ended at the router). Every other field is ignored; a cut for a plan that has ended
   * already does nothing.
   */
  'cutStepId'?: (number | string | Long);
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
  /**
   * When set, this message is not a plan: it asks the worker to end plan `cut_step_id` after the decode step in
   * progress (that step's result becomes the last), because the router has new work (a request waiting, or every
   * sequence of the plan ended at the router). Every other field is ignored; a cut for a plan that has ended
   * already does nothing.
   */
  'cutStepId': (number);
}
