// The pointwise half of one step on the CPU: the cell of common/cell_math.h applied to the state
// column and to every tangent column of a tile (docs/conventions.md).  Kept apart from the loop
// structure so the hot arithmetic is in one place and can be compiled for several instruction
// sets.  (CUDA's counterpart: csrc/cuda/pointwise.cuh.)
//
// exp and tanh are vectorisable polynomial/rational approximations within a few ulp of libm
// (float32: Cephes-style exp, Eigen's rational tanh; float64: Cephes exp and tanh), because
// libm's scalar calls would cost more than the matrix products.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <utility>

#include "common/cell_math.h"

namespace mdesc::cpu {

// exp for float32: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r, scaled by 2^n
// through the exponent bits.  Inputs are clamped to [-87.3, 88.3] (no denormals, no inf).
MDESC_HD float fast_expf(float x) {
  x = x < -87.3f ? -87.3f : (x > 88.3f ? 88.3f : x);
  // round-to-nearest of x / ln2 with the 1.5 * 2^23 trick (vectorises without SSE4.1 floor)
  const float shifter = 12582912.0f;
  const float t = x * 1.44269504088896341f + shifter;
  const float n = t - shifter;
  float r = x - n * 0.693359375f;
  r = r - n * (-2.12194440e-4f);
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// tanh for float32: odd rational approximation x P(x^2) / Q(x^2) on [-7.9, 7.9] (Eigen's
// generic_fast_tanh_float); beyond that tanh is +-1 in float32.  fast_tanhf_pq gives numerator
// and denominator apart; Q lies in [4.9e-3, 0.9] on the clamped range.
MDESC_HD void fast_tanhf_pq(float x, float& num, float& den) {
  const float clamp = 7.90531110763549805f;
  const float xc = x < -clamp ? -clamp : (x > clamp ? clamp : x);
  const float x2 = xc * xc;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  num = p * xc;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  den = q;
}

MDESC_HD float fast_tanhf(float x) {
  float p, q;
  fast_tanhf_pq(x, p, q);
  return p / q;
}

// exp for float64 (Cephes exp.c): x = n ln2 + r, e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)),
// scaled by 2^n through the exponent bits; within ~1 ulp of libm, vectorisable.
MDESC_HD double fast_exp(double x) {
  x = x < -708.0 ? -708.0 : (x > 709.0 ? 709.0 : x);
  const double shifter = 6755399441055744.0;  // 1.5 * 2^52: round to nearest
  const double n = (x * 1.4426950408889634073599 + shifter) - shifter;
  double r = x - n * 6.93145751953125e-1;
  r = r - n * 1.42860682030941723212e-6;
  const double rr = r * r;
  const double p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr +
                        9.99999999999999999910e-1);
  const double q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr +
                    2.27265548208155028766e-1) * rr + 2.00000000000000000009e0;
  const double e = 1.0 + 2.0 * (p / (q - p));
  const int64_t bits = (static_cast<int64_t>(n) + 1023) << 52;
  double scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return e * scale;
}

// tanh for float64 (Cephes tanh.c): rational approximation for |x| < 0.625, else from exp(2|x|).
MDESC_HD double fast_tanh(double x) {
  const double ax = x < 0 ? -x : x;
  const double z = x * x;
  const double p = (-9.64399179425052238628e-1 * z + -9.92877231001918586564e1) * z +
                   -1.61468768441708447952e3;
  const double q = ((z + 1.12811678491632931402e2) * z + 2.23548839060100448583e3) * z +
                   4.84406305325125486048e3;
  const double small = x + x * z * (p / q);
  const double e = fast_exp(2.0 * (ax > 22.0 ? 22.0 : ax));
  const double big = 1.0 - 2.0 / (e + 1.0);
  return ax < 0.625 ? small : (x < 0 ? -big : big);
}

// The activation policy of common/cell_math.h on the CPU.  For float32 LSTMs, lstm_gates gives
// the four gates at once: sigmoid(x) = (1 + tanh(x/2)) / 2 and tanh through the rational
// fast_tanhf_pq, with one division for the four denominators (each in [4.9e-3, 0.9], so their
// product neither under- nor overflows) instead of four -- the division is the costliest
// instruction of the step's pointwise work.
struct CpuMath {
  static MDESC_HD float sigmoid(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
  static MDESC_HD double sigmoid(double x) { return 1.0 / (1.0 + fast_exp(-x)); }
  static MDESC_HD float tanh(float x) { return fast_tanhf(x); }
  static MDESC_HD double tanh(double x) { return fast_tanh(x); }
  static MDESC_HD void lstm_gates(const float* a, float& i, float& f, float& g, float& o) {
    float pi, qi, pf, qf, pg, qg, po, qo;
    fast_tanhf_pq(0.5f * a[0], pi, qi);
    fast_tanhf_pq(0.5f * a[1], pf, qf);
    fast_tanhf_pq(a[2], pg, qg);
    fast_tanhf_pq(0.5f * a[3], po, qo);
    const float qif = qi * qf, qgo = qg * qo;
    const float r = 1.0f / (qif * qgo);
    const float rgo = r * qgo, rif = r * qif;
    i = 0.5f + 0.5f * (pi * (rgo * qf));
    f = 0.5f + 0.5f * (pf * (rgo * qi));
    g = pg * (rif * qo);
    o = 0.5f + 0.5f * (po * (rif * qg));
  }
};

// f(0), f(1), ..., f(N - 1), expanded at compile time (no loop left for the vectoriser to trip on).
template <int N, class F>
MDESC_HD void unrolled(const F& f) {
  [&]<int... Q>(std::integer_sequence<int, Q...>) { (f(Q), ...); }(std::make_integer_sequence<int, N>{});
}

// The cell's update of unit r of the state column, and of unit r of one tangent column.  Kept
// as functions of their own so the small gate/coefficient arrays are locals of these (scalarised
// once inlined), not privates of the `omp simd` loops that call them, which GCC would not
// vectorise.
template <class Cell, typename T>
MDESC_HD void unit_state(int64_t r, int64_t H, const T* __restrict g, const T* __restrict in, T* __restrict h,
                       T* __restrict c, T* __restrict coef) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  T a[NG], k[NK];
  unrolled<NG>([&](int q) { a[q] = g[q * H + r] + in[q * H + r]; });
  T hr = h[r];
  T cr = Cell::kHalves == 2 ? c[r] : T(0);
  Cell::template state<CpuMath>(a, hr, cr, k);
  unrolled<NK>([&](int q) { coef[q * H + r] = k[q]; });
  h[r] = hr;
  if constexpr (Cell::kHalves == 2) c[r] = cr;
}

template <class Cell, typename T>
MDESC_HD void unit_tangent(int64_t r, int64_t H, const T* __restrict ga, const T* __restrict coef, T* __restrict dh,
                         T* __restrict dc) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  T da[NG], k[NK];
  unrolled<NG>([&](int q) { da[q] = ga[q * H + r]; });
  unrolled<NK>([&](int q) { k[q] = coef[q * H + r]; });
  T x = dh[r];
  T y = Cell::kHalves == 2 ? dc[r] : T(0);
  Cell::tangent(k, da, x, y);
  dh[r] = x;
  if constexpr (Cell::kHalves == 2) dc[r] = y;
}

// One layer's pointwise work for one sequence.
//   g     [G, cols]  pre-activations from the GEMMs (G = Cell::kGates * H rows, gate q of unit r
//                    at row q*H + r): column 0 the state, 1..cols-1 the tangents
//   in    [G]        added to the state column only (input projection + bias, or bias)
//   h     [H] in each of `cols` columns `ld` apart: in, the layer's old h rows of the state and
//                    tangent columns; out, the new ones
//   c     likewise for the c rows (LSTM only; unused for cells without a c state)
//   coef  [kCoefs * H] scratch: the state column's tangent coefficients, coefficient q of unit r
//                    at q*H + r
template <class Cell, typename T>
MDESC_HD void cell_pointwise(int64_t H, int64_t cols, int64_t ld, const T* __restrict g,
                           const T* __restrict in, T* __restrict h, T* __restrict c,
                           T* __restrict coef) {
  constexpr bool kHasC = Cell::kHalves == 2;
  const int64_t GH = Cell::kGates * H;
#pragma omp simd
  for (int64_t r = 0; r < H; ++r) unit_state<Cell, T>(r, H, g, in, h, c, coef);
  for (int64_t j = 1; j < cols; ++j) {
    const T* __restrict ga = g + j * GH;
    T* __restrict dh = h + j * ld;
    T* __restrict dc = kHasC ? c + j * ld : nullptr;
#pragma omp simd
    for (int64_t r = 0; r < H; ++r) unit_tangent<Cell, T>(r, H, ga, coef, dh, dc);
  }
}

// Entry points compiled for several instruction sets, picked at load time by the CPU
// (GCC/Clang function multi-versioning); defined in pointwise.cpp.
// g [G, nb*cols]; z [n, nb*cols] points at the layer's first h row (for the LSTM its c rows
// follow at +H); sequence s owns columns s*cols .. s*cols + cols - 1 and in[s] is added to its
// state column.  coef: kCoefs * H scratch (6H is enough for every cell).
void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g,
                         const float* const* in, float* z, float* coef);
void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g,
                         const double* const* in, double* z, double* coef);

// The twin kernel's pointwise pass (LSTM only; csrc/cpu/twin_pointwise.cpp, math in
// common/twin_math.h): as cell_pointwise_tile with columns state, delta (= twin - state), tangents.
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g, const float* const* in,
                         float* z, float* coef);
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g, const double* const* in,
                         double* z, double* coef);

// Scratch elements cell_pointwise needs per hidden unit, for any cell.
constexpr int64_t kMaxCoefs = Cells::max_coefs;

}  // namespace mdesc::cpu
