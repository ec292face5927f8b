// The integers of one forward pass, in one buffer that the host fills and copies to the device in one go (a
// captured decode graph bakes in the device pointers into it): token ids, positions and KV slots (T each), the
// sequences' first tokens (S + 1), context lengths (S), the token of each logits row (rows), block tables (S x mb,
// each row padded with page 0). Host logic only; gpu_model.cu stages and copies it.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../src/engine.h"

namespace tpserve {

struct StepInts {
  int32_t *tok, *pos, *slot, *qs, *ctx, *rowIdx, *bt;

  /** The parts of a buffer of count(T, S, rows, mb) integers at base. */
  StepInts(int32_t* base, int T, int S, int rows)
      : tok(base), pos(tok + T), slot(pos + T), qs(slot + T), ctx(qs + S + 1), rowIdx(ctx + S), bt(rowIdx + rows) {}

  static size_t count(int T, int S, int rows, int mb) { return (size_t)3 * T + (S + 1) + S + rows + (size_t)S * mb; }

  /**
   * Fills the parts for batch b (rows: every token's when b.all, else each sequence's last), or with ahead = 1 for
   * the step after it (every context one further; decode only, the tokens to be filled in on the device). Sets the
   * longest context and the most tokens of one sequence.
   */
  void fill(const BatchIn& b, int blockSize, int mb, int ahead, int& maxCtx, int& maxQ) const {
    const int S = (int)b.seqLens.size(), bs = blockSize;
    qs[0] = 0;
    for (int sq = 0, t = 0; sq < S; sq++) {
      const int len = b.seqLens[sq], c = b.contextLens[sq] + ahead;
      maxCtx = std::max(maxCtx, c), maxQ = std::max(maxQ, len);
      const int32_t* table = b.blockTables.data() + (size_t)sq * b.maxBlocksPerSeq;
      for (int i = 0; i < len; i++, t++) {
        const int ps = c - len + i;
        tok[t] = b.tokens[t], pos[t] = ps, slot[t] = table[ps / bs] * bs + ps % bs;
      }
      qs[sq + 1] = t, ctx[sq] = c;
      if (!b.all) rowIdx[sq] = t - 1;
      int32_t* dst = bt + (size_t)sq * mb;
      std::memcpy(dst, table, (size_t)b.maxBlocksPerSeq * sizeof(int32_t));
      std::fill(dst + b.maxBlocksPerSeq, dst + mb, 0);
    }
    if (b.all)
      for (int t = 0; t < (int)b.tokens.size(); t++) rowIdx[t] = t;
  }

  /**
   * For a decode step staged with ahead = 1 (S sequences, one token each): each sequence's KV slot, and the
   * block-table entry of its position (block index, page), which cuda::advance_decode writes over the step before.
   */
  void advanceEntries(int S, int mb, int blockSize, int32_t* slotOut, int32_t* blkOut, int32_t* pageOut) const {
    for (int i = 0; i < S; i++) {
      const int blk = pos[i] / blockSize;
      slotOut[i] = slot[i], blkOut[i] = blk, pageOut[i] = bt[(size_t)i * mb + blk];
    }
  }
};

}  // namespace tpserve
