// Uploads and repacking of device weights (device_weight.h).
#include <algorithm>
#include <cstring>
#include <vector>

#include "device_weight.h"

namespace tpserve {
namespace {

std::vector<__nv_bfloat16> toBf16(const std::vector<float>& f) {
  std::vector<__nv_bfloat16> out(f.size());
  for (size_t i = 0; i < f.size(); i++) {
    uint32_t bits;
    std::memcpy(&bits, &f[i], 4);
    const uint16_t hi = (uint16_t)(bits >> 16);  // exact: the values came from bf16
    std::memcpy(&out[i], &hi, 2);
  }
  return out;
}

}  // namespace

void checkLaunch(cudaError_t e, const char* what) {
  if (e != cudaSuccess) {
    cudaGetLastError();
    fail("NATIVE_CUDA", std::string("kernel ") + what + " failed: " + cudaGetErrorString(e));
  }
}

Weight mergeRows(int l, const char* what, std::initializer_list<const Weight*> parts) {
  const Weight& a = **parts.begin();
  Weight m;
  m.present = true, m.int4 = a.int4, m.cols = a.cols, m.group = a.group;
  for (const Weight* w : parts) {
    if (w->rows == 0 || w->int4 != a.int4 || w->group != a.group || w->cols != a.cols ||
        w->zeros.empty() != a.zeros.empty())
      fail("NATIVE_INVALID_ARG", "layers." + std::to_string(l) + "." + what +
                                     " must all be set and share one format on the GPU (all int4 with the same "
                                     "group size and zero points, or all dense)");
    m.rows += w->rows;
    m.f.insert(m.f.end(), w->f.begin(), w->f.end());
    m.q.insert(m.q.end(), w->q.begin(), w->q.end());
    m.scales.insert(m.scales.end(), w->scales.begin(), w->scales.end());
    m.zeros.insert(m.zeros.end(), w->zeros.begin(), w->zeros.end());
    // Act-order (GPTQ desc_act): the merged matmul reads one input order, so the parts must share it (as they do
    // when quantized from the same inputs, whose Hessian orders the columns).
    if (w->perm != a.perm)
      fail("NATIVE_INVALID_ARG", "layers." + std::to_string(l) + "." + what +
                                     " have different act-order input permutations (g_idx); the GPU merges them "
                                     "into one matmul, which needs one order: use --device cpu, or a checkpoint "
                                     "quantized without act-order (desc_act false)");
  }
  m.perm = a.perm;
  return m;
}

bool reorderRows(Weight& w, const std::vector<int32_t>& order) {
  if (w.nf4.present || order.size() != (size_t)w.rows) return false;
  const auto permute = [&](auto& v) {
    if (v.empty()) return;
    const size_t per = v.size() / (size_t)w.rows;
    auto out = v;
    for (size_t i = 0; i < order.size(); i++)
      std::copy_n(v.begin() + (ptrdiff_t)((size_t)order[i] * per), per, out.begin() + (ptrdiff_t)(i * per));
    v = std::move(out);
  };
  permute(w.f), permute(w.b), permute(w.q), permute(w.zeros), permute(w.scales);
  return true;
}

void uploadWeight(DWeight& d, const Weight& w, bool bf16, cuda::Int4RowOrder order, const ModelShape& s,
                  cudaStream_t stream) {
  d = DWeight();
  d.rows = w.rows, d.cols = w.cols, d.group = w.group;
  if (w.int4) {
    d.kind = DWeight::kInt4;
    d.q.upload(w.q.data(), w.q.size()), d.scales.upload(w.scales.data(), w.scales.size());
    if (!w.perm.empty()) {
      d.perm.upload(w.perm.data(), w.perm.size());
      d.permCols = w.inputCols();
      if (!d.wideInput()) {
        std::vector<int32_t> inv(w.perm.size());
        for (size_t i = 0; i < w.perm.size(); i++) inv[(size_t)w.perm[i]] = (int32_t)i;
        d.invPerm.upload(inv.data(), inv.size());
      }
    }
    if (!w.zeros.empty()) d.zeros.upload(w.zeros.data(), w.zeros.size());
    if (cuda::int4_tiled_supported(w.rows, w.cols, w.group)) {
      // Repack on the device into the decode kernels' layout; the on-disk copy is dropped.
      size_t words = 0, entries = 0;
      cuda::int4_tiled_sizes(w.rows, w.cols, w.group, &words, &entries);
      DevBuf<uint32_t> tq;
      DevBuf<float> ts;
      DevBuf<uint8_t> tz;
      tq.alloc(words), ts.alloc(entries);
      if (d.zeros.p) tz.alloc(entries);
      const cuda::Int4Weight src{d.q.p, d.scales.p, d.zeros.p, w.rows, w.cols, w.group};
        std::vector<int32_t> map;
      if (order != cuda::Int4RowOrder::kInOrder)
        map = cuda::int4_tile_row_map(order, w.rows, s.heads, s.kvHeads, s.headDim);
      DevBuf<int32_t> dmap;
      if (!map.empty()) dmap.upload(map.data(), map.size());
      else order = cuda::Int4RowOrder::kInOrder;  // the shape does not allow it: plain epilogue
      checkLaunch(cuda::int4_tile_pack(src, tq.p, ts.p, tz.p, dmap.p, stream), "int4_tile_pack");
      CK(cudaStreamSynchronize(stream));
      d.kind = DWeight::kInt4Tiled, d.order = order;
      d.tq = std::move(tq), d.scales = std::move(ts), d.zeros = std::move(tz);
      d.q.reset();
    }
  } else if (bf16) {
    d.kind = DWeight::kBf16;
    const std::vector<__nv_bfloat16> b = toBf16(w.f);
    d.b.upload(b.data(), b.size());
  } else {
    d.kind = DWeight::kF32;
    d.f.upload(w.f.data(), w.f.size());
  }
}

}  // namespace tpserve
