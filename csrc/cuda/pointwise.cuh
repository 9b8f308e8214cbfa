// The pointwise half of a step on the GPU: the cell of common/cell_math.h applied to state and
// tangent columns (the CPU's counterpart: csrc/cpu/pointwise.h).  Device code only; the matrix
// layout is described in qr.cuh, the host side is run_host.h.
//
//   stepwise_pointwise_kernel   the stepwise path: one thread per (checkpoint, unit, sequence)
//   twin_pointwise_kernel       the same for the twin run (LSTM; common/twin_math.h), whose
//                               columns hold a delta = twin - state after the tangent vectors
//   fused_state_pointwise,
//   fused_tangent_pointwise     the fused path's passes over a tile in shared memory
#pragma once

#include <cstdint>

#include "common/cell_math.h"
#include "common/twin_math.h"

namespace mdesc::cuda_impl {

// The activation policy of common/cell_math.h on the GPU (with --use_fast_math these are the
// hardware approximations; the emulation uses libm).
struct CudaMath {
  static __device__ __forceinline__ float sigmoid(float x) { return 1.0f / (1.0f + expf(-x)); }
  static __device__ __forceinline__ double sigmoid(double x) { return 1.0 / (1.0 + exp(-x)); }
  static __device__ __forceinline__ float tanh(float x) { return tanhf(x); }
  static __device__ __forceinline__ double tanh(double x) { return ::tanh(x); }
};

constexpr int kPointwiseThreads = 256;

template <typename T>
struct PointwiseArgs {
  T* z;                    // [cc, H, N] h-matrix of layer l
  T* cm;                   // [cc, H, N] c-matrix of layer l (nullptr for cells without c)
  const T* g;              // [cc, G, N] gate pre-activations, G = Cell::kGates * H
  const T* xproj;          // [cc, G, T, B] (layer 0 only)
  const T* bias;           // [cc, G] bias of layer l, already offset to the first checkpoint
  const int64_t* lengths;  // [B]
  // N = B (1 + k) columns, or B (2 + k) for the twin (its deltas in columns B (1 + k) + b)
  int64_t cc, B, H, k, N, Tdrive;  // Tdrive: driven steps (time axis of x)
  int layer;
};

// One thread per (checkpoint, unit, sequence), sequence fastest so the state columns of G, Z and
// Cm are read coalesced.  The thread updates the state and then every tangent vector of its
// sequence for its unit, so the coefficients never leave registers.
template <class Cell, typename T>
__global__ void __launch_bounds__(kPointwiseThreads) stepwise_pointwise_kernel(const PointwiseArgs<T> a, int64_t t) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  constexpr bool kHasC = Cell::kHalves == 2;
  const int64_t total = a.cc * a.H * a.B;
  const int64_t H = a.H, N = a.N, HN = a.H * a.N;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx % a.B;
    const int64_t u = (idx / a.B) % H;
    const int64_t cl = idx / (a.B * H);
    T* Z = a.z + cl * HN + u * N;
    T* Cm = kHasC ? a.cm + cl * HN + u * N : nullptr;
    const T* G = a.g + cl * NG * HN + u * N;
    T in[NG];
    if (a.layer == 0 && t < a.lengths[b]) {
      const T* xp = a.xproj + ((cl * NG * H + u) * a.Tdrive + t) * a.B + b;
      const int64_t gate_stride = H * a.Tdrive * a.B;
#pragma unroll
      for (int q = 0; q < NG; ++q) in[q] = xp[q * gate_stride];
    } else {
      const T* bias = a.bias + cl * NG * H + u;
#pragma unroll
      for (int q = 0; q < NG; ++q) in[q] = bias[q * H];
    }
    T pre[NG], k[NK];
#pragma unroll
    for (int q = 0; q < NG; ++q) pre[q] = G[q * HN + b] + in[q];
    T h = Z[b];
    T c = kHasC ? Cm[b] : T(0);
    Cell::template state<CudaMath>(pre, h, c, k);
    Z[b] = h;
    if constexpr (kHasC) Cm[b] = c;
    for (int64_t j = 0; j < a.k; ++j) {
      const int64_t col = a.B + b * a.k + j;
      T da[NG];
#pragma unroll
      for (int q = 0; q < NG; ++q) da[q] = G[q * HN + col];
      T dh = Z[col];
      T dc = kHasC ? Cm[col] : T(0);
      Cell::tangent(k, da, dh, dc);
      Z[col] = dh;
      if constexpr (kHasC) Cm[col] = dc;
    }
  }
}

// The twin run's stepwise kernel (LSTM): one thread per (checkpoint, unit, sequence), the state
// and the delta of its unit, then every tangent vector of the sequence, the coefficients kept in
// registers.  Columns: b state, B + b k + j tangent j, B (1 + k) + b delta (no bias: it cancels).
template <typename T>
__global__ void __launch_bounds__(kPointwiseThreads) twin_pointwise_kernel(const PointwiseArgs<T> a, int64_t t) {
  const int64_t total = a.cc * a.H * a.B;
  const int64_t H = a.H, N = a.N, HN = a.H * a.N, D0 = a.B * (1 + a.k);
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
    T pre[4], da[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      pre[q] = G[q * HN + b] + in[q];
      da[q] = G[q * HN + D0 + b];
    }
    T h = Z[b], c = Cm[b], dh = Z[D0 + b], dc = Cm[D0 + b];
    T k0, k1, k2, k3, k4, k5;
    twin::lstm_twin_unit(pre[0], pre[1], pre[2], pre[3], da[0], da[1], da[2], da[3], h, c, dh, dc, k0, k1, k2, k3,
                         k4, k5);
    Z[b] = h;
    Cm[b] = c;
    Z[D0 + b] = dh;
    Cm[D0 + b] = dc;
    for (int64_t j = 0; j < a.k; ++j) {
      const int64_t col = a.B + b * a.k + j;
      T th = Z[col], tc = Cm[col];
      twin::lstm_tangent_unit(k0, k1, k2, k3, k4, k5, G[col], G[HN + col], G[2 * HN + col], G[3 * HN + col], th, tc);
      Z[col] = th;
      Cm[col] = tc;
    }
  }
}

// Fused path, state columns of a tile: for every (sequence s < BT, unit u), the cell update from
// G columns s (pre-activations of W_hh h (+ W_ih h_below)) plus `in` (layer-0 input projection on
// driven steps, else bias), writing the new state into Zl/Cl column s and the coefficients into
// coef [BT, kCoefs, H].  `in_of(s)` returns the [G] vector added to sequence s.
template <class Cell, typename T, class InOf>
__device__ __forceinline__ void fused_state_pointwise(T* Zl, T* Cl, const T* Gs, T* coef, int H, int BT, int ld,
                                                      int ldg, const InOf& in_of) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  constexpr bool kHasC = Cell::kHalves == 2;
  for (int item = threadIdx.x; item < BT * H; item += blockDim.x) {
    const int u = item % H, s = item / H;
    const T* in = in_of(s);
    const T* g = Gs + u * ldg + s;
    const int64_t e = static_cast<int64_t>(u) * ld + s;
    T pre[NG], k[NK];
#pragma unroll
    for (int q = 0; q < NG; ++q) pre[q] = g[q * H * ldg] + in[q * H + u];
    T h = Zl[e];
    T c = kHasC ? Cl[e] : T(0);
    Cell::template state<CudaMath>(pre, h, c, k);
    T* cs = coef + s * NK * H + u;
#pragma unroll
    for (int q = 0; q < NK; ++q) cs[q * H] = k[q];
    Zl[e] = h;
    if constexpr (kHasC) Cl[e] = c;
  }
}

// Fused path, tangent columns [t0, t0 + w) (index among the tile's BT*k tangent columns), whose
// pre-activations sit in G columns [gcol0, gcol0 + w).
template <class Cell, typename T>
__device__ __forceinline__ void fused_tangent_pointwise(T* Z, T* Cm, const T* G, const T* coef, int H, int k, int BT,
                                                        int ld, int ldg, int t0, int w, int gcol0) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  constexpr bool kHasC = Cell::kHalves == 2;
  for (int item = threadIdx.x; item < H * w; item += blockDim.x) {
    const int gc = item % w;
    const int u = item / w;
    const int tj = t0 + gc;
    const int s = tj / k;
    const T* cs = coef + s * NK * H + u;
    T kf[NK], da[NG];
#pragma unroll
    for (int q = 0; q < NK; ++q) kf[q] = cs[q * H];
    const T* g = G + u * ldg + gcol0 + gc;
#pragma unroll
    for (int q = 0; q < NG; ++q) da[q] = g[q * H * ldg];
    const int64_t e = static_cast<int64_t>(u) * ld + BT + tj;
    T dh = Z[e];
    T dc = kHasC ? Cm[e] : T(0);
    Cell::tangent(kf, da, dh, dc);
    Z[e] = dh;
    if constexpr (kHasC) Cm[e] = dc;
  }
}

}  // namespace mdesc::cuda_impl
