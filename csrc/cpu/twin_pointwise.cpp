// The twin kernel's pointwise pass (mdesc::lstm_twin_run, LSTM only; the runner: csrc/cpu/run.cpp;
// math: csrc/common/twin_math.h), multi-versioned like csrc/cpu/pointwise.cpp: one clone set per
// dtype with the whole tile loop inside, so the math is vectorised for every instruction set.
//
// Compiled without trapping math: GCC 12 will not if-convert (so not vectorise) the clamps of
// twin_math.h's exp otherwise.  Nothing here uses floating-point exceptions.
#include "cpu/pointwise.h"

#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/twin_math.h"

namespace mdesc::cpu {
namespace {

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_TWIN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_TWIN_MULTIVERSION
#endif

// Unit r of the state and delta columns, and of one tangent column: scalars only, so they
// vectorise once inlined into the `omp simd` loops.
template <typename T>
inline __attribute__((always_inline)) void twin_unit(int64_t r, int64_t H, const T* __restrict g,
                                                     const T* __restrict gd, const T* __restrict in,
                                                     T* __restrict z, T* __restrict zd, T* __restrict coef) {
  T h = z[r], c = z[H + r], dh = zd[r], dc = zd[H + r];
  T k0, k1, k2, k3, k4, k5;
  twin::lstm_twin_unit(g[r] + in[r], g[H + r] + in[H + r], g[2 * H + r] + in[2 * H + r], g[3 * H + r] + in[3 * H + r],
                       gd[r], gd[H + r], gd[2 * H + r], gd[3 * H + r], h, c, dh, dc, k0, k1, k2, k3, k4, k5);
  z[r] = h, z[H + r] = c, zd[r] = dh, zd[H + r] = dc;
  coef[r] = k0, coef[H + r] = k1, coef[2 * H + r] = k2, coef[3 * H + r] = k3, coef[4 * H + r] = k4,
  coef[5 * H + r] = k5;
}

template <typename T>
inline __attribute__((always_inline)) void tangent_unit(int64_t r, int64_t H, const T* __restrict ga,
                                                        const T* __restrict coef, T* __restrict zt) {
  T dh = zt[r], dc = zt[H + r];
  twin::lstm_tangent_unit(coef[r], coef[H + r], coef[2 * H + r], coef[3 * H + r], coef[4 * H + r], coef[5 * H + r],
                          ga[r], ga[H + r], ga[2 * H + r], ga[3 * H + r], dh, dc);
  zt[r] = dh, zt[H + r] = dc;
}

// One layer's pointwise pass over a tile: g [4H, nb*cols], z [n, nb*cols] at the layer's first
// h row; sequence s owns columns s*cols .. (state, delta, k tangents); in[s] is added to its state.
template <typename T>
inline __attribute__((always_inline)) void twin_tile_impl(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in, T* z,
                           T* coef) {
  const int64_t H4 = 4 * H;
  for (int64_t s = 0; s < nb; ++s) {
    const T* gs = g + s * cols * H4;
    T* zs = z + s * cols * n;
    const T* __restrict ins = in[s];
#pragma omp simd
    for (int64_t r = 0; r < H; ++r) twin_unit<T>(r, H, gs, gs + H4, ins, zs, zs + n, coef);
    for (int64_t j = 2; j < cols; ++j) {
#pragma omp simd
      for (int64_t r = 0; r < H; ++r) tangent_unit<T>(r, H, gs + j * H4, coef, zs + j * n);
    }
  }
}

}  // namespace

MDESC_TWIN_MULTIVERSION
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g, const float* const* in,
                         float* z, float* coef) {
  twin_tile_impl(H, nb, cols, n, g, in, z, coef);
}

MDESC_TWIN_MULTIVERSION
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g, const double* const* in,
                         double* z, double* coef) {
  twin_tile_impl(H, nb, cols, n, g, in, z, coef);
}

}  // namespace mdesc::cpu

#pragma GCC pop_options
