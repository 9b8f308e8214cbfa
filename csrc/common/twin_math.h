// The math of mdesc::lstm_twin_run, written once for every backend: an LSTM step of the
// unperturbed state, of the *difference* delta = (h' - h, c' - c) to its twin, and of k tangent
// vectors, with the nonlinearities' differences in forms that never subtract two nearly equal
// numbers.  So delta keeps *relative* precision however small it gets (down to the dtype's
// smallest normal number, below which the kernels flush to zero), and float32 resolves distances
// far below the e^-15 floor of docs/conventions.md §5.  Compiled by the CPU kernel
// (csrc/cpu/twin_pointwise.cpp, fused_twin.cpp), by nvcc (csrc/cuda/pointwise.cuh via run.cu) and by the CUDA-on-CPU emulation.
// No tensors, no allocation: plain functions of scalars.
//
// The finite (not linearised) difference of every piece of a step, for a unit with state
// pre-activations a and their difference d (the GEMM applied to the delta column: d = W_hh dh +
// W_ih dh_below, exactly as a product):
//
//   sigma(a + d) - sigma(a) = sgn(d) (-q) s sb / (A + B e)          q = expm1(-|d|), e = 1 + q
//        with s = sigma(a), sb = 1 - sigma(a) (both computed without cancellation), and
//        (A, B) = (s, sb) for d >= 0, (sb, s) for d < 0 (sigmoid_with_diff evaluates it with the
//        state's sigma in one division).  Derivation: for d < 0,
//        sigma(a+d) - sigma(a) = s sb (e^d - 1) / (1 + s (e^d - 1)) = s sb q / (sb + s e^d), a sum
//        of positive terms in the denominator; for d > 0 use sigma(x) = 1 - sigma(-x):
//        sigma(a+d) - sigma(a) = -(sigma(-a-d) - sigma(-a)), the d < 0 case at -a.
//   tanh(a + d) - tanh(a)   = 2 (sigma(2a + 2d) - sigma(2a)), i.e. the line above with
//        s = (1 + t)/2, sb = (1 - t)/2, t = tanh a, and q = expm1(-2|d|):
//        = sgn(d) (-q) tp tm / (A' + B' e),  tp = 1 + t, tm = 1 - t, (A', B') = (tp, tm) or (tm, tp)
//        (equal to (1 - t^2) tanh d / (1 + t tanh d), with 1 + t tanh d = (tp (1 + tanh d) +
//        tm (1 - tanh d)) / 2 written as a sum of positive terms).
//   (f + df)(c + dc) - f c  = df (c + dc) + f dc;   likewise (i + di)(g + dg) - i g and
//   (o + do) tanh(c' + dc') - o tanh c' = do (tanh c' + dtanh) + o dtanh.
//
// Every sigmoid and tanh of the state is computed from exp / expm1 of -|x| so that sigma, 1 -
// sigma, 1 + tanh and 1 - tanh all keep relative precision (also in saturation, where 1 - sigma is
// tiny).  exp and expm1 of non-positive arguments share one range reduction x = n ln2 + r,
// |r| <= ln2/2: e^r - 1 by its Taylor polynomial (degree 8 in float32, 13 in float64: below half
// an ulp on that interval), exp(x) = 2^n (1 + (e^r - 1)), expm1(x) = 2^n (e^r - 1) + (2^n - 1);
// branch-free, so the CPU's loops vectorise (csrc/cpu/twin_pointwise.cpp compiles it with
// -fno-trapping-math: with trapping math GCC 12 will not if-convert the clamp of exp's argument).
#pragma once

#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define MDESC_TWIN_HD __host__ __device__ __forceinline__
#elif defined(__GNUC__)
#define MDESC_TWIN_HD inline __attribute__((always_inline))
#else
#define MDESC_TWIN_HD inline
#endif

namespace mdesc::twin {

// 2^n from t = n + 1.5 * 2^(mantissa bits) (the rounding trick of exp_expm1), through the
// exponent bits: the low mantissa bits of t hold n in two's complement, so no float-to-int
// conversion is needed (none that could be undefined for a NaN, none that blocks vectorisation).
MDESC_TWIN_HD float pow2_shifted(float t) {
#if defined(__CUDA_ARCH__)
  const int32_t ti = __float_as_int(t);
#else
  int32_t ti;
  std::memcpy(&ti, &t, sizeof(ti));
#endif
  const int32_t bits = static_cast<int32_t>(static_cast<uint32_t>(ti - 0x4B400000 + 127) << 23);
#if defined(__CUDA_ARCH__)
  return __int_as_float(bits);
#else
  float s;
  std::memcpy(&s, &bits, sizeof(s));
  return s;
#endif
}
MDESC_TWIN_HD double pow2_shifted(double t) {
#if defined(__CUDA_ARCH__)
  const int64_t ti = __double_as_longlong(t);
#else
  int64_t ti;
  std::memcpy(&ti, &t, sizeof(ti));
#endif
  const int64_t bits = static_cast<int64_t>(static_cast<uint64_t>(ti - 0x4338000000000000LL + 1023) << 52);
#if defined(__CUDA_ARCH__)
  return __longlong_as_double(static_cast<long long>(bits));
#else
  double s;
  std::memcpy(&s, &bits, sizeof(s));
  return s;
#endif
}

// e^r - 1 for |r| <= ln2/2 by Horner on the Taylor series (relative error below half an ulp).
MDESC_TWIN_HD float em1_reduced(float r) {
  float p = 1.0f / 40320.0f;
  p = p * r + 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  return p * r;
}
MDESC_TWIN_HD double em1_reduced(double r) {
  double p = 1.0 / 6227020800.0;  // 1/13!
  p = p * r + 1.0 / 479001600.0;
  p = p * r + 1.0 / 39916800.0;
  p = p * r + 1.0 / 3628800.0;
  p = p * r + 1.0 / 362880.0;
  p = p * r + 1.0 / 40320.0;
  p = p * r + 1.0 / 5040.0;
  p = p * r + 1.0 / 720.0;
  p = p * r + 1.0 / 120.0;
  p = p * r + 1.0 / 24.0;
  p = p * r + 1.0 / 6.0;
  p = p * r + 0.5;
  p = p * r + 1.0;
  return p * r;
}

template <typename T>
struct Limits;
template <>
struct Limits<float> {
  static constexpr float lowest_arg = -87.0f;  // exp stays normal
  static constexpr float shifter = 12582912.0f;  // 1.5 * 2^23
  static constexpr float ln2_hi = 0.693359375f, ln2_lo = -2.12194440e-4f;
  static constexpr float inv_ln2 = 1.44269504088896341f;
};
template <>
struct Limits<double> {
  static constexpr double lowest_arg = -708.0;
  static constexpr double shifter = 6755399441055744.0;  // 1.5 * 2^52
  static constexpr double ln2_hi = 6.93145751953125e-1, ln2_lo = 1.42860682030941723212e-6;
  static constexpr double inv_ln2 = 1.4426950408889634073599;
};

// e = exp(x) and m = expm1(x) for x <= 0, both with relative precision.  NaN in, NaN out (the
// scale 2^n is then some finite number or zero, and multiplies a NaN polynomial).
template <typename T>
MDESC_TWIN_HD void exp_expm1(T x, T& e, T& m) {
  using Lm = Limits<T>;
  x = x < Lm::lowest_arg ? Lm::lowest_arg : x;
  const T t = x * Lm::inv_ln2 + Lm::shifter;  // n + shifter, n = round(x / ln2)
  const T n = t - Lm::shifter;
  T r = x - n * Lm::ln2_hi;
  r = r - n * Lm::ln2_lo;
  const T p = em1_reduced(r);
  const T s = pow2_shifted(t);
  e = s * (T(1) + p);
  m = s * p + (s - T(1));
}

// sigma(a), 1 - sigma(a) and the difference ds = sigma(a + d) - sigma(a), with one division.
// With u = e^{-|a|}, e = e^{-|d|}, q = e - 1 (expm1) and P = 1 + u e when a and d have the same
// sign, u + e otherwise (a sum of positive terms either way), D = 1 / ((1 + u) P):
//   sigma(|a|) = P D,  1 - sigma(|a|) = u P D,  ds = sgn(d) (-q) u D.
// (For a, d >= 0: 1/(1 + u e) - 1/(1 + u) = u (1 - e) / ((1 + u)(1 + u e)); the other sign cases
// follow from sigma(-x) = 1 - sigma(x).)
template <typename T>
MDESC_TWIN_HD void sigmoid_with_diff(T a, T d, T& s, T& sb, T& ds) {
  T u, e, q, unused;
  exp_expm1(a < T(0) ? a : -a, u, unused);
  exp_expm1(d < T(0) ? d : -d, e, q);
  const bool same = (a < T(0)) == (d < T(0));
  const T P = same ? T(1) + u * e : u + e;
  const T D = T(1) / ((T(1) + u) * P);
  const T big = P * D, small = u * big;
  s = a < T(0) ? small : big;
  sb = a < T(0) ? big : small;
  const T mag = -q * u * D;
  ds = d < T(0) ? -mag : mag;
}

// tanh(a), 1 + tanh(a), 1 - tanh(a) and dt = tanh(a + d) - tanh(a) = 2 (sigma(2a + 2d) -
// sigma(2a)), with one division: u = e^{-2|a|}, qa = u - 1, e = e^{-2|d|}, q = e - 1, P as above,
// D = 1 / ((1 + u) P):  |tanh a| = -qa P D,  1 + |tanh a| = 2 P D,  1 - |tanh a| = 2 u P D,
// dt = 2 sgn(d) (-q) u D.  (Equal to (1 - tanh^2 a) tanh d / (1 + tanh a tanh d).)
template <typename T>
MDESC_TWIN_HD void tanh_with_diff(T a, T d, T& t, T& tp, T& tm, T& dt) {
  T u, qa, e, q;
  exp_expm1(T(2) * (a < T(0) ? a : -a), u, qa);
  exp_expm1(T(2) * (d < T(0) ? d : -d), e, q);
  const bool same = (a < T(0)) == (d < T(0));
  const T P = same ? T(1) + u * e : u + e;
  const T D = T(1) / ((T(1) + u) * P);
  const T PD = P * D;
  const T mag = -qa * PD, hi = T(2) * PD, lo = hi * u;
  t = a < T(0) ? -mag : mag;
  tp = a < T(0) ? lo : hi;
  tm = a < T(0) ? hi : lo;
  const T dmag = T(2) * (-q) * u * D;
  dt = d < T(0) ? -dmag : dmag;
}

// One LSTM unit (docs/conventions.md §1; gates i, f, g, o).  Scalars only (no arrays), so the
// CPU's `omp simd` loops vectorise it once inlined.
//   a_*    the state column's pre-activations (bias / input projection included)
//   d_*    the delta column's: W applied to the delta (no bias: it cancels)
//   h, c   in: the unit's old state; out: the new one
//   dh, dc in: the old delta; out: the new delta (h'_twin - h', c'_twin - c')
//   k0..k5 out: the coefficients of the linearised update of the tangent columns, as in
//          csrc/common/cell_math.h's LstmCell:  dc' = k1 da_f + k3 dc + k0 da_i + k2 da_g,
//          dh' = k4 da_o + k5 dc'
template <typename T>
MDESC_TWIN_HD void lstm_twin_unit(T a_i, T a_f, T a_g, T a_o, T d_i, T d_f, T d_g, T d_o, T& h, T& c, T& dh, T& dc,
                                  T& k0, T& k1, T& k2, T& k3, T& k4, T& k5) {
  T i, ib, f, fb, o, ob, g, gp, gm, di, df, dg, dO;
  sigmoid_with_diff(a_i, d_i, i, ib, di);
  sigmoid_with_diff(a_f, d_f, f, fb, df);
  tanh_with_diff(a_g, d_g, g, gp, gm, dg);
  sigmoid_with_diff(a_o, d_o, o, ob, dO);
  const T c_old = c, dc_old = dc;
  const T c_new = f * c_old + i * g;
  const T dc_new = df * (c_old + dc_old) + f * dc_old + di * (g + dg) + i * dg;
  T tc, tcp, tcm, dtc;
  tanh_with_diff(c_new, dc_new, tc, tcp, tcm, dtc);
  k0 = i * ib * g;
  k1 = f * fb * c_old;
  k2 = i * (gp * gm);
  k3 = f;
  k4 = o * ob * tc;
  k5 = o * (tcp * tcm);
  c = c_new;
  h = o * tc;
  dc = dc_new;
  dh = dO * (tc + dtc) + o * dtc;
}

// One tangent column of the unit, from the coefficients of lstm_twin_unit.
template <typename T>
MDESC_TWIN_HD void lstm_tangent_unit(T k0, T k1, T k2, T k3, T k4, T k5, T da_i, T da_f, T da_g, T da_o, T& dh,
                                     T& dc) {
  const T dcn = k1 * da_f + k3 * dc + k0 * da_i + k2 * da_g;
  dc = dcn;
  dh = k4 * da_o + k5 * dcn;
}

}  // namespace mdesc::twin
