// TEMPORARY (h2): the per-unit ensemble cell math until h1's csrc/common/ensemble_math.h lands;
// this file is deleted when the kernels switch to the shared header.
#pragma once

#include "common/cell_math.h"

namespace mdesc::ensemble_draft {

struct Lstm {
  static constexpr int kGates = 4, kSaved = 6;
  static constexpr bool kHasC = true, kDirectDh = false;
  // s: i, f, g, o, c_prev, c
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T /*h_prev*/, T& c, T& h, T* s) {
    const T i = M::sigmoid(xp[0] + hp[0]), f = M::sigmoid(xp[1] + hp[1]);
    const T g = M::tanh(xp[2] + hp[2]), o = M::sigmoid(xp[3] + hp[3]);
    const T cn = f * c + i * g;
    s[0] = i; s[1] = f; s[2] = g; s[3] = o; s[4] = c; s[5] = cn;
    c = cn;
    h = o * M::tanh(cn);
  }
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void backward(const T* s, T /*h_prev*/, T /*h*/, T dh, T& dc, T* dxp, T* dhp, T& dh_prev) {
    const T i = s[0], f = s[1], g = s[2], o = s[3], cp = s[4], tc = M::tanh(s[5]);
    const T dct = dc + dh * o * (T(1) - tc * tc);
    dxp[0] = dhp[0] = dct * g * i * (T(1) - i);
    dxp[1] = dhp[1] = dct * cp * f * (T(1) - f);
    dxp[2] = dhp[2] = dct * i * (T(1) - g * g);
    dxp[3] = dhp[3] = dh * tc * o * (T(1) - o);
    dc = dct * f;
    dh_prev = T(0);
  }
};

struct Gru {
  static constexpr int kGates = 3, kSaved = 4;
  static constexpr bool kHasC = false, kDirectDh = true;
  // s: r, z, n, hp_n
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T h_prev, T& /*c*/, T& h, T* s) {
    const T r = M::sigmoid(xp[0] + hp[0]), z = M::sigmoid(xp[1] + hp[1]);
    const T n = M::tanh(xp[2] + r * hp[2]);
    s[0] = r; s[1] = z; s[2] = n; s[3] = hp[2];
    h = (T(1) - z) * n + z * h_prev;
  }
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void backward(const T* s, T h_prev, T /*h*/, T dh, T& /*dc*/, T* dxp, T* dhp, T& dh_prev) {
    const T r = s[0], z = s[1], n = s[2], hn = s[3];
    const T dan = dh * (T(1) - z) * (T(1) - n * n);
    const T dar = dan * hn * r * (T(1) - r);
    const T daz = dh * (h_prev - n) * z * (T(1) - z);
    dxp[0] = dhp[0] = dar;
    dxp[1] = dhp[1] = daz;
    dxp[2] = dan;
    dhp[2] = dan * r;
    dh_prev = dh * z;
  }
};

template <bool kRelu>
struct Rnn {
  static constexpr int kGates = 1, kSaved = 0;
  static constexpr bool kHasC = false, kDirectDh = false;
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void forward(const T* xp, const T* hp, T /*h_prev*/, T& /*c*/, T& h, T* /*s*/) {
    const T a = xp[0] + hp[0];
    if constexpr (kRelu) h = a > T(0) ? a : T(0);
    else h = M::tanh(a);
  }
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void backward(const T* /*s*/, T /*h_prev*/, T h, T dh, T& /*dc*/, T* dxp, T* dhp, T& dh_prev) {
    if constexpr (kRelu) dxp[0] = dhp[0] = h > T(0) ? dh : T(0);
    else dxp[0] = dhp[0] = dh * (T(1) - h * h);
    dh_prev = T(0);
  }
};

template <class F>
inline bool dispatch(const std::string& cell, F&& f) {
  if (cell == "lstm") f(Lstm{});
  else if (cell == "gru") f(Gru{});
  else if (cell == "rnn_tanh") f(Rnn<false>{});
  else if (cell == "rnn_relu") f(Rnn<true>{});
  else return false;
  return true;
}

}  // namespace mdesc::ensemble_draft
