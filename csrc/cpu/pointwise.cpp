// Multi-versioned entry points of the pointwise step (math in pointwise.h).  The wheel is built
// for baseline x86-64; these clones let the same binary use AVX2 or AVX-512 where present.
#include "cpu/pointwise.h"

namespace mdesc::cpu {

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_MULTIVERSION
#endif

// g [4H, nb*cols], h and c [H, nb*cols]: sequence s owns columns s*cols .. s*cols + cols - 1;
// in[s] is the vector added to its state column's pre-activations.
template <typename T>
static inline void tile_impl(int64_t H, int64_t nb, int64_t cols, const T* g, const T* const* in, T* h,
                             T* c, T* coef) {
  for (int64_t s = 0; s < nb; ++s) {
    lstm_pointwise<T>(H, cols, g + s * cols * 4 * H, in[s], h + s * cols * H, c + s * cols * H, coef);
  }
}

MDESC_MULTIVERSION
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, const float* g, const float* const* in,
                         float* h, float* c, float* coef) {
  tile_impl(H, nb, cols, g, in, h, c, coef);
}

MDESC_MULTIVERSION
void lstm_pointwise_tile(int64_t H, int64_t nb, int64_t cols, const double* g, const double* const* in,
                         double* h, double* c, double* coef) {
  tile_impl(H, nb, cols, g, in, h, c, coef);
}

}  // namespace mdesc::cpu
