// Original file: proto/tpserve/worker/v1/worker.proto

import type { Long } from '@grpc/proto-loader';

export interface Sampling {
  'temperature'?: (number | string);
  'topK'?: (number);
  'topP'?: (number | string);
  'minP'?: (number | string);
  'seed'?: (number | string | Long);
}

export interface Sampling__Output {
  'temperature': (number);
  'topK': (number);
  'topP': (number);
  'minP': (number);
  'seed': (number);
}
