// Multi-versioned entry points of the pointwise step (math in pointwise.h and
// common/cell_math.h).  The wheel is built for baseline x86-64; these clones let the same binary
// use AVX2 or AVX-512 where present.  One clone set per (cell, dtype), each with the whole tile
// loop inside, so the cell math is inlined into (and vectorised for) every instruction set.
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

#define MDESC_TILE(NAME, CELL, T)                                                                        \
  MDESC_MULTIVERSION void NAME(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g,               \
                               const T* const* in, T* z, T* coef) {                                     \
    tile_impl<CELL, T>(H, nb, cols, n, g, in, z, coef);                                                  \
  }
MDESC_TILE(tile_lstm_f, LstmCell, float)
MDESC_TILE(tile_lstm_d, LstmCell, double)
MDESC_TILE(tile_gru_f, GruCell, float)
MDESC_TILE(tile_gru_d, GruCell, double)
MDESC_TILE(tile_rnn_tanh_f, RnnTanhCell, float)
MDESC_TILE(tile_rnn_tanh_d, RnnTanhCell, double)
MDESC_TILE(tile_rnn_relu_f, RnnReluCell, float)
MDESC_TILE(tile_rnn_relu_d, RnnReluCell, double)
#undef MDESC_TILE

}  // namespace

void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g,
                         const float* const* in, float* z, float* coef) {
  switch (cell) {
    case CellKind::kLstm: return tile_lstm_f(H, nb, cols, n, g, in, z, coef);
    case CellKind::kGru: return tile_gru_f(H, nb, cols, n, g, in, z, coef);
    case CellKind::kRnnTanh: return tile_rnn_tanh_f(H, nb, cols, n, g, in, z, coef);
    case CellKind::kRnnRelu: return tile_rnn_relu_f(H, nb, cols, n, g, in, z, coef);
  }
}

void cell_pointwise_tile(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g,
                         const double* const* in, double* z, double* coef) {
  switch (cell) {
    case CellKind::kLstm: return tile_lstm_d(H, nb, cols, n, g, in, z, coef);
    case CellKind::kGru: return tile_gru_d(H, nb, cols, n, g, in, z, coef);
    case CellKind::kRnnTanh: return tile_rnn_tanh_d(H, nb, cols, n, g, in, z, coef);
    case CellKind::kRnnRelu: return tile_rnn_relu_d(H, nb, cols, n, g, in, z, coef);
  }
}

}  // namespace mdesc::cpu
