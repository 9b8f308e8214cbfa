// The matrix products of the fused CUDA path (the CPU's counterpart: csrc/cpu/gemm.h; the
// stepwise path uses cuBLAS through at::bmm_out, see run_host.h).  Device code only.
#pragma once

#include <cstdint>

namespace mdesc::cuda_impl {

constexpr int kTileN = 4;  // columns per thread in the gate GEMM (each thread: NG gates x 4 columns)

// G[row, gcol0 + gc] = sum_r Wa[r, row] * Za[r, zcol0 + gc]  (+ Wb/Zb likewise when Wb != nullptr)
// for every row < NG*H and gc < w.  Wa, Wb: [H, NG*H] (transposed weights); Za, Zb: [H, ld].
// A thread computes the NG gate rows u, H+u, ... of unit u for kTileN columns cg, cg+ncg, ...,
// so the cell's pointwise pass finds all gates of a unit computed by the same thread's loop.
template <int NG, typename T>
__device__ __forceinline__ void gate_gemm(const T* __restrict__ Wa, const T* __restrict__ Za, const T* __restrict__ Wb,
                                          const T* __restrict__ Zb, int H, int ld, int zcol0, int w, T* __restrict__ G,
                                          int ldg, int gcol0) {
  const int GH = NG * H;
  const int ncg = (w + kTileN - 1) / kTileN;
  for (int item = threadIdx.x; item < H * ncg; item += blockDim.x) {
    const int u = item % H;
    const int cg = item / H;
    int col[kTileN];
#pragma unroll
    for (int j = 0; j < kTileN; ++j) col[j] = zcol0 + min(cg + j * ncg, w - 1);
    T acc[NG][kTileN];
#pragma unroll
    for (int g = 0; g < NG; ++g)
#pragma unroll
      for (int j = 0; j < kTileN; ++j) acc[g][j] = T(0);
    for (int pass = 0; pass < 2; ++pass) {
      const T* W = pass == 0 ? Wa : Wb;
      const T* Z = pass == 0 ? Za : Zb;
      if (W == nullptr) break;
#pragma unroll 2
      for (int r = 0; r < H; ++r) {
        const T* wr = W + r * GH + u;
        T wg[NG];
#pragma unroll
        for (int g = 0; g < NG; ++g) wg[g] = wr[g * H];
        const T* zr = Z + r * ld;
#pragma unroll
        for (int j = 0; j < kTileN; ++j) {
          const T z = zr[col[j]];
#pragma unroll
          for (int g = 0; g < NG; ++g) acc[g][j] += wg[g] * z;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTileN; ++j) {
      const int gc = cg + j * ncg;
      if (gc < w) {
#pragma unroll
        for (int g = 0; g < NG; ++g) G[(g * H + u) * ldg + gcol0 + gc] = acc[g][j];
      }
    }
  }
}

}  // namespace mdesc::cuda_impl
