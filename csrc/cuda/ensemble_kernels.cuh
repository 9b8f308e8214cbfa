// The pointwise half of one step of the ensemble recurrence on the GPU (mdesc::ensemble_rnn_forward
// and _backward; the host loop: ensemble_host.h; the per-unit cell formulas and the layouts:
// common/ensemble_math.h, shared with the CPU op).  Device code only, compiled unchanged by the
// CPU emulation (emulation/emulate.cpp).
//
// Shapes (E models, T steps, B sequences, H units, G = Cell::kGates, S = Cell::kSaved), all
// contiguous, gate or slot q of unit u at q*H + u:
//   xproj  (E, T, B, G*H)  W_ih x + b_ih
//   hw     (E, B, G*H)     W_hh h_{t-1} of this step (the batched GEMM's result), without b_hh
//   b_hh   (E, G*H)
//   h_all  (E, T, B, H)    the hidden state after every step
//   saved  (E, T, B, S*H)  what the backward needs; the LSTM's c_{t-1} is slot Cell::kCSlot of
//                          step t-1, so no other state is carried
// One thread per (model, sequence, unit), unit fastest so every access above is coalesced.
#pragma once

#include <cstdint>

#include "common/ensemble_math.h"
#include "cuda/pointwise.cuh"  // CudaMath, kPointwiseThreads

namespace mdesc::cuda_impl {

template <typename T>
struct EnsembleForwardArgs {
  const T* xproj;  // (E, T, B, GH)
  const T* hw;     // (E, B, GH); nullptr at t = 0 (h_{-1} = 0)
  const T* b_hh;   // (E, GH)
  T* h_all;        // (E, T, B, H)
  T* saved;        // (E, T, B, S*H)
  int64_t E, steps, B, H;  // models, steps (T), sequences, units
};

// Step t of the forward: h_all[:, t] and saved[:, t] from xproj[:, t], hw, b_hh and step t-1.
template <class Cell, typename T>
__global__ void __launch_bounds__(kPointwiseThreads) ensemble_forward_kernel(const EnsembleForwardArgs<T> a,
                                                                             int64_t t) {
  constexpr int NG = Cell::kGates;
  const int64_t H = a.H, B = a.B, GH = NG * a.H, SH = Cell::kSaved * a.H;
  const int64_t total = a.E * B * H;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t u = idx % H;
    const int64_t eb = idx / H;  // e * B + b
    const int64_t e = eb / B;
    const int64_t row = (e * a.steps + t) * B + (eb - e * B);  // (e, t, b)
    const T* xp = a.xproj + row * GH + u;
    const T* bias = a.b_hh + e * GH + u;
    const T* hw = a.hw ? a.hw + eb * GH + u : nullptr;
    T x[NG], hp[NG];
#pragma unroll
    for (int q = 0; q < NG; ++q) {
      x[q] = xp[q * H];
      hp[q] = hw ? hw[q * H] + bias[q * H] : bias[q * H];
    }
    T h = t > 0 ? a.h_all[(row - B) * H + u] : T(0);  // in: h_{t-1}, out: h_t
    T c = T(0);
    if constexpr (Cell::kHasC) {
      if (t > 0) c = a.saved[(row - B) * SH + Cell::kCSlot * H + u];
    }
    T s[Cell::kSaved > 0 ? Cell::kSaved : 1];
    Cell::template forward<CudaMath>(x, hp, h, c, s);
    a.h_all[row * H + u] = h;
    T* sv = a.saved + row * SH + u;
#pragma unroll
    for (int q = 0; q < Cell::kSaved; ++q) sv[q * H] = s[q];
  }
}

template <typename T>
struct EnsembleBackwardArgs {
  const T* dh_all;  // (E, T, B, H) dL/dh_all
  T* dh_rec;        // (E, B, H) in: dL/dh_t through step t+1 (zero at t = T-1);
                    //           out: the part of dL/dh_{t-1} that bypasses W_hh (GRU's z dh; else 0)
  T* dc;            // (E, B, H) dL/dc_t carried backwards, zero before step T-1 (LSTM; else unused)
  const T* h_all;   // (E, T, B, H)
  const T* saved;   // (E, T, B, S*H)
  T* dxproj;        // (E, T, B, GH) dL/dxproj
  T* dhproj;        // (E, T, B, GH) dL/d(W_hh h_{t-1} + b_hh)
  int64_t E, steps, B, H;  // models, steps (T), sequences, units
};

// Step t of the backward (the cell's vector-Jacobian product): dxproj[:, t], dhproj[:, t], the
// carried dc and the direct part of dL/dh_{t-1}; the host then adds dhproj[:, t] W_hh to dh_rec.
template <class Cell, typename T>
__global__ void __launch_bounds__(kPointwiseThreads) ensemble_backward_kernel(const EnsembleBackwardArgs<T> a,
                                                                              int64_t t) {
  constexpr int NG = Cell::kGates;
  const int64_t H = a.H, B = a.B, GH = NG * a.H, SH = Cell::kSaved * a.H;
  const int64_t total = a.E * B * H;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t u = idx % H;
    const int64_t eb = idx / H;
    const int64_t e = eb / B;
    const int64_t row = (e * a.steps + t) * B + (eb - e * B);
    const T dh = a.dh_all[row * H + u] + a.dh_rec[eb * H + u];
    const T h_prev = t > 0 ? a.h_all[(row - B) * H + u] : T(0);
    const T h = a.h_all[row * H + u];
    T s[Cell::kSaved > 0 ? Cell::kSaved : 1];
    const T* sv = a.saved + row * SH + u;
#pragma unroll
    for (int q = 0; q < Cell::kSaved; ++q) s[q] = sv[q * H];
    T c_prev = T(0), dc = T(0);
    if constexpr (Cell::kHasC) {
      if (t > 0) c_prev = a.saved[(row - B) * SH + Cell::kCSlot * H + u];
      dc = a.dc[eb * H + u];
    }
    T dx[NG], dhp[NG], dh_prev;
    Cell::backward(s, h, h_prev, c_prev, dh, dc, dx, dhp, dh_prev);
    if constexpr (Cell::kHasC) a.dc[eb * H + u] = dc;
    a.dh_rec[eb * H + u] = dh_prev;
    T* ox = a.dxproj + row * GH + u;
    T* oh = a.dhproj + row * GH + u;
#pragma unroll
    for (int q = 0; q < NG; ++q) {
      ox[q * H] = dx[q];
      oh[q * H] = dhp[q];
    }
  }
}

}  // namespace mdesc::cuda_impl
