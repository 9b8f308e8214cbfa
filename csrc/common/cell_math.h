// The math of mdesc::tangent_run, written once for every backend (docs/conventions.md):
// the recurrent cells, their tangent (Jacobian-vector) updates, the re-orthonormalisation
// schedule and the block count.  Compiled by the CPU kernel (csrc/cpu/), by nvcc for the CUDA
// kernels (csrc/cuda/), and by the CUDA-on-CPU emulation (csrc/cuda/emulation/), so the three
// cannot drift apart.  No tensors, no allocation: plain functions of scalars and small arrays.
//
// Every cell sees one hidden unit u of one layer at a time.  The kernels compute, for the state
// column and every tangent column alike, the GEMM  G = W_hh h_l + W_ih h_{l-1}  (layer 0: W_hh h
// only; its input projection W_ih x is added to the state column), with kGates rows per unit:
// row g*H + u of G is gate g of unit u.  Bias (or, on driven layer-0 steps, input projection
// plus bias) is added to the state column only.  So a cell receives
//   a[kGates]   the state column's pre-activations of unit u
//   da[kGates]  one tangent column's pre-activations of unit u (the Jacobian applied to it)
// and keeps, per unit, kCoefs coefficients so the tangent update is a few multiply-adds.
//
// Gate rows of each cell (the Python side, mdesc/core/cells.py, lays the weights out so):
//   lstm      4: i, f, g, o                          (PyTorch's order; bias = b_ih + b_hh)
//   gru       4: r, z, n_x, n_h  where r, z rows hold W_i* and W_h* (bias b_i* + b_h*),
//                n_x = W_in x + b_in (W_hh's rows zero) and n_h = W_hn h + b_hn (W_ih's rows
//                zero).  Padding to 4 keeps r's product with (W_hn h + b_hn) computable.
//   rnn_tanh  1: a = W_ih x + b_ih + W_hh h + b_hh;  h' = tanh(a)
//   rnn_relu  1: the same with h' = relu(a)
// Tangent rows per unit (kHalves): 2 for the LSTM (h and c), 1 for the others (h only); the
// tangent space of L layers is [h_1, c_1, ..., h_L, c_L] or [h_1, ..., h_L] (n = kHalves*H*L).
//
// Activations come from a policy M (M::sigmoid, M::tanh) so the CPU can use its vectorisable
// approximations and CUDA its intrinsics while the cell algebra stays here.
#pragma once

#include <cstdint>
#include <type_traits>

// Always inlined: on the CPU these must melt into the vectorised loops of every instruction-set
// clone of csrc/cpu/pointwise.cpp.
// MDESC_HD_POLICY before a template that calls its activation policy M: with CUDA's device-only
// policy, nvcc would otherwise warn that a __host__ __device__ function calls __device__ code.
#if defined(__CUDACC__)
#define MDESC_HD __host__ __device__ __forceinline__
#define MDESC_HD_POLICY _Pragma("nv_exec_check_disable")
#elif defined(__GNUC__)
#define MDESC_HD inline __attribute__((always_inline))
#else
#define MDESC_HD inline
#endif
#ifndef MDESC_HD_POLICY
#define MDESC_HD_POLICY
#endif

namespace mdesc {

// ------------------------------------------------------------------------------------------
// cells

// The LSTM's gate activations i, f, g, o = sigmoid, sigmoid, tanh, sigmoid of the pre-activations
// a[0..3], through the policy's all-gates-at-once form where it has one (shared by the tangent
// cell below and the ensemble's training cell, common/ensemble_math.h).
MDESC_HD_POLICY
template <class M, typename T>
MDESC_HD void lstm_activations(const T* a, T& i, T& f, T& g, T& o) {
  if constexpr (requires { M::lstm_gates(a, i, f, g, o); }) {
    M::lstm_gates(a, i, f, g, o);
  } else {
    i = M::sigmoid(a[0]);
    f = M::sigmoid(a[1]);
    g = M::tanh(a[2]);
    o = M::sigmoid(a[3]);
  }
}

struct LstmCell {
  static constexpr const char* kName = "lstm";
  static constexpr int kGates = 4;
  static constexpr int kCoefs = 6;
  static constexpr int kHalves = 2;

  // c' = f c + i g,  h' = o tanh(c').  k: the coefficients of the linearised update
  //   dc' = k1 da_f + k3 dc + k0 da_i + k2 da_g,   dh' = k4 da_o + k5 dc'
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void state(const T* a, T& h, T& c, T* k) {
    T i, f, g, o;
    lstm_activations<M>(a, i, f, g, o);
    const T c_new = f * c + i * g;
    const T tc = M::tanh(c_new);
    k[0] = i * (T(1) - i) * g;      // d c' / d a_i
    k[1] = f * (T(1) - f) * c;      // d c' / d a_f   (old c)
    k[2] = i * (T(1) - g * g);      // d c' / d a_g
    k[3] = f;                       // d c' / d c
    k[4] = o * (T(1) - o) * tc;     // d h' / d a_o
    k[5] = o * (T(1) - tc * tc);    // d h' / d c'
    c = c_new;
    h = o * tc;
  }

  template <typename T>
  static MDESC_HD void tangent(const T* k, const T* da, T& dh, T& dc) {
    const T dcn = k[1] * da[1] + k[3] * dc + k[0] * da[0] + k[2] * da[2];
    dc = dcn;
    dh = k[4] * da[3] + k[5] * dcn;
  }
};

struct GruCell {
  static constexpr const char* kName = "gru";
  static constexpr int kGates = 4;
  static constexpr int kCoefs = 5;
  static constexpr int kHalves = 1;

  // r = sig(a_r), z = sig(a_z), n = tanh(a_nx + r a_nh), h' = (1 - z) n + z h.  Linearised:
  //   dh' = k0 da_r + k1 da_z + k2 da_nx + k3 da_nh + k4 dh
  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void state(const T* a, T& h, T& /*c*/, T* k) {
    const T r = M::sigmoid(a[0]);
    const T z = M::sigmoid(a[1]);
    const T n = M::tanh(a[2] + r * a[3]);
    const T dn = (T(1) - z) * (T(1) - n * n);  // d h' / d (a_nx + r a_nh)
    k[0] = dn * a[3] * r * (T(1) - r);         // through r
    k[1] = z * (T(1) - z) * (h - n);           // through z   (old h)
    k[2] = dn;
    k[3] = dn * r;
    k[4] = z;                                  // d h' / d h, directly
    h = (T(1) - z) * n + z * h;
  }

  template <typename T>
  static MDESC_HD void tangent(const T* k, const T* da, T& dh, T& /*dc*/) {
    dh = k[0] * da[0] + k[1] * da[1] + k[2] * da[2] + k[3] * da[3] + k[4] * dh;
  }
};

// h' = act(a) with act = tanh (kRelu false) or relu; dh' = act'(a) da.  relu'(0) = 0, as in
// PyTorch's autograd.
template <bool kRelu>
struct RnnCell {
  static constexpr const char* kName = kRelu ? "rnn_relu" : "rnn_tanh";
  static constexpr int kGates = 1;
  static constexpr int kCoefs = 1;
  static constexpr int kHalves = 1;

  MDESC_HD_POLICY
  template <class M, typename T>
  static MDESC_HD void state(const T* a, T& h, T& /*c*/, T* k) {
    if constexpr (kRelu) {
      const bool on = a[0] > T(0);
      h = on ? a[0] : T(0);
      k[0] = on ? T(1) : T(0);
    } else {
      h = M::tanh(a[0]);
      k[0] = T(1) - h * h;
    }
  }

  template <typename T>
  static MDESC_HD void tangent(const T* k, const T* da, T& dh, T& /*dc*/) {
    dh = k[0] * da[0];
  }
};
using RnnTanhCell = RnnCell<false>;
using RnnReluCell = RnnCell<true>;

// ------------------------------------------------------------------------------------------
// the re-orthonormalisation schedule

// Counted blocks of a run of S steps: ceil((S - warmup) / qr_every), 0 when no step is counted
// (S <= warmup); qr_every >= 1.  The one rule: every backend's block count and output shape come
// from here, Python reads it as torch.ops.mdesc.counted_blocks (csrc/mdesc.cpp), and its Python
// copy for the fake kernels, mdesc/core/schedule.py::counted_blocks, is tested against it
// (tests/test_schedule.py).
MDESC_HD int64_t counted_blocks(int64_t S, int64_t warmup, int64_t qr_every) {
  return S <= warmup ? 0 : (S - warmup + qr_every - 1) / qr_every;
}

// What happens after step s (1-based) of S: -2 no QR; -1 QR with logs discarded (during warm-up:
// every qr_every steps counted from step 0, and at the end of warm-up); b >= 0 QR whose logs
// belong to counted block b (every qr_every steps counted from `warmup`, and after the last step,
// so the last block may be shorter).
MDESC_HD int64_t qr_block_after_step(int64_t s, int64_t warmup, int64_t qr_every, int64_t S) {
  if (s <= warmup) return (s % qr_every == 0 || s == warmup) ? -1 : -2;
  const int64_t counted = s - warmup;
  if (counted % qr_every == 0 || s == S) return (counted - 1) / qr_every;
  return -2;
}

// ------------------------------------------------------------------------------------------
// singular tangent maps: when a frame column is lost (docs/conventions.md §3, "Singular tangent
// maps"; the reference: mdesc/core/reference_backend.py::lost_columns)
//
// At a re-orthonormalisation, column j of a frame (after the steps since the last one) has norm
// nu_j and a component R_jj > 0 orthogonal to the earlier columns.  It is lost when
// R_jj <= kLostColumnEps * eps(T) * nu_j (nu_j = 0 included): its direction is then within
// rounding of the earlier columns', so log R_jj would be rounding noise, a different number on
// every CPU.  A lost column and every later one are set to exactly zero and log R_jj = -inf is
// added for each; zero columns stay zero, so the exponents from the first lost column on are
// -inf for the rest of the run.

constexpr double kLostColumnEps = 64.0;

// kLostColumnEps * eps(T): the largest R_jj / nu_j of a lost column.
template <typename T>
MDESC_HD double lost_column_ratio() {
  return kLostColumnEps * (sizeof(T) == 4 ? 1.1920928955078125e-07 : 2.220446049250313e-16);
}

// Whether a column with orthogonal part r and norm nu (both >= 0, finite) is lost.  NaN counts
// as lost (it only arises downstream of a lost column, e.g. 0 * inf in a projection).
MDESC_HD bool column_lost(double r, double nu, double ratio) { return !(r > ratio * nu); }

// ------------------------------------------------------------------------------------------
// the cell table: choosing a cell at run time (host code)

// Every cell the kernels know, Cells below, in the order of mdesc/core/cells.py's CELLS.  Adding
// a cell is one struct above (kName, kGates, kCoefs, kHalves, state, tangent) and one entry in
// Cells; every backend dispatches through dispatch_cell, so nothing else in C++ lists the cells.

// A cell chosen at run time: its index in Cells (parse_cell in common/run_checks.h reads it from
// the schema's name).
enum class CellKind : int {};

template <class... C>
struct CellList {
  static constexpr int size = sizeof...(C);
  static constexpr const char* names[] = {C::kName...};
  static constexpr int max_coefs = [] {
    int m = 0;
    ((m = C::kCoefs > m ? C::kCoefs : m), ...);
    return m;
  }();

  // The index of a cell type in the list.
  template <class Cell>
  static constexpr CellKind kind() {
    int i = 0, found = -1;
    ((found = std::is_same_v<Cell, C> ? i : found, ++i), ...);
    return static_cast<CellKind>(found);
  }

  // Calls f(Cell{}) for the cell at index `kind`.
  template <class F>
  static void dispatch(CellKind kind, F&& f) {
    int i = 0;
    (void)((static_cast<int>(kind) == i++ ? (f(C{}), true) : false) || ...);
  }
};
using Cells = CellList<LstmCell, GruCell, RnnTanhCell, RnnReluCell>;

// The CellKind of a cell type.
template <class Cell>
constexpr CellKind cell_kind() {
  return Cells::kind<Cell>();
}

// Calls f(Cell{}) for the cell of `kind`; every backend dispatches through this one function.
template <class F>
inline void dispatch_cell(CellKind kind, F&& f) {
  Cells::dispatch(kind, static_cast<F&&>(f));
}

// A cell's sizes as run-time values, for host code that lays out buffers.
struct CellShape {
  int gates;   // Cell::kGates
  int coefs;   // Cell::kCoefs
  int halves;  // Cell::kHalves
};

inline CellShape cell_shape(CellKind kind) {
  CellShape s{};
  dispatch_cell(kind, [&s](auto c) { s = {decltype(c)::kGates, decltype(c)::kCoefs, decltype(c)::kHalves}; });
  return s;
}
inline int cell_gates(CellKind kind) { return cell_shape(kind).gates; }
inline int cell_halves(CellKind kind) { return cell_shape(kind).halves; }

}  // namespace mdesc
