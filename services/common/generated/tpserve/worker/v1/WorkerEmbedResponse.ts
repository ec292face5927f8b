// Original file: proto/tpserve/worker/v1/worker.proto


export interface WorkerEmbedResponse {
  'values'?: (number | string)[];
}

export interface WorkerEmbedResponse__Output {
  'values': (number)[];
}
