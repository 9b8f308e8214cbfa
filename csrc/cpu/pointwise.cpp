// Multi-versioned entry points of the pointwise step (math in pointwise.h and
// common/cell_math.h).  The wheel is built for baseline x86-64; these clones let the same binary
// use AVX2 or AVX-512 where present.  One clone set per (cell, dtype), each with the whole tile
// loop inside, so the cell math is inlined into (and vectorised for) every instruction set; the
// cell is chosen through common/cell_math.h's dispatch_cell, as in every backend.
#include "cpu/pointwise.h"

namespace mdesc::cpu {

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_MULTIVERSION
#endif

namespace {

template <class Cell, typename T>
__attribute__((always_inline)) inline void tile_impl(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g,
                                                     const T* const* in, T* z, T* coef) {
  const int64_t GH = Cell::kGates * H;
  for (int64_t s = 0; s < nb; ++s) {
    T* h = z + s * cols * n;
    cell_pointwise<Cell, T>(H, cols, n, g + s * cols * GH, in[s], h, Cell::kHalves == 2 ? h + H : nullptr, coef);
  }
}

// One clone set per (cell, dtype), instantiated for every cell of the table by dispatch_cell.
template <class Cell, typename T>
MDESC_MULTIVERSION void tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in, T* z,
                             T* coef) {
  tile_impl<Cell, T>(H, nb, cols, n, g, in, z, coef);
}

template <typename T>
void dispatch_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in,
                   T* z, T* coef) {
  dispatch_cell(cell, [&](auto c) { tile<decltype(c), T>(H, nb, cols, n, g, in, z, coef); });
}

}  // namespace

void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g,
                         const float* const* in, float* z, float* coef) {
  dispatch_tile(cell, H, nb, cols, n, g, in, z, coef);
}

void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g,
                         const double* const* in, double* z, double* coef) {
  dispatch_tile(cell, H, nb, cols, n, g, in, z, coef);
}

}  // namespace mdesc::cpu
