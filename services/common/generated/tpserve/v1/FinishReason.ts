// Original file: proto/tpserve/v1/generation.proto

export const FinishReason = {
  FINISH_REASON_UNSPECIFIED: 'FINISH_REASON_UNSPECIFIED',
  /**
   * max_tokens or the context limit reached
   */
  FINISH_REASON_LENGTH: 'FINISH_REASON_LENGTH',
  /**
   * a stop string matched
   */
  FINISH_REASON_STOP: 'FINISH_REASON_STOP',
  /**
   * the model produced EOS
   */
  FINISH_REASON_EOS: 'FINISH_REASON_EOS',
  /**
   * the server gave up on the request (drain, shutdown)
   */
  FINISH_REASON_CANCELLED: 'FINISH_REASON_CANCELLED',
} as const;

export type FinishReason =
  | 'FINISH_REASON_UNSPECIFIED'
  | 0
  /**
   * max_tokens or the context limit reached
   */
  | 'FINISH_REASON_LENGTH'
  | 1
  /**
   * a stop string matched
   */
  | 'FINISH_REASON_STOP'
  | 2
  /**
   * the model produced EOS
   */
  | 'FINISH_REASON_EOS'
  | 3
  /**
   * the server gave up on the request (drain, shutdown)
   */
  | 'FINISH_REASON_CANCELLED'
  | 4

export type FinishReason__Output = typeof FinishReason[keyof typeof FinishReason]
