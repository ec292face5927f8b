// Original file: proto/tpserve/v1/generation.proto

import type * as grpc from '@grpc/grpc-js'
import type { MethodDefinition } from '@grpc/proto-loader'
import type { EmbedRequest as _tpserve_v1_EmbedRequest, EmbedRequest__Output as _tpserve_v1_EmbedRequest__Output } from '../../tpserve/v1/EmbedRequest';
import type { EmbedResponse as _tpserve_v1_EmbedResponse, EmbedResponse__Output as _tpserve_v1_EmbedResponse__Output } from '../../tpserve/v1/EmbedResponse';
import type { GenerateChunk as _tpserve_v1_GenerateChunk, GenerateChunk__Output as _tpserve_v1_GenerateChunk__Output } from '../../tpserve/v1/GenerateChunk';
import type { GenerateRequest as _tpserve_v1_GenerateRequest, GenerateRequest__Output as _tpserve_v1_GenerateRequest__Output } from '../../tpserve/v1/GenerateRequest';
import type { ModelInfoRequest as _tpserve_v1_ModelInfoRequest, ModelInfoRequest__Output as _tpserve_v1_ModelInfoRequest__Output } from '../../tpserve/v1/ModelInfoRequest';
import type { ModelInfoResponse as _tpserve_v1_ModelInfoResponse, ModelInfoResponse__Output as _tpserve_v1_ModelInfoResponse__Output } from '../../tpserve/v1/ModelInfoResponse';
import type { StatsRequest as _tpserve_v1_StatsRequest, StatsRequest__Output as _tpserve_v1_StatsRequest__Output } from '../../tpserve/v1/StatsRequest';
import type { StatsResponse as _tpserve_v1_StatsResponse, StatsResponse__Output as _tpserve_v1_StatsResponse__Output } from '../../tpserve/v1/StatsResponse';
import type { TokenizeRequest as _tpserve_v1_TokenizeRequest, TokenizeRequest__Output as _tpserve_v1_TokenizeRequest__Output } from '../../tpserve/v1/TokenizeRequest';
import type { TokenizeResponse as _tpserve_v1_TokenizeResponse, TokenizeResponse__Output as _tpserve_v1_TokenizeResponse__Output } from '../../tpserve/v1/TokenizeResponse';

/**
 * Text generation over server streaming.
 */
export interface GenerationClient extends grpc.Client {
  /**
   * Embed returns the mean-pooled final hidden state of the prompt, L2-normalized.
   */
  Embed(argument: _tpserve_v1_EmbedRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_v1_EmbedRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_v1_EmbedRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  Embed(argument: _tpserve_v1_EmbedRequest, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Embed returns the mean-pooled final hidden state of the prompt, L2-normalized.
   */
  embed(argument: _tpserve_v1_EmbedRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_v1_EmbedRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_v1_EmbedRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  embed(argument: _tpserve_v1_EmbedRequest, callback: grpc.requestCallback<_tpserve_v1_EmbedResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Generate streams chunks of generated tokens; the last chunk carries the finish reason and usage.
   */
  Generate(argument: _tpserve_v1_GenerateRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_tpserve_v1_GenerateChunk__Output>;
  Generate(argument: _tpserve_v1_GenerateRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_tpserve_v1_GenerateChunk__Output>;
  /**
   * Generate streams chunks of generated tokens; the last chunk carries the finish reason and usage.
   */
  generate(argument: _tpserve_v1_GenerateRequest, metadata: grpc.Metadata, options?: grpc.CallOptions): grpc.ClientReadableStream<_tpserve_v1_GenerateChunk__Output>;
  generate(argument: _tpserve_v1_GenerateRequest, options?: grpc.CallOptions): grpc.ClientReadableStream<_tpserve_v1_GenerateChunk__Output>;
  
  /**
   * ModelInfo describes the served model and the limits requests must respect.
   */
  ModelInfo(argument: _tpserve_v1_ModelInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  ModelInfo(argument: _tpserve_v1_ModelInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  ModelInfo(argument: _tpserve_v1_ModelInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  ModelInfo(argument: _tpserve_v1_ModelInfoRequest, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  /**
   * ModelInfo describes the served model and the limits requests must respect.
   */
  modelInfo(argument: _tpserve_v1_ModelInfoRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  modelInfo(argument: _tpserve_v1_ModelInfoRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  modelInfo(argument: _tpserve_v1_ModelInfoRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  modelInfo(argument: _tpserve_v1_ModelInfoRequest, callback: grpc.requestCallback<_tpserve_v1_ModelInfoResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Stats reports the scheduler's queues and KV page usage.
   */
  Stats(argument: _tpserve_v1_StatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_v1_StatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_v1_StatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  Stats(argument: _tpserve_v1_StatsRequest, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Stats reports the scheduler's queues and KV page usage.
   */
  stats(argument: _tpserve_v1_StatsRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_v1_StatsRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_v1_StatsRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  stats(argument: _tpserve_v1_StatsRequest, callback: grpc.requestCallback<_tpserve_v1_StatsResponse__Output>): grpc.ClientUnaryCall;
  
  /**
   * Tokenize turns text into the model's token ids (with BOS when add_special_tokens is set).
   */
  Tokenize(argument: _tpserve_v1_TokenizeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  Tokenize(argument: _tpserve_v1_TokenizeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  Tokenize(argument: _tpserve_v1_TokenizeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  Tokenize(argument: _tpserve_v1_TokenizeRequest, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  /**
   * Tokenize turns text into the model's token ids (with BOS when add_special_tokens is set).
   */
  tokenize(argument: _tpserve_v1_TokenizeRequest, metadata: grpc.Metadata, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  tokenize(argument: _tpserve_v1_TokenizeRequest, metadata: grpc.Metadata, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  tokenize(argument: _tpserve_v1_TokenizeRequest, options: grpc.CallOptions, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  tokenize(argument: _tpserve_v1_TokenizeRequest, callback: grpc.requestCallback<_tpserve_v1_TokenizeResponse__Output>): grpc.ClientUnaryCall;
  
}

/**
 * Text generation over server streaming.
 */
export interface GenerationHandlers extends grpc.UntypedServiceImplementation {
  /**
   * Embed returns the mean-pooled final hidden state of the prompt, L2-normalized.
   */
  Embed: grpc.handleUnaryCall<_tpserve_v1_EmbedRequest__Output, _tpserve_v1_EmbedResponse>;
  
  /**
   * Generate streams chunks of generated tokens; the last chunk carries the finish reason and usage.
   */
  Generate: grpc.handleServerStreamingCall<_tpserve_v1_GenerateRequest__Output, _tpserve_v1_GenerateChunk>;
  
  /**
   * ModelInfo describes the served model and the limits requests must respect.
   */
  ModelInfo: grpc.handleUnaryCall<_tpserve_v1_ModelInfoRequest__Output, _tpserve_v1_ModelInfoResponse>;
  
  /**
   * Stats reports the scheduler's queues and KV page usage.
   */
  Stats: grpc.handleUnaryCall<_tpserve_v1_StatsRequest__Output, _tpserve_v1_StatsResponse>;
  
  /**
   * Tokenize turns text into the model's token ids (with BOS when add_special_tokens is set).
   */
  Tokenize: grpc.handleUnaryCall<_tpserve_v1_TokenizeRequest__Output, _tpserve_v1_TokenizeResponse>;
  
}

export interface GenerationDefinition extends grpc.ServiceDefinition {
  Embed: MethodDefinition<_tpserve_v1_EmbedRequest, _tpserve_v1_EmbedResponse, _tpserve_v1_EmbedRequest__Output, _tpserve_v1_EmbedResponse__Output>
  Generate: MethodDefinition<_tpserve_v1_GenerateRequest, _tpserve_v1_GenerateChunk, _tpserve_v1_GenerateRequest__Output, _tpserve_v1_GenerateChunk__Output>
  ModelInfo: MethodDefinition<_tpserve_v1_ModelInfoRequest, _tpserve_v1_ModelInfoResponse, _tpserve_v1_ModelInfoRequest__Output, _tpserve_v1_ModelInfoResponse__Output>
  Stats: MethodDefinition<_tpserve_v1_StatsRequest, _tpserve_v1_StatsResponse, _tpserve_v1_StatsRequest__Output, _tpserve_v1_StatsResponse__Output>
  Tokenize: MethodDefinition<_tpserve_v1_TokenizeRequest, _tpserve_v1_TokenizeResponse, _tpserve_v1_TokenizeRequest__Output, _tpserve_v1_TokenizeResponse__Output>
}
