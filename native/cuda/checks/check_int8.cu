// The int8 tensor-core GEMV of docs/gpu.md ("What is left"), checked and timed before anything in the engine uses it
// (a measurement for a design decision, like check_stream; docs/gpu-runs.md run 49 timed a kernel of this shape with
// wrong sums and found it 18-25% faster than the fp16 one on an H200). One token, symmetric int4 g128 weights:
//  - weights in a tile layout for mma.m16n8k32 (s8): per 16-row tile and 64-column chunk, 512 contiguous bytes, lane
//    (g, t) owning 16 of them: word 2s + h (32-k step s, half h) holds, in byte i, the nibbles of rows g (low) and
//    g + 8 (high) at k = 32 s + 16 h + 4 t + i, each stored as q ^ 8. Unpacked as (w << 4) & 0xf0f0f0f0 (row g) and
//    w & 0xf0f0f0f0 (row g + 8): bytes that read as s8 are 16 (q - 8), exact; the 16 goes into the scale.
//  - x as three s8 pieces per value with one scale per group of 128 (s = max|x| / 127; X0 = rint(x / s), X1 =
//    rint((x / s - X0) 254), X2 = rint(((x / s - X0) 254 - X1) 254)): columns 0-2 of the mma's B, so a group's
//    result is s_w s / 16 (D0 + D1 / 254 + D2 / 254^2) with exact int32 sums D. Laid out as B fragments: for chunk
//    kb, piece p and lane t, 16 bytes at ((kb * 3 + p) * 4 + t) * 16: word 2s + h holds k = 32 s + 16 h + 4 t + i.
// Checks (every shape): the pieces rebuild x within 1e-7 of the group's largest |x|; the GEMV matches a float64
// reference within 1e-6 (relative L2), as does the engine's kernel. Times: a graph of 20 launches over weight
// copies that do not fit in L2, median of 50, beside the engine's one-token kernel (int4_tiled_matmul).
//   check_int8 [--json out.json]
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <string>
#include <vector>

#include "int4t_check.cuh"
#include "kernels/int4_tiled_common.cuh"
#include "kernels/pdl.cuh"
#include "int8_pieces.cuh"

using namespace tpserve::check;

namespace int8_check {

// y = W x for one token: a block a 16-row tile, KS warps taking its groups round-robin (a two-slot register ring of
// groups, as the engine's one-token GEMV), the pieces' int32 sums per group scaled into float. ENG: the engine's
// Int4Tiled weights as they are (nibbles q, not q ^ 8: the unpack flips the top bit of each byte).
template <int KS, bool ENG>
__global__ void __launch_bounds__(KS * 32) int8_gemv(const uint4* __restrict__ wq, const float* __restrict__ ws,
                                                     const uint4* __restrict__ xq, const float* __restrict__ sx,
                                                     int rows, int cols, float* __restrict__ y) {
  constexpr int GC = 2;  // 64-column chunks a group
  __shared__ float red[KS][16];
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int rt = blockIdx.x, KB = cols >> 6, NG = KB / GC;
  const int U = warp < NG ? (NG - warp + KS - 1) / KS : 0;
  const uint4* tq = wq + (size_t)rt * KB * 32 + lane;
  const float* tsc = ws + (size_t)rt * NG * 16;
  uint4 q[2][GC];
  float s0[2], s1[2];
  const auto load = [&](int slot, int u) {
    const int gi = warp + u * KS;
#pragma unroll
    for (int c = 0; c < GC; ++c) q[slot][c] = tpserve::cuda::ld_stream(tq + (size_t)(gi * GC + c) * 32);
    s0[slot] = __ldg(tsc + gi * 16 + g), s1[slot] = __ldg(tsc + gi * 16 + g + 8);
  };
  // Lane t = 0 holds pieces 0 and 1 (columns 0, 1), t = 1 piece 2 (column 2; column 3 is zero).
  const float w0 = t == 0 ? 1.f : 1.f / (kPieceMul * kPieceMul), w1 = t == 0 ? 1.f / kPieceMul : 0.f;
  float acc0 = 0.f, acc1 = 0.f;  // rows g and g + 8
  const auto group = [&](int slot, int u) {
    const int gi = warp + u * KS;
    int d[4] = {0, 0, 0, 0};
#pragma unroll
    for (int c = 0; c < GC; ++c) {
      const int kb = gi * GC + c;
      uint4 b = make_uint4(0u, 0u, 0u, 0u);
      if (g < kPieces) b = __ldg(xq + (size_t)(kb * kPieces + g) * 4 + t);
      s8_chunk_mma<ENG>(q[slot][c], b, d);
    }
    const float xs = __ldg(sx + gi) * (1.f / 16.f);
    acc0 = fmaf(s0[slot] * xs, fmaf((float)d[1], w1, (float)d[0] * w0), acc0);
    acc1 = fmaf(s1[slot] * xs, fmaf((float)d[3], w1, (float)d[2] * w0), acc1);
  };
  if (U > 0) load(0, 0);
  for (int u = 0; u < U; u += 2) {
    if (u + 1 < U) load(1, u + 1);
    group(0, u);
    if (u + 1 < U) {
      if (u + 2 < U) load(0, u + 2);
      group(1, u + 1);
    }
  }
  // Rows g, g + 8: lanes t = 0 and t = 1 hold the two halves of each row's sum.
  acc0 += __shfl_xor_sync(0xffffffffu, acc0, 1);
  acc1 += __shfl_xor_sync(0xffffffffu, acc1, 1);
  if (t == 0) red[warp][g] = acc0, red[warp][g + 8] = acc1;
  __syncthreads();
  if (threadIdx.x < 16 && rt * 16 + (int)threadIdx.x < rows) {
    float v = 0.f;
    for (int k = 0; k < KS; ++k) v += red[k][threadIdx.x];
    y[rt * 16 + threadIdx.x] = v;
  }
}

/** The int8-mma tile layout of a symmetric int4 weight (on-disk nibbles in w.q), and its scales as Int4Tiled's. */
void pack_int8(const HostW& w, std::vector<uint32_t>& q, std::vector<float>& sc) {
  const int tiles = (w.rows + 15) / 16, KB = w.cols / 64, NG = w.cols / kGroup;
  q.assign((size_t)tiles * KB * 128, 0u);
  sc.assign((size_t)tiles * NG * 16, 0.f);
  const auto nib = [&](int r, int k) -> uint32_t {
    if (r >= w.rows) return 8u;  // padding rows: q = 8, weight 0
    const uint8_t b = w.q[(size_t)r * (w.cols / 2) + k / 2];
    return (k & 1) ? (b >> 4) : (b & 15u);
  };
  for (int rt = 0; rt < tiles; ++rt)
    for (int kb = 0; kb < KB; ++kb)
      for (int lane = 0; lane < 32; ++lane)
        for (int j = 0; j < 4; ++j) {
          const int g = lane >> 2, t = lane & 3, s = j >> 1, h = j & 1;
          uint32_t word = 0;
          for (int i = 0; i < 4; ++i) {
            const int k = kb * 64 + s * 32 + h * 16 + t * 4 + i;
            const uint32_t byte = (nib(rt * 16 + g, k) ^ 8u) | ((nib(rt * 16 + g + 8, k) ^ 8u) << 4);
            word |= byte << (8 * i);
          }
          q[(((size_t)rt * KB + kb) * 32 + lane) * 4 + j] = word;
        }
  for (int rt = 0; rt < tiles; ++rt)
    for (int gi = 0; gi < NG; ++gi)
      for (int r = 0; r < 16; ++r)
        if (rt * 16 + r < w.rows) sc[((size_t)rt * NG + gi) * 16 + r] = w.scales[(size_t)(rt * 16 + r) * NG + gi];
}

struct Timed {
  std::string shape, kernel;
  double us, frac;
};

}  // namespace int8_check

using namespace int8_check;

int main(int argc, char** argv) {
  const char* jsonPath = arg_value(argc, argv, "--json");
  cudaDeviceProp prop;
  CUDA_CHECK(cudaGetDeviceProperties(&prop, 0));
  std::printf("device %s, %d SMs, L2 %d MB\n", prop.name, prop.multiProcessorCount, prop.l2CacheSize >> 20);
  double copyBw = 0;
  if (copy_bandwidth_gbps(copyBw)) return 1;
  std::printf("copy bandwidth (D2D 2 GiB, read+write): %.1f GB/s\n", copyBw);
  Rng rng(20261128);
  std::vector<CheckResult> checks;
  std::vector<Timed> times;
  const int shapes[][2] = {{4096, 4096}, {12288, 4096}, {22016, 4096}, {4096, 11008}, {100, 256}};
  for (const auto& sh : shapes) {
    const int R = sh[0], C = sh[1], NG = C / kGroup, tiles = (R + 15) / 16;
    char name[32];
    std::snprintf(name, sizeof name, "%dx%d", R, C);
    HostW w = make_weight(rng, R, C, kGroup, false);
    std::vector<float> x(C);
    rng.fill_normal(x);
    for (int k = 0; k < C; k += 97) x[k] *= 20.f;  // a few large values, as real activations have
    // float64 reference
    std::vector<double> ref(R);
    for (int r = 0; r < R; ++r) {
      double s = 0;
      for (int k = 0; k < C; ++k) s += w.at(r, k) * (double)x[k];
      ref[r] = s;
    }
    // The engine's kernel and the int8 one, copies for the timing
    const size_t wb = w.bytes();
    const int copies = (int)std::min<size_t>(24, std::max<size_t>(2, (3 * prop.l2CacheSize + wb - 1) / wb));
    DevT d;
    if (upload(w, d, copies)) return 1;
    std::vector<uint32_t> q8;
    std::vector<float> sc8;
    pack_int8(w, q8, sc8);
    std::vector<uint4*> dq(copies);
    std::vector<float*> dsc(copies);
    for (int c = 0; c < copies; ++c) {
      dq[c] = d.alloc<uint4>(q8.size() * 4), dsc[c] = d.alloc<float>(sc8.size() * 4);
      if (!dq[c] || !dsc[c]) return 1;
      CUDA_CHECK(cudaMemcpy(dq[c], q8.data(), q8.size() * 4, cudaMemcpyHostToDevice));
      CUDA_CHECK(cudaMemcpy(dsc[c], sc8.data(), sc8.size() * 4, cudaMemcpyHostToDevice));
    }
    float* dx = d.alloc<float>(C * 4);
    float* dy = d.alloc<float>((size_t)tiles * 16 * 4);
    float* dsx = d.alloc<float>(NG * 4);
    int8_t* dxq = d.alloc<int8_t>((size_t)C * kPieces);
    int8_t* dxe = d.alloc<int8_t>((size_t)C * kPieces);  // the pieces in the engine layout's k order
    __half* dxp = d.alloc<__half>(tpserve::cuda::xprep_halves(1, C) * 2);
    if (!dx || !dy || !dsx || !dxq || !dxe || !dxp) return 1;
    CUDA_CHECK(cudaMemcpy(dx, x.data(), C * 4, cudaMemcpyHostToDevice));
    // pieces
    CUDA_CHECK_LAUNCH((quantize_x<false><<<(NG * 32 + 255) / 256, 256>>>(dx, C, dxq, dsx), cudaGetLastError()));
    CUDA_CHECK_LAUNCH((quantize_x<true><<<(NG * 32 + 255) / 256, 256>>>(dx, C, dxe, dsx), cudaGetLastError()));
    {
      std::vector<int8_t> xq((size_t)C * kPieces);
      std::vector<float> sx(NG);
      CUDA_CHECK(cudaMemcpy(xq.data(), dxq, xq.size(), cudaMemcpyDeviceToHost));
      CUDA_CHECK(cudaMemcpy(sx.data(), dsx, NG * 4, cudaMemcpyDeviceToHost));
      // Each value within 1e-7 of its group's largest |x| (x / s rounded to float, then 0.5 / 254^2 of s): the bound
      // checked. The relative L2 over x is larger (3.4e-7 on an H200, run 52: most values are far below the group's
      // largest), so it is held to 1e-6.
      double worst = 0;
      CheckResult r{std::string("pieces rebuild x ") + name, {}, 0, false};
      for (int k = 0; k < C; ++k) {
        const double v = sx[k / kGroup] * (xq[xq_offset<false>(k, 0)] + xq[xq_offset<false>(k, 1)] / 254.0 +
                                           xq[xq_offset<false>(k, 2)] / (254.0 * 254.0));
        r.e.add(v, x[k]);
        worst = std::max(worst, std::fabs(v - x[k]) / (127.0 * sx[k / kGroup]));
      }
      record(r, 1e-6, checks);
      if (worst > 1e-7) checks.back().pass = false, std::printf("FAIL a piece error above 1e-7 of the group's largest |x|\n");
      std::printf("  largest error of the pieces: %.2e of the group's largest |x|\n", worst);
    }
    // GEMVs against float64
    const auto check_y = [&](const char* what) -> int {
      std::vector<float> y(R);
      CUDA_CHECK(cudaMemcpy(y.data(), dy, R * 4, cudaMemcpyDeviceToHost));
      CheckResult r{std::string(what) + " " + name, {}, 0, false};
      for (int i = 0; i < R; ++i) r.e.add(y[i], ref[i]);
      record(r, 1e-6, checks);
      return 0;
    };
    const auto xqv = reinterpret_cast<const uint4*>(dxq), xev = reinterpret_cast<const uint4*>(dxe);
    // The int8 kernels: own layout (pack_int8) or the engine's (d.t: its q and scales as they are), 8 or 16 warps.
    const auto int8_launch = [&](bool eng, int ks, int c, cudaStream_t st) {
      const uint4* q = eng ? d.t[c].q : dq[c];
      const float* sc = eng ? d.t[c].scales : dsc[c];
      const uint4* xv = eng ? xev : xqv;
      if (eng && ks == 8) int8_gemv<8, true><<<tiles, 256, 0, st>>>(q, sc, xv, dsx, R, C, dy);
      else if (eng) int8_gemv<16, true><<<tiles, 512, 0, st>>>(q, sc, xv, dsx, R, C, dy);
      else if (ks == 8) int8_gemv<8, false><<<tiles, 256, 0, st>>>(q, sc, xv, dsx, R, C, dy);
      else int8_gemv<16, false><<<tiles, 512, 0, st>>>(q, sc, xv, dsx, R, C, dy);
      return cudaGetLastError();
    };
    const char* int8Names[2][2] = {{"int8 gemv 8 warps", "int8 gemv 16 warps"},
                                   {"int8 gemv engine layout 8 warps", "int8 gemv engine layout 16 warps"}};
    for (int eng = 0; eng < 2; ++eng)
      for (int k = 0; k < 2; ++k) {
        CUDA_CHECK(cudaMemset(dy, 0xff, (size_t)R * 4));
        CUDA_CHECK_LAUNCH(int8_launch(eng, k ? 16 : 8, 0, 0));
        if (check_y(int8Names[eng][k])) return 1;
      }
    CUDA_CHECK(cudaMemset(dy, 0xff, (size_t)R * 4));
    CUDA_CHECK_LAUNCH(tpserve::cuda::xprep(dx, 1, C, dxp, 0));
    CUDA_CHECK_LAUNCH(tpserve::cuda::int4_tiled_matmul(dx, dxp, true, d.t[0], dy, 1, nullptr, 0, false,
                                                       tpserve::cuda::Int4Epilogue(), nullptr, 0));
    if (check_y("engine one-token gemv")) return 1;
    if (R < 4096) continue;  // the small shape is for the checks only
    // times
    cudaStream_t st;
    CUDA_CHECK(cudaStreamCreateWithFlags(&st, cudaStreamNonBlocking));
    const auto time_graph = [&](const char* kernel, auto&& launch) -> int {
      cudaGraph_t gr;
      cudaGraphExec_t ge;
      CUDA_CHECK(cudaStreamBeginCapture(st, cudaStreamCaptureModeThreadLocal));
      for (int i = 0; i < 20; ++i) CUDA_CHECK(launch(i % copies));
      CUDA_CHECK(cudaStreamEndCapture(st, &gr));
      CUDA_CHECK(cudaGraphInstantiate(&ge, gr, 0));
      std::vector<float> ms;
      CUDA_CHECK(time_events([&](int) { return cudaGraphLaunch(ge, st); }, 5, 50, ms, st));
      const double us = median(ms) * 1000.0 / 20, frac = wb / (us * 1e-6) / 1e9 / copyBw;
      std::printf("%-11s %-34s %8.2f us %5.1f%% of copy\n", name, kernel, us, 100 * frac);
      times.push_back({name, kernel, us, frac});
      cudaGraphExecDestroy(ge), cudaGraphDestroy(gr);
      return 0;
    };
    if (time_graph("engine one-token gemv", [&](int c) {
          return tpserve::cuda::int4_tiled_matmul(dx, dxp, true, d.t[c], dy, 1, nullptr, st, false,
                                                  tpserve::cuda::Int4Epilogue(), nullptr, 0);
        }))
      return 1;
    for (int eng = 0; eng < 2; ++eng)
      for (int k = 0; k < 2; ++k)
        if (time_graph(int8Names[eng][k], [&](int c) { return int8_launch(eng, k ? 16 : 8, c, st); })) return 1;
    if (time_graph("quantize x (one token)", [&](int) {
          quantize_x<true><<<(NG * 32 + 255) / 256, 256, 0, st>>>(dx, C, dxe, dsx);
          return cudaGetLastError();
        }))
      return 1;
    cudaStreamDestroy(st);
  }
  int failed = 0;
  for (auto& c : checks) failed += !c.pass;
  if (jsonPath) {
    Json j;
    j.begin_obj().kv("device", std::string(prop.name)).kv("copy_GBps", copyBw);
    json_checks(j, checks);
    j.key("times").begin_arr();
    for (auto& t : times)
      j.begin_obj().kv("shape", t.shape).kv("kernel", t.kernel).kv("us", t.us).kv("frac_copy", t.frac).end_obj();
    j.end_arr().end_obj();
    if (!j.write(jsonPath)) return 1;
  }
  std::printf("%zu checks, %d failed\n", checks.size(), failed);
  return failed ? 1 : 0;
}
