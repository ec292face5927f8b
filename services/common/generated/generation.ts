import type * as grpc from '@grpc/grpc-js';
import type { EnumTypeDefinition, MessageTypeDefinition } from '@grpc/proto-loader';

import type { EmbedRequest as _tpserve_v1_EmbedRequest, EmbedRequest__Output as _tpserve_v1_EmbedRequest__Output } from './tpserve/v1/EmbedRequest';
import type { EmbedResponse as _tpserve_v1_EmbedResponse, EmbedResponse__Output as _tpserve_v1_EmbedResponse__Output } from './tpserve/v1/EmbedResponse';
import type { GenerateChunk as _tpserve_v1_GenerateChunk, GenerateChunk__Output as _tpserve_v1_GenerateChunk__Output } from './tpserve/v1/GenerateChunk';
import type { GenerateRequest as _tpserve_v1_GenerateRequest, GenerateRequest__Output as _tpserve_v1_GenerateRequest__Output } from './tpserve/v1/GenerateRequest';
import type { GenerationClient as _tpserve_v1_GenerationClient, GenerationDefinition as _tpserve_v1_GenerationDefinition } from './tpserve/v1/Generation';
import type { ModelInfoRequest as _tpserve_v1_ModelInfoRequest, ModelInfoRequest__Output as _tpserve_v1_ModelInfoRequest__Output } from './tpserve/v1/ModelInfoRequest';
import type { ModelInfoResponse as _tpserve_v1_ModelInfoResponse, ModelInfoResponse__Output as _tpserve_v1_ModelInfoResponse__Output } from './tpserve/v1/ModelInfoResponse';
import type { SamplingParams as _tpserve_v1_SamplingParams, SamplingParams__Output as _tpserve_v1_SamplingParams__Output } from './tpserve/v1/SamplingParams';
import type { StatsRequest as _tpserve_v1_StatsRequest, StatsRequest__Output as _tpserve_v1_StatsRequest__Output } from './tpserve/v1/StatsRequest';
import type { StatsResponse as _tpserve_v1_StatsResponse, StatsResponse__Output as _tpserve_v1_StatsResponse__Output } from './tpserve/v1/StatsResponse';
import type { TokenIds as _tpserve_v1_TokenIds, TokenIds__Output as _tpserve_v1_TokenIds__Output } from './tpserve/v1/TokenIds';
import type { TokenizeRequest as _tpserve_v1_TokenizeRequest, TokenizeRequest__Output as _tpserve_v1_TokenizeRequest__Output } from './tpserve/v1/TokenizeRequest';
import type { TokenizeResponse as _tpserve_v1_TokenizeResponse, TokenizeResponse__Output as _tpserve_v1_TokenizeResponse__Output } from './tpserve/v1/TokenizeResponse';
import type { Usage as _tpserve_v1_Usage, Usage__Output as _tpserve_v1_Usage__Output } from './tpserve/v1/Usage';

type SubtypeConstructor<Constructor extends new (...args: any) => any, Subtype> = {
  new(...args: ConstructorParameters<Constructor>): Subtype;
};

export interface ProtoGrpcType {
  tpserve: {
    v1: {
      EmbedRequest: MessageTypeDefinition<_tpserve_v1_EmbedRequest, _tpserve_v1_EmbedRequest__Output>
      EmbedResponse: MessageTypeDefinition<_tpserve_v1_EmbedResponse, _tpserve_v1_EmbedResponse__Output>
      FinishReason: EnumTypeDefinition
      GenerateChunk: MessageTypeDefinition<_tpserve_v1_GenerateChunk, _tpserve_v1_GenerateChunk__Output>
      GenerateRequest: MessageTypeDefinition<_tpserve_v1_GenerateRequest, _tpserve_v1_GenerateRequest__Output>
      /**
       * Text generation over server streaming.
       */
      Generation: SubtypeConstructor<typeof grpc.Client, _tpserve_v1_GenerationClient> & { service: _tpserve_v1_GenerationDefinition }
      ModelInfoRequest: MessageTypeDefinition<_tpserve_v1_ModelInfoRequest, _tpserve_v1_ModelInfoRequest__Output>
      ModelInfoResponse: MessageTypeDefinition<_tpserve_v1_ModelInfoResponse, _tpserve_v1_ModelInfoResponse__Output>
      SamplingParams: MessageTypeDefinition<_tpserve_v1_SamplingParams, _tpserve_v1_SamplingParams__Output>
      StatsRequest: MessageTypeDefinition<_tpserve_v1_StatsRequest, _tpserve_v1_StatsRequest__Output>
      StatsResponse: MessageTypeDefinition<_tpserve_v1_StatsResponse, _tpserve_v1_StatsResponse__Output>
      TokenIds: MessageTypeDefinition<_tpserve_v1_TokenIds, _tpserve_v1_TokenIds__Output>
      TokenizeRequest: MessageTypeDefinition<_tpserve_v1_TokenizeRequest, _tpserve_v1_TokenizeRequest__Output>
      TokenizeResponse: MessageTypeDefinition<_tpserve_v1_TokenizeResponse, _tpserve_v1_TokenizeResponse__Output>
      Usage: MessageTypeDefinition<_tpserve_v1_Usage, _tpserve_v1_Usage__Output>
    }
  }
}

