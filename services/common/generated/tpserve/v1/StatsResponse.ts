// Original file: proto/tpserve/v1/generation.proto

import type { Long } from '@grpc/proto-loader';

export interface StatsResponse {
  'running'?: (number);
  'waiting'?: (number);
  /**
   * usable pages (page 0 excluded)
   */
  'pagesTotal'?: (number);
  'pagesFree'?: (number);
  'steps'?: (number | string | Long);
  'preemptions'?: (number | string | Long);
  'requestsFinished'?: (number | string | Long);
  'tokensGenerated'?: (number | string | Long);
  'promptTokens'?: (number | string | Long);
}

export interface StatsResponse__Output {
  'running': (number);
  'waiting': (number);
  /**
   * usable pages (page 0 excluded)
   */
  'pagesTotal': (number);
  'pagesFree': (number);
  'steps': (number);
  'preemptions': (number);
  'requestsFinished': (number);
  'tokensGenerated': (number);
  'promptTokens': (number);
}
