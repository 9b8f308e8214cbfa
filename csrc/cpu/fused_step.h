// One layer's step of the CPU tangent kernel as one fused pass over the work unit's columns: the
// products with the recurrent weights and the cell's pointwise update, block of columns by block
// of columns, while the products' output is in L1 (issue 11).  The run's structure and layouts
// are in csrc/cpu/run.cpp, the cell math in csrc/common/cell_math.h.
//
// Why: the unfused path calls BLAS once per layer and step on [G x H] . [H x M] (G = 240, H = 60,
// M ~ 48 at the paper's size) and then reads the [G x M] result back for the pointwise pass.
// BLAS re-packs W_hh on every call and its blocking targets large products.  Here
//   * W_hh (and W_ih of an upper layer) is packed once per run into row tiles of RV vectors,
//     [tile][k][RV][lanes], in the G rows' own (gate-major) order: G = 240 rows are 15 vectors
//     of 16 floats, no padding;
//   * the layer's h rows of every column are packed once per step into B-panels [block][k][NR],
//     so the micro-kernel broadcasts from constant offsets;
//   * a micro-tile of RV x NR vectors accumulates in registers over k (RV * NR = 24 with AVX-512's
//     32 registers, 12 with AVX2's 16), is stored into the block's [NR][G] scratch, and once all
//     row tiles of a block are done, the block's columns get their cell update from L1: state
//     columns first write their tangent coefficients ([seq][coef][unit]), tangent columns (same
//     or later block) read them.  Units go in vectors of `lanes`; when H is not a multiple, the
//     last vector overlaps the one before (recomputing a few units from the same inputs gives
//     the same outputs), so every update runs in full vectors.
// h is double-buffered (zcur -> znext): every block of a step reads the old h of its columns, so
// new values cannot overwrite them in place.
//
// Vector code uses GCC vector extensions over `Bytes`-wide vectors, instantiated in
// csrc/cpu/fused_step.cpp inside functions compiled for AVX-512 (64 bytes) or AVX2 (32 bytes);
// the kernels take it by default with AVX-512 only (cpu_path in csrc/mdesc.cpp); other machines,
// layers narrower than one vector, and portable_gemm take the unfused path.
#pragma once

#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common/cell_math.h"
#include "cpu/pointwise.h"

namespace mdesc::cpu {

// How the fused step tiles one layer (0 lanes: no fused path for it on this CPU).
struct FusedShape {
  int64_t lanes = 0;  // elements per vector
  int64_t rv = 0;     // vectors per row tile
  int64_t nr = 0;     // columns per micro-tile
  int64_t G = 0;      // gate rows
  int64_t tiles = 0;  // row tiles
  int64_t Gpad = 0;   // tiles * rv * lanes
  int64_t bytes = 0;  // vector bytes of the ISA the step runs with: 64 (AVX-512) or 32 (AVX2)
};

// Vector lanes of the fused step on this CPU for elements of elem_bytes (4 or 8); 0: none.
int64_t fused_lanes(int64_t elem_bytes);

// The tiling for a layer of H units and M columns of T (elem bytes), chosen to waste the least
// padding of rows and columns; avx2: the AVX2 code even on an AVX-512 CPU (cpu_path="fused_avx2",
// so the tests cover both; lanes 0 where the CPU has no AVX2).
FusedShape fused_shape(CellKind cell, int64_t H, int64_t M, int64_t elem, bool avx2 = false);

// Whether this CPU can run the AVX2 code of the fused step.
bool fused_has_avx2();

// Elements of the packed weights of one [G x K] matrix.
inline int64_t fused_packed_size(const FusedShape& sh, int64_t K) { return sh.Gpad * K; }

// Elements of the B-panels of M columns of K rows (two sources, for an upper layer).
inline int64_t fused_panel_size(const FusedShape& sh, int64_t M, int64_t K) {
  return 2 * ((M + sh.nr - 1) / sh.nr) * sh.nr * K;
}

// Packs w ([G, K] row-major) into dst: dst[((t * K + k) * rv + v) * lanes + e] = w[row][k] with
// row = (t * rv + v) * lanes + e (0 past G).
template <typename T>
void fused_pack_weights(const FusedShape& sh, int64_t K, const T* w, T* dst) {
  for (int64_t t = 0; t < sh.tiles; ++t)
    for (int64_t k = 0; k < K; ++k)
      for (int64_t v = 0; v < sh.rv; ++v)
        for (int64_t e = 0; e < sh.lanes; ++e) {
          const int64_t row = (t * sh.rv + v) * sh.lanes + e;
          *dst++ = row < sh.G ? w[row * K + k] : T(0);
        }
}

// Packs every layer's W_hh, and W_ih of the layers above the first, of checkpoint c (w_hh[l],
// w_ih[l] point at [C, G, H]) into wp_hh / wp_ih, one fused_packed_size(sh, H) block per layer.
template <typename T, class Pointers>
void fused_pack_layers(const FusedShape& sh, int64_t L, int64_t H, int64_t c, const Pointers& w_hh,
                       const Pointers& w_ih, T* wp_hh, T* wp_ih) {
  const int64_t packed = fused_packed_size(sh, H), GH = sh.G * H;
  for (int64_t l = 0; l < L; ++l) {
    fused_pack_weights<T>(sh, H, w_hh[l] + c * GH, wp_hh + l * packed);
    if (l > 0) fused_pack_weights<T>(sh, H, w_ih[l] + c * GH, wp_ih + (l - 1) * packed);
  }
}

// What one fused layer step reads and writes (pointers into the work unit's buffers).
template <typename T>
struct FusedLayerStep {
  FusedShape sh;
  int64_t H;            // hidden units of this layer (= of the layer below, if any)
  int64_t n;            // rows per column of zcur / znext
  int64_t M;            // columns: nb sequences x cols
  int64_t cols;         // columns per sequence: state + k tangents
  int64_t row;          // first h row of this layer in a column (its c rows follow at + H)
  int64_t row_prev;     // first h row of the layer below (used when wp_ih != nullptr)
  const T* wp_hh;       // packed W_hh
  const T* wp_ih;       // packed W_ih of an upper layer, or nullptr (layer 0)
  const T* zcur;        // [n, M] the state before this step
  T* znext;             // [n, M] written: this layer's h (and c) rows of every column
  const T* const* in;   // [nb] added to each state column's gates (input projection + bias, or bias)
  T* coef;              // [nb][kCoefs][H] scratch
  T* panel;             // fused_panel_size elements
  T* gates;             // [nr][Gpad] scratch
  T* stash = nullptr;   // twin kernel: [nb][G] each state column's pre-activations, for its delta column
};

// out[j * Gpad + row] = sum_k w[row][k] * panel[k][j] for the sh.nr columns of one B-panel
// block (K rows, packed as pack_panel does) and every row tile of wp (packed by
// fused_pack_weights).  The layer step's products; also the tangent kernel's input projection.
// With wp2 / panel2 (not nullptr) their products are added (an upper layer's W_ih h_{l-1}).
void fused_block_gemm(const FusedShape& sh, int64_t K, const float* wp, const float* panel, float* out,
                      const float* wp2 = nullptr, const float* panel2 = nullptr);
void fused_block_gemm(const FusedShape& sh, int64_t K, const double* wp, const double* panel, double* out,
                      const double* wp2 = nullptr, const double* panel2 = nullptr);

// The twin kernel's fused layer step (csrc/cpu/fused_twin.cpp; LSTM, columns state, delta,
// tangents); false: no fused path on this CPU.
bool fused_twin_layer_step(const FusedLayerStep<float>& s);
bool fused_twin_layer_step(const FusedLayerStep<double>& s);

// Runs one fused layer step; defined in fused_step.cpp (false: no fused path on this CPU).
bool fused_layer_step(CellKind cell, const FusedLayerStep<float>& s);
bool fused_layer_step(CellKind cell, const FusedLayerStep<double>& s);

namespace fused_detail {

template <typename T, int Bytes>
struct Vec {
  static constexpr int kLanes = Bytes / static_cast<int>(sizeof(T));
  typedef T type __attribute__((vector_size(Bytes)));
  static inline __attribute__((always_inline)) type load(const T* p) {
    type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
  }
  static inline __attribute__((always_inline)) void store(T* p, type v) { std::memcpy(p, &v, sizeof(v)); }
  // Broadcast.  Not `type{} + x` (a float add, kept for signed zeros) nor a braced list (GCC 12
  // turns that into masked inserts): an integer vector add of 0 folds to a plain broadcast.
  using bits_t = std::conditional_t<sizeof(T) == 4, int32_t, int64_t>;
  typedef bits_t ibits __attribute__((vector_size(Bytes)));
  static inline __attribute__((always_inline)) type splat(T x) {
    bits_t b;
    std::memcpy(&b, &x, sizeof(b));
    return reinterpret_cast<type>(ibits{} + b);
  }
};

// B-panels of M columns: panel[(block * K + k) * NR + j] = row (row + k) of column block*NR + j
// of src (columns ld apart); columns past M are zero.  k outer, j inner: contiguous writes, NR
// sequential read streams.
template <typename T>
inline __attribute__((always_inline)) void pack_panel(int64_t NR, const T* __restrict src, int64_t ld, int64_t row,
                                                      int64_t M, int64_t K, T* __restrict panel) {
  const int64_t blocks = (M + NR - 1) / NR;
  for (int64_t b = 0; b < blocks; ++b) {
    T* __restrict p = panel + b * K * NR;
    const T* __restrict s = src + b * NR * ld + row;
    const int64_t jn = M - b * NR < NR ? M - b * NR : NR;
    if (jn == NR) {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < NR; ++j) p[k * NR + j] = s[j * ld + k];
    } else {
      for (int64_t k = 0; k < K; ++k)
        for (int64_t j = 0; j < NR; ++j) p[k * NR + j] = j < jn ? s[j * ld + k] : T(0);
    }
  }
}

// acc[v][j] (+)= sum_k wp[k][v][:] * panel[k][j] for one row tile and one column block; stored
// to out[j * ld + v * lanes + e].  Plain loops with GCC's unroll pragma (lambdas would be
// outlined, out of the target ISA), fully unrolled so acc lives in registers.
template <typename T, int Bytes, int RV, int NR>
inline __attribute__((always_inline)) void micro_tile(int64_t K, const T* __restrict wp, const T* __restrict panel,
                                                      const T* __restrict wp2, const T* __restrict panel2,
                                                      T* __restrict out, int64_t ld) {
  using V = Vec<T, Bytes>;
  constexpr int W = V::kLanes;
  typename V::type acc[RV][NR];
#pragma GCC unroll 8
  for (int v = 0; v < RV; ++v)
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) acc[v][j] = typename V::type{};
  for (int src = 0; src < 2; ++src) {
    const T* __restrict w = src == 0 ? wp : wp2;
    const T* __restrict p = src == 0 ? panel : panel2;
    if (w == nullptr) break;
    for (int64_t k = 0; k < K; ++k) {
      typename V::type a[RV];
#pragma GCC unroll 8
      for (int v = 0; v < RV; ++v) a[v] = V::load(w + (k * RV + v) * W);
#pragma GCC unroll 32
      for (int j = 0; j < NR; ++j) {
        const typename V::type b = V::splat(p[k * NR + j]);
#pragma GCC unroll 8
        for (int v = 0; v < RV; ++v) acc[v][j] += a[v] * b;
      }
    }
  }
#pragma GCC unroll 8
  for (int v = 0; v < RV; ++v)
#pragma GCC unroll 32
    for (int j = 0; j < NR; ++j) V::store(out + j * ld + v * W, acc[v][j]);
}

// The gate rows of one column block: every row tile's micro-tile.
template <typename T, int Bytes, int RV, int NR>
inline __attribute__((always_inline)) void block_gemm(const FusedShape& sh, int64_t K, const T* wp,
                                                      const T* panel, const T* wp2, const T* panel2, T* out) {
  const int64_t tile_elems = K * RV * Vec<T, Bytes>::kLanes;
  for (int64_t t = 0; t < sh.tiles; ++t) {
    micro_tile<T, Bytes, RV, NR>(K, wp + t * tile_elems, panel, wp2 != nullptr ? wp2 + t * tile_elems : nullptr,
                                 panel2, out + t * RV * Vec<T, Bytes>::kLanes, sh.Gpad);
  }
}

// The row-tile shapes each ISA offers: RV x NR accumulators (24 vectors with AVX-512, 12 with AVX2).
template <int Bytes>
constexpr int kAccumulators = Bytes == 64 ? 24 : 12;

template <typename T, int Bytes>
inline __attribute__((always_inline)) void block_gemm_any(const FusedShape& sh, int64_t K, const T* wp,
                                                          const T* panel, const T* wp2, const T* panel2, T* out) {
  constexpr int A = kAccumulators<Bytes>;
  switch (sh.rv) {
    case 1: return block_gemm<T, Bytes, 1, A>(sh, K, wp, panel, wp2, panel2, out);
    case 2: return block_gemm<T, Bytes, 2, A / 2>(sh, K, wp, panel, wp2, panel2, out);
    case 3: return block_gemm<T, Bytes, 3, A / 3>(sh, K, wp, panel, wp2, panel2, out);
    default:
      if constexpr (A >= 24) {
        if (sh.rv == 4) return block_gemm<T, Bytes, 4, A / 4>(sh, K, wp, panel, wp2, panel2, out);
        if (sh.rv == 5) return block_gemm<T, Bytes, 5, 4>(sh, K, wp, panel, wp2, panel2, out);
      }
  }
}

// The cell update of lane v of a column's unit vector: g (gate q at q*H + v) the column's
// pre-activations, in (likewise) the state column's input, old / out the column's h (c at + H),
// coef (coefficient q at q*H + v).  Functions of their own so the small arrays are their locals
// (scalarised once inlined), not privates of the `omp simd` loops, which GCC would not
// vectorise.
template <class Cell, typename T>
inline __attribute__((always_inline)) void state_lane(int64_t v, int64_t H, const T* __restrict g,
                                                      const T* __restrict in, const T* __restrict old,
                                                      T* __restrict out, T* __restrict coef) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  T a[NG], kc[NK];
#pragma GCC unroll 8
  for (int q = 0; q < NG; ++q) a[q] = g[q * H + v] + in[q * H + v];
  T h = old[v];
  T c = Cell::kHalves == 2 ? old[H + v] : T(0);
  Cell::template state<CpuMath>(a, h, c, kc);
#pragma GCC unroll 8
  for (int q = 0; q < NK; ++q) coef[q * H + v] = kc[q];
  out[v] = h;
  if constexpr (Cell::kHalves == 2) out[H + v] = c;
}

template <class Cell, typename T>
inline __attribute__((always_inline)) void tangent_lane(int64_t v, int64_t H, const T* __restrict g,
                                                        const T* __restrict coef, const T* __restrict old,
                                                        T* __restrict out) {
  constexpr int NG = Cell::kGates, NK = Cell::kCoefs;
  T da[NG], kc[NK];
#pragma GCC unroll 8
  for (int q = 0; q < NG; ++q) da[q] = g[q * H + v];
#pragma GCC unroll 8
  for (int q = 0; q < NK; ++q) kc[q] = coef[q * H + v];
  T x = old[v];
  T y = Cell::kHalves == 2 ? old[H + v] : T(0);
  Cell::tangent(kc, da, x, y);
  out[v] = x;
  if constexpr (Cell::kHalves == 2) out[H + v] = y;
}

// Unit vectors of a layer of H units, W at a time: f(r) for r = 0, W, 2W, ..., and a last one at
// H - W that overlaps the one before when W does not divide H (same inputs, same outputs).
template <int W, class F>
inline __attribute__((always_inline)) void for_unit_vectors(int64_t H, F&& f) {
  const int64_t last = H - W;
  for (int64_t r0 = 0;; r0 += W) {
    const int64_t r = r0 < last ? r0 : last;
    f(r);
    if (r == last) break;
  }
}

// The tangent kernel's update of one column (pos 0: the state, else a tangent).
template <class Cell>
struct TangentUpdate {
  template <typename T, int W>
  static inline __attribute__((always_inline)) void column(const FusedLayerStep<T>& s, int64_t pos, int64_t seq,
                                                           int64_t col, const T* __restrict g) {
    const int64_t H = s.H;
    const T* __restrict old = s.zcur + col * s.n + s.row;
    T* __restrict out = s.znext + col * s.n + s.row;
    T* __restrict coef = s.coef + seq * Cell::kCoefs * H;
    if (pos == 0) {
      const T* __restrict in = s.in[seq];
      for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v) state_lane<Cell, T>(v, H, g + r, in + r, old + r, out + r, coef + r);
      });
    } else {
      for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v) tangent_lane<Cell, T>(v, H, g + r, coef + r, old + r, out + r);
      });
    }
  }
};

// One layer step (see the file comment): Update::column<T, W> updates each column from its gate
// rows g.  Gemm is the block GEMM for this ISA and T.
template <class Update, typename T, int Bytes, class Gemm>
inline __attribute__((always_inline)) void layer_step(const FusedLayerStep<T>& s, Gemm&& gemm) {
  constexpr int W = Vec<T, Bytes>::kLanes;
  const FusedShape& sh = s.sh;
  const int64_t H = s.H, n = s.n, M = s.M, cols = s.cols, NR = sh.nr;
  const int64_t blocks = (M + NR - 1) / NR;
  T* panel_hh = s.panel;
  T* panel_ih = s.panel + blocks * NR * H;
  pack_panel<T>(NR, s.zcur, n, s.row, M, H, panel_hh);
  if (s.wp_ih != nullptr) pack_panel<T>(NR, s.znext, n, s.row_prev, M, H, panel_ih);
  int64_t seq = 0, pos = 0;  // the sequence of the current column, and the column's place in it
  for (int64_t b = 0; b < blocks; ++b) {
    gemm(sh, H, s.wp_hh, panel_hh + b * H * NR, s.wp_ih, s.wp_ih != nullptr ? panel_ih + b * H * NR : nullptr,
         s.gates);
    const int64_t jn = M - b * NR < NR ? M - b * NR : NR;
    for (int64_t j = 0; j < jn; ++j, ++pos) {
      if (pos == cols) pos = 0, ++seq;
      Update::template column<T, W>(s, pos, seq, b * NR + j, s.gates + j * sh.Gpad);
    }
  }
}

}  // namespace fused_detail
}  // namespace mdesc::cpu
