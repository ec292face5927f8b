// Original file: proto/tpserve/v1/generation.proto


export interface StatsRequest {
}

export interface StatsRequest__Output {
}
