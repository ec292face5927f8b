// Original file: proto/tpserve/worker/v1/worker.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { DescribeRequest as _tpserve_worker_v1_DescribeRequest, DescribeRequest__Output as _tpserve_worker_v1_DescribeRequest__Output } from '../../../tpserve/worker/v1/DescribeRequest';
import type { DescribeResponse as _tpserve_worker_v1_DescribeResponse, DescribeResponse__Output as _tpserve_worker_v1_DescribeResponse__Output } from '../../../tpserve/worker/v1/DescribeResponse';
import type { StepPlan as _tpserve_worker_v1_StepPlan, StepPlan__Output as _tpserve_worker_v1_StepPlan__Output } from '../../../tpserve/worker/v1/StepPlan';
import type { StepResult as _tpserve_worker_v1_StepResult, StepResult__Output as _tpserve_worker_v1_StepResult__Output } from '../../../tpserve/worker/v1/StepResult';
import type { WorkerEmbedRequest as _tpserve_worker_v1_WorkerEmbedRequest, WorkerEmbedRequest__Output as _tpserve_worker_v1_WorkerEmbedRequest__Output } from '../../../tpserve/worker/v1/WorkerEmbedRequest';
import type { WorkerEmbedResponse as _tpserve_worker_v1_WorkerEmbedResponse, WorkerEmbedResponse__Output as _tpserve_worker_v1_WorkerEmbedResponse__Output } from '../../../tpserve/worker/v1/WorkerEmbedResponse';
import type { WorkerStats as _tpserve_worker_v1_WorkerStats, WorkerStats__Output as _tpserve_worker_v1_WorkerStats__Output } from '../../../tpserve/worker/v1/WorkerStats';
import type { WorkerStatsRequest as _tpserve_worker_v1_WorkerStatsRequest, WorkerStatsRequest__Output as _tpserve_worker_v1_WorkerStatsRequest__Output } from '../../../tpserve/worker/v1/WorkerStatsRequest';

export interface WorkerClient extends grpc.Client {
  /**
   * Describe returns what the worker has loaded (model, pool size, backend).
   */
  Describe(argument: _tpserve_worker_v1_DescribeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  Describe(argument: _tpserve_worker_v1_DescribeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  Describe(argument: _tpserve_worker_v1_DescribeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  Describe(argument: _tpserve_worker_v1_DescribeRequest, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Describe returns what the worker has loaded (model, pool size, backend).
   */
  describe(argument: _tpserve_worker_v1_DescribeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  describe(argument: _tpserve_worker_v1_DescribeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  describe(argument: _tpserve_worker_v1_DescribeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  describe(argument: _tpserve_worker_v1_DescribeRequest, callback: grpc.requestCallback<_tpserve_worker_v1_DescribeResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Embed runs a prompt through the model on pages reserved for it (outside the router's pool) and returns the
   * mean-pooled final hidden state, L2-normalized.
   */
  Embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Embed runs a prompt through the model on pages reserved for it (outside the router's pool) and returns the
   * mean-pooled final hidden state, L2-normalized.
   */
  embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_worker_v1_WorkerEmbedRequest, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerEmbedResponse__Output>): grpc.ClientUnaryCall;
  
  Stats(argument: _tpserve_worker_v1_WorkerStatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_worker_v1_WorkerStatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_worker_v1_WorkerStatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_worker_v1_WorkerStatsRequest, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_worker_v1_WorkerStatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_worker_v1_WorkerStatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_worker_v1_WorkerStatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_worker_v1_WorkerStatsRequest, callback: grpc.requestCallback<_tpserve_worker_v1_WorkerStats__Output>): grpc.ClientUnaryCall;
  
  /**
   * Steps is the one long-lived stream: the router sends plans, the worker answers each step with a result.
   */
  Steps(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepResult__Output>;
  Steps(options?: grpc.CallOptions): grpc.ClientDuplexStream<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepResult__Output>;
  /**
   * Steps is the one long-lived stream: the router sends plans, the worker answers each step with a result.
   */
  steps(metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientDuplexStream<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepResult__Output>;
  steps(options?: grpc.CallOptions): grpc.ClientDuplexStream<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepResult__Output>;
  
}

export interface WorkerHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Describe returns what the worker has loaded (model, pool size, backend).
   */
  Describe: grpc.handleUnaryCall<_tpserve_worker_v1_DescribeRequest__Output, _tpserve_worker_v1_DescribeResponse>;
  
  /**
   * Embed runs a prompt through the model on pages reserved for it (outside the router's pool) and returns the
   * mean-pooled final hidden state, L2-normalized.
   */
  Embed: grpc.handleUnaryCall<_tpserve_worker_v1_WorkerEmbedRequest__Output, _tpserve_worker_v1_WorkerEmbedResponse>;
  
  Stats: grpc.handleUnaryCall<_tpserve_worker_v1_WorkerStatsRequest__Output, _tpserve_worker_v1_WorkerStats>;
  
  /**
   * Steps is the one long-lived stream: the router sends plans, the worker answers each step with a result.
   */
  Steps: grpc.handleBidiStreamingCall<_tpserve_worker_v1_StepPlan__Output, _tpserve_worker_v1_StepResult>;
  
}

export interface WorkerDefinition extends grpc.ServiceDefinition {
  Describe: MethodDefinition<_tpserve_worker_v1_DescribeRequest, _tpserve_worker_v1_DescribeResponse, _tpserve_worker_v1_DescribeRequest__Output, _tpserve_worker_v1_DescribeResponse__Output>
  Embed: MethodDefinition<_tpserve_worker_v1_WorkerEmbedRequest, _tpserve_worker_v1_WorkerEmbedResponse, _tpserve_worker_v1_WorkerEmbedRequest__Output, _tpserve_worker_v1_WorkerEmbedResponse__Output>
  Stats: MethodDefinition<_tpserve_worker_v1_WorkerStatsRequest, _tpserve_worker_v1_WorkerStats, _tpserve_worker_v1_WorkerStatsRequest__Output, _tpserve_worker_v1_WorkerStats__Output>
  Steps: MethodDefinition<_tpserve_worker_v1_StepPlan, _tpserve_worker_v1_StepResult, _tpserve_worker_v1_StepPlan__Output, _tpserve_worker_v1_StepResult__Output>
}
