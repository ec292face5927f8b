// Original file: proto/tpserve/v1/generation.proto


export interface Usage {
  'promptTokens'?: (number);
  'completionTokens'?: (number);
  /**
   * Times the sequence was preempted and recomputed.
   */
  'preemptions'?: (number);
}

export interface Usage__Output {
  'promptTokens': (number);
  'completionTokens': (number);
  /**
   * Times the sequence was preempted and recomputed.
   */
  'preemptions': (number);
}
