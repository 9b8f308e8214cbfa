// Multi-versioned entry points of the pointwise step (math in pointwise.h).  The wheel is built
// for baseline x86-64; these clones let the same binary use AVX2 or AVX-512 where present.
#include "cpu/pointwise.h"

namespace mdesc::cpu {

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_MULTIVERSION
#endif

template <typename T>
static inline void tile_impl(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in,
                             T* z, T* coef) {
  for (int64_t s = 0; s < nb; ++s) {
    T* h = z + s * cols * n;
    lstm_pointwise<T>(H, cols, n, g + s * cols * 4 * H, in[s], h, h + H, coef);
  }
}

MDESC_MULTIVERSION
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g,
                         const float* const* in, float* z, float* coef) {
  tile_impl(H, nb, cols, n, g, in, z, coef);
}

MDESC_MULTIVERSION
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g,
                         const double* const* in, double* z, double* coef) {
  tile_impl(H, nb, cols, n, g, in, z, coef);
}

}  // namespace mdesc::cpu
