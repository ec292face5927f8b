// Original file: proto/tpserve/worker/v1/worker.proto


export interface WorkerEmbedRequest {
  'tokens'?: (number)[];
  'requestId'?: (string);
}

export interface WorkerEmbedRequest__Output {
  'tokens': (number)[];
  'requestId': (string);
}
