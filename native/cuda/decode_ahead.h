// Decode ahead (docs/gpu.md): which decode step a GPU model enqueued after the last call's, and whether the next
// call's batch is that step. Host logic only; gpu_model.cu stages and launches the step.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../src/engine.h"

namespace tpserve {

struct DecodeAhead {
  bool valid = false;  // a step is enqueued that no call has taken yet
  int S = 0, maxBlocks = 0;
  std::vector<int32_t> ctx, tokens, tables;  // per sequence of that step: context after it, token, block table

  /** Whether the step after decode batch b can be enqueued: every sequence has a page for its next position. */
  static bool possible(const BatchIn& b, int blockSize) {
    for (size_t sq = 0; sq < b.seqLens.size(); sq++) {
      const int blk = b.contextLens[sq] / blockSize;
      if (blk >= b.maxBlocksPerSeq || b.blockTables[sq * b.maxBlocksPerSeq + blk] == 0) return false;
    }
    return true;
  }

  /** Notes the step enqueued after decode batch b, whose ids were `ids`. */
  void record(const BatchIn& b, const int32_t* ids) {
    valid = true, S = (int)b.seqLens.size(), maxBlocks = b.maxBlocksPerSeq;
    tokens.assign(ids, ids + S), tables = b.blockTables;
    ctx.resize(S);
    for (int i = 0; i < S; i++) ctx[i] = b.contextLens[i] + 1;
  }

  /**
   * Whether decode batch b is the step enqueued, or some of its sequences in the same order: each one's context
   * one further, its token the id returned for it, its block table the same up to that context. rowOf gets each
   * sequence's row in the step enqueued, or stays empty when b is that whole step in its order.
   */
  bool match(const BatchIn& b, int blockSize, std::vector<int>& rowOf) const {
    const int n = (int)b.seqLens.size();
    if (b.all || (int)b.tokens.size() != n || n > S) return false;
    rowOf.assign(n, -1);
    for (int i = 0, j = 0; i < n; i++, j++) {
      const int c = b.contextLens[i], used = (c + blockSize - 1) / blockSize;
      if (used > b.maxBlocksPerSeq || used > maxBlocks) return false;
      const int32_t* t = b.blockTables.data() + (size_t)i * b.maxBlocksPerSeq;
      for (;; j++) {
        if (j >= S) return false;
        const int32_t* u = tables.data() + (size_t)j * maxBlocks;
        if (ctx[j] == c && tokens[j] == b.tokens[i] && std::equal(t, t + used, u)) break;
      }
      rowOf[i] = j;
    }
    if (n == S) rowOf.clear();  // every row taken, in order: row i is sequence i
    return true;
  }
};

}  // namespace tpserve
