// Original file: proto/tpserve/v1/generation.proto


export interface ModelInfoRequest {
}

export interface ModelInfoRequest__Output {
}
