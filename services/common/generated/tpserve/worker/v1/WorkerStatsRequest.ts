// Original file: proto/tpserve/worker/v1/worker.proto


export interface WorkerStatsRequest {
}

export interface WorkerStatsRequest__Output {
}
