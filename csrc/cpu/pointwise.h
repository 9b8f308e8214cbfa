// The pointwise half of one LSTM step on the CPU: gate activations, new (h, c) and the tangent
// update of every column (DESIGN.md §2).  Kept apart from the loop structure so the hot
// arithmetic is in one place and can be compiled for several instruction sets.
//
// exp and tanh are vectorisable polynomial/rational approximations within a few ulp of libm
// (float32: Cephes-style exp, Eigen's rational tanh; float64: Cephes exp and tanh), because
// libm's scalar calls would cost more than the matrix products.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace mdesc::cpu {

// exp for float32: x = n ln2 + r, |r| <= ln2/2, degree-6 polynomial for e^r, scaled by 2^n
// through the exponent bits.  Inputs are clamped to [-87.3, 88.3] (no denormals, no inf).
inline float fast_expf(float x) {
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
// generic_fast_tanh_float); beyond that tanh is +-1 in float32.
inline float fast_tanhf(float x) {
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
  p = p * xc;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// exp for float64 (Cephes exp.c): x = n ln2 + r, e^r = 1 + 2 r P(r^2) / (Q(r^2) - r P(r^2)),
// scaled by 2^n through the exponent bits; within ~1 ulp of libm, vectorisable.
inline double fast_exp(double x) {
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
inline double fast_tanh(double x) {
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

inline float act_sigmoid(float x) { return 1.0f / (1.0f + fast_expf(-x)); }
inline float act_tanh(float x) { return fast_tanhf(x); }
inline double act_sigmoid(double x) { return 1.0 / (1.0 + fast_exp(-x)); }
inline double act_tanh(double x) { return fast_tanh(x); }

// One layer's pointwise work for one sequence.
//   g     [4H, cols]  pre-activations from the GEMMs: column 0 the state, 1..cols-1 tangents
//   in    [4H]        added to the state column only (input projection + bias, or bias)
//   h, c  [H] each, in `cols` columns `ld` apart: in, the layer's old h / c rows of the state
//         and tangent columns; out, the new ones
//   coef  [6H]        scratch
template <typename T>
inline void lstm_pointwise(int64_t H, int64_t cols, int64_t ld, const T* __restrict g,
                           const T* __restrict in, T* __restrict h, T* __restrict c,
                           T* __restrict coef) {
  const int64_t H4 = 4 * H;
  T* __restrict ci = coef;           // i (1 - i) g        multiplies d a_i
  T* __restrict cf = coef + H;       // f (1 - f) c_old    multiplies d a_f
  T* __restrict cg = coef + 2 * H;   // i (1 - g^2)        multiplies d a_g
  T* __restrict ff = coef + 3 * H;   // f                  multiplies d c
  T* __restrict co = coef + 4 * H;   // o (1 - o) tanh c'  multiplies d a_o
  T* __restrict oc = coef + 5 * H;   // o (1 - tanh^2 c')  multiplies d c'
#pragma omp simd
  for (int64_t r = 0; r < H; ++r) {
    const T i = act_sigmoid(g[r] + in[r]);
    const T f = act_sigmoid(g[H + r] + in[H + r]);
    const T gg = act_tanh(g[2 * H + r] + in[2 * H + r]);
    const T o = act_sigmoid(g[3 * H + r] + in[3 * H + r]);
    const T c_old = c[r];
    const T c_new = f * c_old + i * gg;
    const T tc = act_tanh(c_new);
    ci[r] = i * (T(1) - i) * gg;
    cf[r] = f * (T(1) - f) * c_old;
    cg[r] = i * (T(1) - gg * gg);
    ff[r] = f;
    co[r] = o * (T(1) - o) * tc;
    oc[r] = o * (T(1) - tc * tc);
    c[r] = c_new;
    h[r] = o * tc;
  }
  for (int64_t j = 1; j < cols; ++j) {
    const T* __restrict ga = g + j * H4;
    T* __restrict dh = h + j * ld;
    T* __restrict dc = c + j * ld;
#pragma omp simd
    for (int64_t r = 0; r < H; ++r) {
      const T dcn = cf[r] * ga[H + r] + ff[r] * dc[r] + ci[r] * ga[r] + cg[r] * ga[2 * H + r];
      dc[r] = dcn;
      dh[r] = co[r] * ga[3 * H + r] + oc[r] * dcn;
    }
  }
}

// Entry points compiled for several instruction sets, picked at load time by the CPU
// (GCC/Clang function multi-versioning); defined in pointwise.cpp.
// g [4H, nb*cols]; z [n, nb*cols] points at the layer's first h row (its c rows follow at +H);
// sequence s owns columns s*cols .. s*cols + cols - 1 and in[s] is added to its state column.
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g,
                         const float* const* in, float* z, float* coef);
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g,
                         const double* const* in, double* z, double* coef);

}  // namespace mdesc::cpu
