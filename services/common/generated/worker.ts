import type * as grpc from '@grpc/grpc-js';
import type { MessageTypeDefinition } from '@grpc/proto-loader';

import type { DescribeRequest as _tpserve_worker_v1_DescribeRequest, DescribeRequest__Output as _tpserve_worker_v1_DescribeRequest__Output } from './tpserve/worker/v1/DescribeRequest';
import type { DescribeResponse as _tpserve_worker_v1_DescribeResponse, DescribeResponse__Output as _tpserve_worker_v1_DescribeResponse__Output } from './tpserve/worker/v1/DescribeResponse';
import type { NewSequence as _tpserve_worker_v1_NewSequence, NewSequence__Output as _tpserve_worker_v1_NewSequence__Output } from './tpserve/worker/v1/NewSequence';
import type { SampledToken as _tpserve_worker_v1_SampledToken, SampledToken__Output as _tpserve_worker_v1_SampledToken__Output } from './tpserve/worker/v1/SampledToken';
import type { Sampling as _tpserve_worker_v1_Sampling, Sampling__Output as _tpserve_worker_v1_Sampling__Output } from './tpserve/worker/v1/Sampling';
import type { ScheduledSequence as _tpserve_worker_v1_ScheduledSequence, ScheduledSequence__Output as _tpserve_worker_v1_ScheduledSequence__Output } from './tpserve/worker/v1/ScheduledSequence';
import type { StepPlan as _tpserve_worker_v1_StepPlan, StepPlan__Output as _tpserve_worker_v1_StepPlan__Output } from './tpserve/worker/v1/StepPlan';
import type { StepResult as _tpserve_worker_v1_StepResult, StepResult__Output as _tpserve_worker_v1_StepResult__Output } from './tpserve/worker/v1/StepResult';
import type { WorkerClient as _tpserve_worker_v1_WorkerClient, WorkerDefinition as _tpserve_worker_v1_WorkerDefinition } from './tpserve/worker/v1/Worker';
import type { WorkerEmbedRequest as _tpserve_worker_v1_WorkerEmbedRequest, WorkerEmbedRequest__Output as _tpserve_worker_v1_WorkerEmbedRequest__Output } from './tpserve/worker/v1/WorkerEmbedRequest';
import type { WorkerEmbedResponse as _tpserve_worker_v1_WorkerEmbedResponse, WorkerEmbedResponse__Output as _tpserve_worker_v1_WorkerEmbedResponse__Output } from './tpserve/worker/v1/WorkerEmbedResponse';
import type { WorkerStats as _tpserve_worker_v1_WorkerStats, WorkerStats__Output as _tpserve_worker_v1_WorkerStats__Output } from './tpserve/worker/v1/WorkerStats';
import type { WorkerStatsRequest as _tpserve_worker_v1_WorkerStatsRequest, WorkerStatsRequest__Output as _tpserve_worker_v1_WorkerStatsRequest__Output } from './tpserve/worker/v1/WorkerStatsRequest';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tpserve: {
    worker: {
      v1: {
        DescribeRequest: MessageTypeDefinition<_tpserve_worker_v1_DescribeRequest, _tpserve_worker_v1_DescribeRequest__Output>
        DescribeResponse: MessageTypeDefinition<_tpserve_worker_v1_DescribeResponse, _tpserve_worker_v1_DescribeResponse__Output>
        NewSequence: MessageTypeDefinition<_tpserve_worker_v1_NewSequence, _tpserve_worker_v1_NewSequence__Output>
        SampledToken: MessageTypeDefinition<_tpserve_worker_v1_SampledToken, _tpserve_worker_v1_SampledToken__Output>
        Sampling: MessageTypeDefinition<_tpserve_worker_v1_Sampling, _tpserve_worker_v1_Sampling__Output>
        ScheduledSequence: MessageTypeDefinition<_tpserve_worker_v1_ScheduledSequence, _tpserve_worker_v1_ScheduledSequence__Output>
        StepPlan: MessageTypeDefinition<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepPlan__Output>
        StepResult: MessageTypeDefinition<_tpserve_worker_v1_StepResult, _tpserve_worker_v1_StepResult__Output>
        Worker: SubtypeConstructor<typeof grpc.Client, _tpserve_worker_v1_WorkerClient> & { service: _tpserve_worker_v1_WorkerDefinition }
        WorkerEmbedRequest: MessageTypeDefinition<_tpserve_worker_v1_WorkerEmbedRequest, _tpserve_worker_v1_WorkerEmbedRequest__Output>
        WorkerEmbedResponse: MessageTypeDefinition<_tpserve_worker_v1_WorkerEmbedResponse, _tpserve_worker_v1_WorkerEmbedResponse__Output>
        WorkerStats: MessageTypeDefinition<_tpserve_worker_v1_WorkerStats, _tpserve_worker_v1_WorkerStats__Output>
        WorkerStatsRequest: MessageTypeDefinition<_tpserve_worker_v1_WorkerStatsRequest, _tpserve_worker_v1_WorkerStatsRequest__Output>
      }
    }
  }
}

