// The twin kernel's fused layer step (csrc/cpu/run.cpp's TwinVariant; the tangent kernel's is in
// fused_step.h / fused_step.cpp): the same packed, register-tiled products, with the twin's update
// of each sequence's columns -- state (its pre-activations kept for the delta), delta (the state
// and the delta together, csrc/common/twin_math.h's lstm_twin_unit, writing the tangent
// coefficients) and tangents (lstm_tangent_unit).
//
// Compiled without trapping math, as twin_pointwise.cpp is: GCC 12 will not if-convert (so not
// vectorise) twin_math.h's clamps otherwise.  Nothing here uses floating-point exceptions.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "cpu/fused_step.h"
#include "common/twin_math.h"

namespace mdesc::cpu {
namespace fused_detail {

template <typename T>
inline __attribute__((always_inline)) void twin_lane(int64_t v, int64_t H, const T* __restrict a,
                                                     const T* __restrict d, const T* __restrict olds,
                                                     const T* __restrict oldd, T* __restrict outs,
                                                     T* __restrict outd, T* __restrict coef) {
  T h = olds[v], c = olds[H + v], dh = oldd[v], dc = oldd[H + v];
  T k0, k1, k2, k3, k4, k5;
  twin::lstm_twin_unit(a[v], a[H + v], a[2 * H + v], a[3 * H + v], d[v], d[H + v], d[2 * H + v], d[3 * H + v], h, c,
                       dh, dc, k0, k1, k2, k3, k4, k5);
  outs[v] = h, outs[H + v] = c, outd[v] = dh, outd[H + v] = dc;
  coef[v] = k0, coef[H + v] = k1, coef[2 * H + v] = k2, coef[3 * H + v] = k3, coef[4 * H + v] = k4,
  coef[5 * H + v] = k5;
}

template <typename T>
inline __attribute__((always_inline)) void twin_tangent_lane(int64_t v, int64_t H, const T* __restrict ga,
                                                             const T* __restrict coef, const T* __restrict old,
                                                             T* __restrict out) {
  T dh = old[v], dc = old[H + v];
  twin::lstm_tangent_unit(coef[v], coef[H + v], coef[2 * H + v], coef[3 * H + v], coef[4 * H + v], coef[5 * H + v],
                          ga[v], ga[H + v], ga[2 * H + v], ga[3 * H + v], dh, dc);
  out[v] = dh, out[H + v] = dc;
}

// Columns per sequence: 0 the state, 1 the delta, 2.. the tangents (s.cols = 2 + k).
struct TwinUpdate {
  template <typename T, int W>
  static inline __attribute__((always_inline)) void column(const FusedLayerStep<T>& s, int64_t pos, int64_t seq,
                                                           int64_t col, const T* __restrict g) {
    const int64_t H = s.H, G = 4 * H, n = s.n;
    T* __restrict coef = s.coef + seq * 6 * H;
    T* __restrict a = s.stash + seq * G;
    if (pos == 0) {  // the state's pre-activations, for its delta column (this block or the next)
      const T* __restrict in = s.in[seq];
#pragma omp simd
      for (int64_t r = 0; r < G; ++r) a[r] = g[r] + in[r];
    } else if (pos == 1) {
      const T* olds = s.zcur + (col - 1) * n + s.row;
      const T* oldd = s.zcur + col * n + s.row;
      T* outs = s.znext + (col - 1) * n + s.row;
      T* outd = s.znext + col * n + s.row;
      for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v)
          twin_lane<T>(v, H, a + r, g + r, olds + r, oldd + r, outs + r, outd + r, coef + r);
      });
    } else {
      const T* old = s.zcur + col * n + s.row;
      T* out = s.znext + col * n + s.row;
      for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v) twin_tangent_lane<T>(v, H, g + r, coef + r, old + r, out + r);
      });
    }
  }
};

}  // namespace fused_detail

namespace {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
template <typename T>
struct BlockGemm {  // the dispatched block GEMM of fused_step.cpp
  void operator()(const FusedShape& sh, int64_t K, const T* wp, const T* panel, const T* wp2, const T* panel2,
                  T* out) const {
    fused_block_gemm(sh, K, wp, panel, out, wp2, panel2);
  }
};

#define MDESC_TWIN_ENTRY(NAME, TARGET, T, BYTES)                                                          \
  __attribute__((target(TARGET))) void NAME(const FusedLayerStep<T>& s) {                              \
    fused_detail::layer_step<fused_detail::TwinUpdate, T, BYTES>(s, BlockGemm<T>{});                    \
  }
MDESC_TWIN_ENTRY(twin_f_v4, "arch=x86-64-v4", float, 64)
MDESC_TWIN_ENTRY(twin_d_v4, "arch=x86-64-v4", double, 64)
MDESC_TWIN_ENTRY(twin_f_v3, "arch=x86-64-v3", float, 32)
MDESC_TWIN_ENTRY(twin_d_v3, "arch=x86-64-v3", double, 32)
#undef MDESC_TWIN_ENTRY

template <typename T>
bool dispatch(const FusedLayerStep<T>& s) {
  if (s.sh.lanes == 0) return false;
  const bool v4 = s.sh.bytes == 64;
  if constexpr (sizeof(T) == 4) {
    v4 ? twin_f_v4(s) : twin_f_v3(s);
  } else {
    v4 ? twin_d_v4(s) : twin_d_v3(s);
  }
  return true;
}
#else
template <typename T>
bool dispatch(const FusedLayerStep<T>&) {
  return false;
}
#endif

}  // namespace

bool fused_twin_layer_step(const FusedLayerStep<float>& s) { return dispatch(s); }
bool fused_twin_layer_step(const FusedLayerStep<double>& s) { return dispatch(s); }

}  // namespace mdesc::cpu

#pragma GCC pop_options
