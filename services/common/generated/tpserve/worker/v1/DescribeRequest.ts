// Original file: proto/tpserve/worker/v1/worker.proto


export interface DescribeRequest {
}

export interface DescribeRequest__Output {
}
