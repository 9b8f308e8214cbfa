// Kernels of the stepwise CUDA path of mdesc::lstm_tangent_run (device code only; host side and
// buffer layout: lstm_tangent_stepwise.cu).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cuda/lstm_tangent_common.cuh"

namespace mdesc::cuda_impl {

constexpr int kPointwiseThreads = 256;
constexpr int kQrThreads = 128;

template <typename T>
struct PointwiseArgs {
  T* z;                    // [cc, H, N] h-matrix of layer l
  T* cm;                   // [cc, H, N] c-matrix of layer l
  const T* g;              // [cc, 4H, N]
  const T* xproj;          // [cc, 4H, T, B] (layer 0 only)
  const T* bias;           // [cc, 4H] bias of layer l, already offset to the first checkpoint
  const int64_t* lengths;  // [B]
  int64_t cc, B, H, k, N, Tdrive;  // Tdrive: driven steps (time axis of x)
  int layer;
};

// One thread per (checkpoint, unit, sequence), sequence fastest so the state columns of G, Z and
// Cm are read coalesced.  The thread updates the state and then every tangent vector of its
// sequence for its unit, so the gate values never leave registers.
template <typename T>
__global__ void __launch_bounds__(kPointwiseThreads) stepwise_pointwise_kernel(const PointwiseArgs<T> a, int64_t t) {
  const int64_t total = a.cc * a.H * a.B;
  const int64_t H = a.H, N = a.N, HN = a.H * a.N;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx % a.B;
    const int64_t u = (idx / a.B) % H;
    const int64_t cl = idx / (a.B * H);
    T* Z = a.z + cl * HN + u * N;
    T* Cm = a.cm + cl * HN + u * N;
    const T* G = a.g + cl * 4 * HN + u * N;
    T in[4];
    if (a.layer == 0 && t < a.lengths[b]) {
      const T* xp = a.xproj + ((cl * 4 * H + u) * a.Tdrive + t) * a.B + b;
      const int64_t gate_stride = H * a.Tdrive * a.B;
#pragma unroll
      for (int q = 0; q < 4; ++q) in[q] = xp[q * gate_stride];
    } else {
      const T* bias = a.bias + cl * 4 * H + u;
#pragma unroll
      for (int q = 0; q < 4; ++q) in[q] = bias[q * H];
    }
    T h_new, c_new;
    const Coefs<T> kf =
        lstm_unit(G[b] + in[0], G[HN + b] + in[1], G[2 * HN + b] + in[2], G[3 * HN + b] + in[3], Cm[b], h_new, c_new);
    Cm[b] = c_new;
    Z[b] = h_new;
    for (int64_t j = 0; j < a.k; ++j) {
      const int64_t col = a.B + b * a.k + j;
      T dc = Cm[col];
      const T dh = lstm_unit_tangent(kf, G[col], G[HN + col], G[2 * HN + col], G[3 * HN + col], dc);
      Cm[col] = dc;
      Z[col] = dh;
    }
  }
}

// Grid (ceil(B / nslots), cc): block (x, y) re-orthonormalises the frames of sequences
// [x*nslots, x*nslots + nslots) of local checkpoint y.
//   z, cm      [L, cc, H, N]  h- and c-matrices, N = B * (1 + k); tangent j of sequence b is
//                             column B + b*k + j
//   cc         checkpoints in this launch; c_begin: global index of the first
//   H, L, B, k sizes; nslots: sequences per block (kQrThreads / 32 warps are shared among them)
//   logs       [C, B, nblocks, k]  log R_jj written at counted block blk when blk >= 0
//                                  (blk = -1: warm-up, logs discarded)
template <typename T>
__global__ void __launch_bounds__(kQrThreads)
    stepwise_qr_kernel(T* z, T* cm, int64_t cc, int H, int L, int64_t B, int k, int64_t N, int nslots, double* logs,
                       int64_t c_begin, int64_t nblocks, int64_t blk) {
  const int64_t cl = blockIdx.y;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * nslots;
  const int nb = static_cast<int>(std::min<int64_t>(nslots, B - b0));
  const int64_t HN = static_cast<int64_t>(H) * N;
  const FrameView<T> f{z + cl * HN, cm + cl * HN, N, cc * HN, H, L};
  double* out = blk >= 0 ? logs + (((c_begin + cl) * B + b0) * nblocks + blk) * k : nullptr;
  block_mgs(f, nslots, nb, B + b0 * k, k, out, nblocks * k);
}

}  // namespace mdesc::cuda_impl
