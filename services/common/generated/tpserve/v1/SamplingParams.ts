// Original file: proto/tpserve/v1/generation.proto

import type { Long } from '@grpc/proto-loader';

export interface SamplingParams {
  /**
   * 0 = greedy. Must be >= 0.
   */
  'temperature'?: (number | string);
  /**
   * 0 = disabled.
   */
  'topK'?: (number);
  /**
   * In (0, 1]; unset means 1 (off).
   */
  'topP'?: (number | string);
  /**
   * In [0, 1); 0 = disabled.
   */
  'minP'?: (number | string);
  /**
   * Seed for reproducible sampling; unset = random.
   */
  'seed'?: (number | string | Long);
  '_topP'?: "topP";
  '_seed'?: "seed";
}

export interface SamplingParams__Output {
  /**
   * 0 = greedy. Must be >= 0.
   */
  'temperature': (number);
  /**
   * 0 = disabled.
   */
  'topK': (number);
  /**
   * In (0, 1]; unset means 1 (off).
   */
  'topP'?: (number);
  /**
   * In [0, 1); 0 = disabled.
   */
  'minP': (number);
  /**
   * Seed for reproducible sampling; unset = random.
   */
  'seed'?: (number);
  '_topP'?: "topP";
  '_seed'?: "seed";
}
