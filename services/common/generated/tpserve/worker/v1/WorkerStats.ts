// Original file: proto/tpserve/worker/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface WorkerStats {
  'sequences'?: (number);
  'steps'?: (number | string | Long);
  'forwardMsTotal'?: (number | string);
  'tokensComputed'?: (number | string | Long);
}

export interface WorkerStats__Output {
  'sequences': (number);
  'steps': (number);
  'forwardMsTotal': (number);
  'tokensComputed': (number);
}
