// The per-unit math of the ensemble recurrence (issue 24; Python: mdesc/ensemble/recurrent.py,
// ops ensemble_rnn_forward / ensemble_rnn_backward in csrc/mdesc.cpp), written once for every
// backend: the CPU op (csrc/cpu/ensemble.cpp), the CUDA kernels (csrc/cuda/) and the CUDA-on-CPU
// emulation compile these same functions.  No tensors, no allocation: functions of scalars and
// small arrays, one hidden unit u of one sequence of one model at a time.
//
// Layout (E models, T steps, B sequences, H hidden units, G = kGates gate blocks, S = kSaved):
//   xproj  (E, T, B, G*H)  W_ih x + b_ih; gate q of unit u at q*H + u (PyTorch's gate order:
//                          LSTM i, f, g, o; GRU r, z, n; RNN one block)
//   hproj  (B, G*H) per step  W_hh h_{t-1} + b_hh (the recurrent GEMM plus bias)
//   h_all  (E, T, B, H)    the hidden state after every step; h_{-1} = 0 (and c_{-1} = 0)
//   saved  (E, T, B, S*H)  what the backward needs beyond h_all, slot q of unit u at q*H + u:
//     lstm      S = 6: i, f, g, o (activated), c_t, tanh(c_t)      (c_{t-1} = slot 4 of step t-1)
//     gru       S = 4: r, z, n (activated), hp_n = (W_hn h_{t-1} + b_hn)
//     rnn_*     S = 0: h_all is enough (tanh' = 1 - h^2, relu' = [h > 0])
//   dxproj (E, T, B, G*H)  dL/dxproj
//   dhproj (E, T, B, G*H)  dL/dhproj_t; equal to dxproj except GRU's n block (dn_pre * r).  The
//                          caller forms dW_hh = sum_{t,b} dhproj_t^T h_{t-1}, db_hh = sum dhproj.
//
// Per unit, with a the cell's inputs gathered from those rows:
//   forward<M>(xp[G], hp[G], h, c, s[S]):  h, c in: h_{t-1}, c_{t-1} (c: LSTM only, else
//       ignored); out: h_t, c_t.  s: the saved slots of step t.
//   kCSlot: the saved slot holding c_t (LSTM 4; -1 without a c state).
//   backward(s[S], h, h_prev, c_prev, dh, dc, dxp[G], dhp[G], dh_prev):  the vector-Jacobian
//       product of one step.  h = h_t, h_prev = h_{t-1}, c_prev = c_{t-1} (0 at t = 0);
//       dh = dL/dh_t in total (dh_all[t] + what flows back from step t + 1); dc in: dL/dc_t from
//       step t + 1 (LSTM), out: dL/dc_{t-1}; dh_prev out: the part of dL/dh_{t-1} that does NOT
//       pass through W_hh (GRU: z dh; others 0) -- the caller adds dhproj_t W_hh to it.
//
// Backward step t of one model (the caller's loop, reverse time):
//   dh_t   = dh_all[t] + carry                      (carry = 0 at t = T - 1)
//   unit-wise backward -> dxproj[t], dhproj[t], carry = dh_prev direct part, dc
//   carry += dhproj[t] W_hh                         (GEMM (B x GH)(GH x H); skipped at t = 0)
//
// Activations come from a policy M (M::sigmoid, M::tanh), as in common/cell_math.h, so the CPU
// uses its vectorisable approximations and CUDA its intrinsics.  The backward needs no
// activation: it only uses saved, activated values.
#pragma once

#include <cstdint>
#include <cstring>

#include "common/cell_math.h"  // MDESC_HD, MDESC_HD_POLICY

namespace mdesc {

struct EnsembleLstm {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  static constexpr int kSaved = 6;
  static constexpr bool kHasC = true;
  static constexpr int kCSlot = 4;  // saved slot of c_t (the next step's c_prev)

  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T& h, T& c, T* s) {
    const T a[4] = {xp[0] + hp[0], xp[1] + hp[1], xp[2] + hp[2], xp[3] + hp[3]};
    T i, f, g, o;
    lstm_activations<M>(a, i, f, g, o);
    c = f * c + i * g;
    const T tc = M::tanh(c);
    h = o * tc;
    s[0] = i;
    s[1] = f;
    s[2] = g;
    s[3] = o;
    s[4] = c;
    s[5] = tc;
  }

  template <typename T>
  static MDESC_HD void backward(const T* s, T /*h*/, T /*h_prev*/, T c_prev, T dh, T& dc, T* dxp, T* dhp,
                                T& dh_prev) {
    const T i = s[0], f = s[1], g = s[2], o = s[3], tc = s[5];
    const T dct = dc + dh * o * (T(1) - tc * tc);  // dL/dc_t in total
    dxp[0] = dct * g * i * (T(1) - i);
    dxp[1] = dct * c_prev * f * (T(1) - f);
    dxp[2] = dct * i * (T(1) - g * g);
    dxp[3] = dh * tc * o * (T(1) - o);
    dhp[0] = dxp[0];
    dhp[1] = dxp[1];
    dhp[2] = dxp[2];
    dhp[3] = dxp[3];
    dc = dct * f;
    dh_prev = T(0);
  }
};

struct EnsembleGru {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 3;
  static constexpr int kSaved = 4;
  static constexpr bool kHasC = false;
  static constexpr int kCSlot = -1;  // no c state

  // r = sig(xp_r + hp_r), z = sig(xp_z + hp_z), n = tanh(xp_n + r hp_n), h' = (1 - z) n + z h
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T& h, T& /*c*/, T* s) {
    const T r = M::sigmoid(xp[0] + hp[0]);
    const T z = M::sigmoid(xp[1] + hp[1]);
    const T n = M::tanh(xp[2] + r * hp[2]);
    h = (T(1) - z) * n + z * h;
    s[0] = r;
    s[1] = z;
    s[2] = n;
    s[3] = hp[2];
  }

  template <typename T>
  static MDESC_HD void backward(const T* s, T /*h*/, T h_prev, T /*c_prev*/, T dh, T& /*dc*/, T* dxp, T* dhp,
                                T& dh_prev) {
    const T r = s[0], z = s[1], n = s[2], hpn = s[3];
    const T dn = dh * (T(1) - z) * (T(1) - n * n);  // dL/d(xp_n + r hp_n)
    const T dr = dn * hpn * r * (T(1) - r);
    const T dz = dh * (h_prev - n) * z * (T(1) - z);
    dxp[0] = dr;
    dxp[1] = dz;
    dxp[2] = dn;
    dhp[0] = dr;
    dhp[1] = dz;
    dhp[2] = dn * r;
    dh_prev = dh * z;
  }
};

// h' = act(xp + hp), act = tanh or relu (relu'(0) = 0, as PyTorch's autograd).
template <bool kRelu>
struct EnsembleRnn {
  static constexpr const char* kName = kRelu ? "rnn_relu" : "rnn_tanh";
  static constexpr int kGates = 1;
  static constexpr int kSaved = 0;
  static constexpr bool kHasC = false;
  static constexpr int kCSlot = -1;  // no c state

  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T& h, T& /*c*/, T* /*s*/) {
    const T a = xp[0] + hp[0];
    if constexpr (kRelu) {
      h = a > T(0) ? a : T(0);
    } else {
      h = M::tanh(a);
    }
  }

  template <typename T>
  static MDESC_HD void backward(const T* /*s*/, T h, T /*h_prev*/, T /*c_prev*/, T dh, T& /*dc*/, T* dxp, T* dhp,
                                T& dh_prev) {
    if constexpr (kRelu) {
      dxp[0] = h > T(0) ? dh : T(0);
    } else {
      dxp[0] = dh * (T(1) - h * h);
    }
    dhp[0] = dxp[0];
    dh_prev = T(0);
  }
};

// Every cell of the ensemble op; the op's `cell` string is one of their kName.  Index order:
// lstm, gru, rnn_tanh, rnn_relu (the same names and order as common/cell_math.h's Cells).
template <class... C>
struct EnsembleCellList {
  static constexpr int size = sizeof...(C);
  static constexpr const char* names[] = {C::kName...};

  // The index of `name`, -1 when no cell has it (host code).
  static int find(const char* name) {
    int i = 0, found = -1;
    ((found = (found < 0 && std::strcmp(name, C::kName) == 0) ? i : found, ++i), ...);
    return found;
  }

  // Calls f(Cell{}) for the cell at `index`.
  template <class F>
  static void dispatch(int index, F&& f) {
    int i = 0;
    (void)((index == i++ ? (f(C{}), true) : false) || ...);
  }
};
using EnsembleCells = EnsembleCellList<EnsembleLstm, EnsembleGru, EnsembleRnn<false>, EnsembleRnn<true>>;

// Per-step cost of one model (B sequences) for benchmarks and comments, as FLOPs:
//   forward  recurrent GEMM 2 B H (G H), pointwise ~ B G H * (a few tens)
//   backward dh GEMM 2 B (G H) H, and the caller's dW_hh GEMM 2 B (G H) H
}  // namespace mdesc
