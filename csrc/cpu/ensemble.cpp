// CPU implementation of the ensemble recurrence, mdesc::ensemble_rnn_forward and
// mdesc::ensemble_rnn_backward (schemas: csrc/mdesc.cpp; the per-unit math and the layouts of
// h_all, saved, dxproj, dhproj: csrc/common/ensemble_math.h; Python: mdesc/ensemble/_op.py).
//
// Models and sequences are independent, so the work splits over (model, block of sequences) on
// torch's threads (the fused path) or over models (the BLAS path).  One step of one model
// (B sequences, H units, G gate blocks, GH = G*H):
//   forward   hp = h_{t-1} W_hh^T              GEMM (B x H)(H x GH): 2 B H GH FLOPs
//             pointwise cell (bias added there) -> h_t, saved_t
//   backward  pointwise VJP -> dxproj_t, dhproj_t, direct part of dL/dh_{t-1} (and dL/dc_{t-1})
//             carry += dhproj_t W_hh           GEMM (B x GH)(GH x H): 2 B GH H FLOPs
// and the caller adds dW_hh = sum_t dhproj_t^T h_{t-1} (2 B GH H per step, batched over t).
// Bytes per step and model, element size w: forward reads xp (B GH) and W_hh (GH H, cache
// resident for H = 60: 57.6 KB float32), writes h (B H) and saved (B S H); backward reads
// dh_all, h, h_{t-1}, saved (B (3 + S) H) and writes dxproj, dhproj (2 B GH).  At the paper's
// shape (B 32, H 60, LSTM, float32) a step moves 85 KB forward and 131 KB backward against
// 0.92 MFLOP per GEMM (three per step with dW_hh): ~13 FLOP per byte, streamed from and to
// memory (a model's 500 steps are 42 MB forward).  Fresh output memory is part of that cost:
// see empty_output.
//
// Two paths:
//   fused  (x86-64 with AVX2 / AVX-512 and H >= one vector; csrc/cpu/ensemble_fused.h) the
//          products by the register-tiled block GEMM of csrc/cpu/fused_step.h with W_hh packed
//          once per call, the cell math on the product's rows while they are in L1, every
//          unit vector whole
//   BLAS   (elsewhere) the recurrent GEMMs by torch's BLAS (csrc/cpu/gemm.h; MKL called from
//          inside the parallel region runs single-threaded) and the pointwise loops compiled
//          for several instruction sets (function multi-versioning), the last H mod W units
//          through zero-padded scratch
// Both run the cell math of ensemble_math.h with csrc/cpu/pointwise.h's CpuMath.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include <algorithm>
#include <cstring>
#include <string>
#include <tuple>
#include <vector>

#include "common/ensemble_math.h"
#include "cpu/ensemble_fused.h"
#include "cpu/fused_step.h"
#include "cpu/gemm.h"
#include "cpu/pointwise.h"

namespace mdesc::cpu {
namespace {

// The gather/scatter lambdas must melt into the `omp simd` loops like the cell math: a call left
// in the loop body ("control flow in loop") stops GCC from vectorising it.
#if defined(__GNUC__)
#define MDESC_LAMBDA_INLINE __attribute__((always_inline))
#else
#define MDESC_LAMBDA_INLINE
#endif

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_ENSEMBLE_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_ENSEMBLE_MULTIVERSION
#endif

// ---------------------------------------------------------------------------------------------
// pointwise passes of one step of one model

// Unit u of one sequence: gathers the gate rows, runs Cell::forward, scatters h and the saved slots.
template <class Cell, typename T>
MDESC_HD void unit_forward(int64_t u, int64_t H, const T* __restrict xp, const T* __restrict hp,
                           const T* __restrict bias, const T* __restrict hprev, const T* __restrict cprev,
                           T* __restrict h, T* __restrict s) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  T a[G], b[G], sv[S > 0 ? S : 1];
  unrolled<G>([&](int q) MDESC_LAMBDA_INLINE {
    a[q] = xp[q * H + u];
    b[q] = hp[q * H + u] + bias[q * H + u];
  });
  T hu = hprev[u];
  T cu = Cell::kHasC ? cprev[u] : T(0);
  Cell::template forward<CpuMath>(a, b, hu, cu, sv);
  h[u] = hu;
  unrolled<S>([&](int q) MDESC_LAMBDA_INLINE { s[q * H + u] = sv[q]; });
}

template <class Cell, typename T>
MDESC_HD void unit_backward(int64_t u, int64_t H, const T* __restrict s, const T* __restrict h,
                            const T* __restrict hprev, const T* __restrict cprev, const T* __restrict dh_all,
                            T* __restrict carry, T* __restrict dc, T* __restrict dxp, T* __restrict dhp) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  T sv[S > 0 ? S : 1], dx[G], dhv[G];
  unrolled<S>([&](int q) MDESC_LAMBDA_INLINE { sv[q] = s[q * H + u]; });
  const T dh = dh_all[u] + carry[u];
  T dcu = Cell::kHasC ? dc[u] : T(0);
  T direct;
  Cell::backward(sv, h[u], hprev[u], Cell::kHasC ? cprev[u] : T(0), dh, dcu, dx, dhv, direct);
  unrolled<G>([&](int q) MDESC_LAMBDA_INLINE {
    dxp[q * H + u] = dx[q];
    dhp[q * H + u] = dhv[q];
  });
  carry[u] = direct;
  if constexpr (Cell::kHasC) dc[u] = dcu;
}

// A row of H units: the first H - H mod W (W = one 64-byte vector) straight from the tensors,
// the last H mod W through W-wide scratch, zero-padded (the padding's results are dropped), so
// no unit runs in a scalar epilogue: with H = 60 and 16 float lanes a plain loop leaves 12 of 60
// units to scalar code, most of the pass's time.  The unit loops are functions of their own,
// compiled for several instruction sets (function multi-versioning); GCC 12 vectorises them
// reliably only so (inlined into a larger caller, or with stack scratch or a constant trip
// count, it reported "control flow in loop" and left them scalar).
template <typename T, int W>
MDESC_HD void pack(T* __restrict dst, const T* __restrict src, int blocks, int64_t gs, int64_t n) {
  for (int q = 0; q < blocks; ++q)
    for (int j = 0; j < W; ++j) dst[q * W + j] = j < n ? src[q * gs + j] : T(0);
}

template <typename T, int W>
MDESC_HD void unpack(T* __restrict dst, const T* __restrict src, int blocks, int64_t gs, int64_t n) {
  for (int q = 0; q < blocks; ++q)
    for (int64_t j = 0; j < n; ++j) dst[q * gs + j] = src[q * W + j];
}

template <typename T>
constexpr int kChunk = 64 / static_cast<int>(sizeof(T));

// Scratch elements of the tail of a forward / backward row.
template <class Cell, typename T>
constexpr int64_t kForwardScratch = (3 * Cell::kGates + 4 + Cell::kSaved) * kChunk<T>;
template <class Cell, typename T>
constexpr int64_t kBackwardScratch = (Cell::kSaved + 7 + 2 * Cell::kGates) * kChunk<T>;

// Units 0..nu-1 of one sequence, gate blocks gs apart.
template <class Cell, typename T>
MDESC_ENSEMBLE_MULTIVERSION __attribute__((noinline)) void forward_units(
    int64_t nu, int64_t gs, const T* xp, const T* hp, const T* bias, const T* hprev, const T* cprev, T* h, T* s) {
#pragma omp simd
  for (int64_t u = 0; u < nu; ++u) unit_forward<Cell, T>(u, gs, xp, hp, bias, hprev, cprev, h, s);
}

template <class Cell, typename T>
MDESC_ENSEMBLE_MULTIVERSION __attribute__((noinline)) void backward_units(
    int64_t nu, int64_t gs, const T* s, const T* h, const T* hprev, const T* cprev, const T* dh_all, T* carry,
    T* dc, T* dxp, T* dhp) {
#pragma omp simd
  for (int64_t u = 0; u < nu; ++u) unit_backward<Cell, T>(u, gs, s, h, hprev, cprev, dh_all, carry, dc, dxp, dhp);
}

// One sequence's forward: xp, hp [GH]; hprev, cprev, h [H]; s [S*H]; scr: kForwardScratch.
template <class Cell, typename T>
void forward_row(int64_t H, const T* xp, const T* hp, const T* bias, const T* hprev, const T* cprev, T* h, T* s,
                 T* scr) {
  constexpr int W = kChunk<T>, G = Cell::kGates, S = Cell::kSaved;
  const int64_t u0 = H / W * W, n = H - u0;
  if (u0 > 0) forward_units<Cell, T>(u0, H, xp, hp, bias, hprev, cprev, h, s);
  if (n == 0) return;
  T *x = scr, *p = x + G * W, *bi = p + G * W, *hv = bi + G * W, *cv = hv + W, *ho = cv + W, *so = ho + W;
  pack<T, W>(x, xp + u0, G, H, n);
  pack<T, W>(p, hp + u0, G, H, n);
  pack<T, W>(bi, bias + u0, G, H, n);
  pack<T, W>(hv, hprev + u0, 1, H, n);
  pack<T, W>(cv, cprev + u0, 1, H, n);
  forward_units<Cell, T>(W, W, x, p, bi, hv, cv, ho, so);
  unpack<T, W>(h + u0, ho, 1, H, n);
  unpack<T, W>(s + u0, so, S, H, n);
}

// One sequence's backward: s [S*H]; h, hprev, cprev, dh_all, carry, dc [H]; dxp, dhp [GH];
// scr: kBackwardScratch.
template <class Cell, typename T>
void backward_row(int64_t H, const T* s, const T* h, const T* hprev, const T* cprev, const T* dh_all, T* carry,
                  T* dc, T* dxp, T* dhp, T* scr) {
  constexpr int W = kChunk<T>, G = Cell::kGates, S = Cell::kSaved;
  const int64_t u0 = H / W * W, n = H - u0;
  if (u0 > 0) backward_units<Cell, T>(u0, H, s, h, hprev, cprev, dh_all, carry, dc, dxp, dhp);
  if (n == 0) return;
  T *sv = scr, *hv = sv + S * W, *hpv = hv + W, *cpv = hpv + W, *dv = cpv + W, *cav = dv + W, *dcv = cav + W,
    *dx = dcv + W, *dhv = dx + G * W;
  pack<T, W>(sv, s + u0, S, H, n);
  pack<T, W>(hv, h + u0, 1, H, n);
  pack<T, W>(hpv, hprev + u0, 1, H, n);
  pack<T, W>(cpv, cprev + u0, 1, H, n);
  pack<T, W>(dv, dh_all + u0, 1, H, n);
  pack<T, W>(cav, carry + u0, 1, H, n);
  pack<T, W>(dcv, dc + u0, 1, H, n);
  backward_units<Cell, T>(W, W, sv, hv, hpv, cpv, dv, cav, dcv, dx, dhv);
  unpack<T, W>(carry + u0, cav, 1, H, n);
  unpack<T, W>(dc + u0, dcv, 1, H, n);
  unpack<T, W>(dxp + u0, dx, G, H, n);
  unpack<T, W>(dhp + u0, dhv, G, H, n);
}

// One step's forward pointwise pass over B sequences.  xp, hp [B, GH]; h [B, H]; s [B, S*H];
// hprev / cprev: sequence b's h_{t-1} / c_{t-1} at b * ld (ld 0 with a zero row at t = 0).
template <class Cell, typename T>
void forward_pass(int64_t B, int64_t H, const T* xp, const T* hp, const T* bias, const T* hprev, int64_t hprev_ld,
                  const T* cprev, int64_t cprev_ld, T* h, T* s, T* scr) {
  const int64_t GH = Cell::kGates * H, SH = Cell::kSaved * H;
  for (int64_t b = 0; b < B; ++b)
    forward_row<Cell, T>(H, xp + b * GH, hp + b * GH, bias, hprev + b * hprev_ld, cprev + b * cprev_ld, h + b * H,
                         s + b * SH, scr);
}

// One step's backward pointwise pass over B sequences; carry [B, H] in: dL/dh_t from step t + 1,
// out: the direct part of dL/dh_{t-1}; dc [B, H] likewise for c (LSTM).
template <class Cell, typename T>
void backward_pass(int64_t B, int64_t H, const T* s, const T* h, const T* hprev, int64_t hprev_ld, const T* cprev,
                   int64_t cprev_ld, const T* dh_all, T* carry, T* dc, T* dxp, T* dhp, T* scr) {
  const int64_t GH = Cell::kGates * H, SH = Cell::kSaved * H;
  for (int64_t b = 0; b < B; ++b)
    backward_row<Cell, T>(H, s + b * SH, h + b * H, hprev + b * hprev_ld, cprev + b * cprev_ld, dh_all + b * H,
                          carry + b * H, dc + b * H, dxp + b * GH, dhp + b * GH, scr);
}

// ---------------------------------------------------------------------------------------------
// the time loops of one model

struct Dims {
  int64_t E, T, B, H, GH, SH;
};

// xp [T, B, GH], w [GH, H], bias [GH] -> h [T, B, H], s [T, B, SH].  hp: B*GH scratch; zeros: H.
template <class Cell, typename T>
void forward_model(const Dims& d, const T* xp, const T* w, const T* bias, T* h, T* s, T* hp, const T* zeros,
                   T* scr) {
  const int64_t step_h = d.B * d.H, step_g = d.B * d.GH, step_s = d.B * d.SH;
  for (int64_t t = 0; t < d.T; ++t) {
    const bool first = t == 0;
    const T* hprev = first ? zeros : h + (t - 1) * step_h;
    const T* cprev = zeros;
    int64_t cprev_ld = 0;
    if constexpr (Cell::kHasC) {
      if (!first) cprev = s + (t - 1) * step_s + Cell::kCSlot * d.H, cprev_ld = d.SH;
    }
    if (first) {
      std::memset(hp, 0, sizeof(T) * step_g);
    } else {  // hp^T [GH x B] = W_hh [GH x H] h_{t-1}^T [H x B], column-major
      gemm<T>(false, true, d.GH, d.B, d.H, T(1), w, d.H, hprev, d.H, T(0), hp, d.GH);
    }
    forward_pass<Cell, T>(d.B, d.H, xp + t * step_g, hp, bias, hprev, first ? 0 : d.H, cprev, cprev_ld,
                          h + t * step_h, s + t * step_s, scr);
  }
}

// dh [T, B, H], h [T, B, H], s [T, B, SH], w [GH, H] -> dxp, dhp [T, B, GH].  carry, dc: B*H scratch.
template <class Cell, typename T>
void backward_model(const Dims& d, const T* dh, const T* h, const T* s, const T* w, T* dxp, T* dhp, T* carry,
                    T* dc, const T* zeros, T* scr) {
  const int64_t step_h = d.B * d.H, step_g = d.B * d.GH, step_s = d.B * d.SH;
  std::memset(carry, 0, sizeof(T) * step_h);
  std::memset(dc, 0, sizeof(T) * step_h);
  for (int64_t t = d.T - 1; t >= 0; --t) {
    const bool first = t == 0;
    const T* hprev = first ? zeros : h + (t - 1) * step_h;
    const T* cprev = zeros;
    int64_t cprev_ld = 0;
    if constexpr (Cell::kHasC) {
      if (!first) cprev = s + (t - 1) * step_s + Cell::kCSlot * d.H, cprev_ld = d.SH;
    }
    T* dhp_t = dhp + t * step_g;
    backward_pass<Cell, T>(d.B, d.H, s + t * step_s, h + t * step_h, hprev, first ? 0 : d.H, cprev, cprev_ld,
                           dh + t * step_h, carry, dc, dxp + t * step_g, dhp_t, scr);
    if (!first) {  // carry^T [H x B] += W_hh^T [H x GH] dhproj_t^T [GH x B], column-major
      gemm<T>(false, false, d.H, d.B, d.GH, T(1), w, d.H, dhp_t, d.GH, T(1), carry, d.H);
    }
  }
}

// ---------------------------------------------------------------------------------------------
// the fused path (csrc/cpu/ensemble_fused.h): models x blocks of sequences on torch's threads

// The tiling of a product with `rows` output rows (the forward's G*H gate rows, the backward's H
// units) over B columns of elem-byte elements; lanes 0: no fused path here (no AVX2 / AVX-512,
// or H narrower than one vector, which the whole-vector cell updates need).  fused_shape tiles
// a cell's gate rows; a one-gate cell of `rows` units has exactly these rows.
FusedShape ensemble_shape(int64_t rows, int64_t H, int64_t B, int64_t elem) {
  const int64_t lanes = fused_lanes(elem);
  if (lanes == 0 || H < lanes) return FusedShape{};
  for (int i = 0; i < Cells::size; ++i) {
    const auto kind = static_cast<CellKind>(i);
    if (cell_gates(kind) == 1) return fused_shape(kind, rows, B, elem);
  }
  return FusedShape{};
}

// Runs f(block, e, b0, nb) for every model e and block of sequences (b0, nb <= nr) on torch's
// threads, so a few models still use every thread; each thread chunk gets its own scratch.
template <typename T, class F>
void for_blocks(const Dims& d, const FusedShape& sh, int64_t K, const F& f) {
  const int64_t nr = sh.nr, blocks = (d.B + nr - 1) / nr;
  at::parallel_for(0, d.E * blocks, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> panel(fused_panel_size(sh, nr, K)), out(nr * sh.Gpad), zeros(d.GH, T(0));
    std::vector<T> carry(2 * nr * d.H), dc(2 * nr * d.H);
    EnsembleBlock<T> k{sh, d.T, d.B, d.H, 0, 0, nullptr};
    k.panel = panel.data(), k.out = out.data(), k.zeros = zeros.data(), k.carry = carry.data(), k.dc = dc.data();
    for (int64_t i = begin; i < end; ++i) {
      const int64_t e = i / blocks;
      k.b0 = i % blocks * nr;
      k.nb = std::min(nr, d.B - k.b0);
      f(k, e);
    }
  });
}

// The forward of every model through the fused path (sh.lanes > 0); pointers to whole tensors.
template <typename T>
void forward_fused(int cell, const Dims& d, const FusedShape& sh, const T* xp, const T* w, const T* bias, T* h,
                   T* s) {
  const int64_t packed = fused_packed_size(sh, d.H);
  std::vector<T> wp(d.E * packed);
  at::parallel_for(0, d.E, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) fused_pack_weights<T>(sh, d.H, w + e * d.GH * d.H, wp.data() + e * packed);
  });
  for_blocks<T>(d, sh, d.H, [&](EnsembleBlock<T>& k, int64_t e) {
    k.wp = wp.data() + e * packed;
    k.xp = xp + e * d.T * d.B * d.GH, k.bias = bias + e * d.GH;
    k.h = h + e * d.T * d.B * d.H, k.s = s + e * d.T * d.B * d.SH;
    ensemble_forward_block(cell, k);
  });
}

// The backward of every model through the fused path (sh: the tiling of H rows).
template <typename T>
void backward_fused(int cell, const Dims& d, const FusedShape& sh, const T* dh, const T* h, const T* s,
                    const T* w, T* dxp, T* dhp) {
  const int64_t packed = fused_packed_size(sh, d.GH);
  std::vector<T> wpt(d.E * packed);
  at::parallel_for(0, d.E, 1, [&](int64_t begin, int64_t end) {
    std::vector<T> wt(d.H * d.GH);  // W_hh^T [H, GH]
    for (int64_t e = begin; e < end; ++e) {
      const T* we = w + e * d.GH * d.H;
      for (int64_t q = 0; q < d.GH; ++q)
        for (int64_t u = 0; u < d.H; ++u) wt[u * d.GH + q] = we[q * d.H + u];
      fused_pack_weights<T>(sh, d.GH, wt.data(), wpt.data() + e * packed);
    }
  });
  for_blocks<T>(d, sh, d.GH, [&](EnsembleBlock<T>& k, int64_t e) {
    const int64_t oh = e * d.T * d.B * d.H, og = e * d.T * d.B * d.GH;
    k.wp = wpt.data() + e * packed;
    k.dh = dh + oh, k.h = const_cast<T*>(h + oh), k.s = const_cast<T*>(s + e * d.T * d.B * d.SH);
    k.dxp = dxp + og, k.dhp = dhp + og;
    ensemble_backward_block(cell, k);
  });
}

// ---------------------------------------------------------------------------------------------
// checks and the ops

int parse_ensemble_cell(const char* op, const std::string& name) {
  const int idx = EnsembleCells::find(name.c_str());
  if (idx < 0) {
    std::string names;
    for (int i = 0; i < EnsembleCells::size; ++i) names += (i == 0 ? "" : ", ") + std::string(EnsembleCells::names[i]);
    TORCH_CHECK(false, op, ": cell must be one of ", names, ", got '", name, "'");
  }
  return idx;
}

// Checks one tensor's rank, sizes (-1: any), dtype and device against `like`.
void check_tensor(const char* op, const char* name, const at::Tensor& t, std::initializer_list<int64_t> sizes,
                  const char* dims, const at::Tensor& like) {
  bool ok = t.dim() == static_cast<int64_t>(sizes.size());
  int64_t i = 0;
  for (int64_t s : sizes) ok = ok && (s < 0 || t.size(i++) == s);
  TORCH_CHECK(ok, op, ": ", name, " must be ", dims, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of the others (",
              like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on ", like.device(), ", got ", t.device());
}

// Validates `lead` ((E, T, B, ...): xproj in the forward, h_all in the backward) and w_hh, and
// returns the geometry; `lead_name` names the lead tensor in messages.
Dims ensemble_dims(const char* op, int cell, const char* lead_name, const at::Tensor& lead, const at::Tensor& w_hh) {
  TORCH_CHECK(lead.scalar_type() == at::kFloat || lead.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64, got ", lead.scalar_type());
  TORCH_CHECK(lead.device().is_cpu(), op, ": the CPU kernel got tensors on ", lead.device());
  TORCH_CHECK(lead.dim() == 4, op, ": ", lead_name, " must have 4 dimensions (E, T, B, ...), got ", lead.sizes());
  TORCH_CHECK(w_hh.dim() == 3, op, ": w_hh must be (E, G*H, H), got ", w_hh.sizes());
  int gates = 0, saved = 0;
  EnsembleCells::dispatch(cell, [&](auto c) { gates = decltype(c)::kGates, saved = decltype(c)::kSaved; });
  Dims d{lead.size(0), lead.size(1), lead.size(2), w_hh.size(2), 0, 0};
  d.GH = gates * d.H;
  d.SH = saved * d.H;
  TORCH_CHECK(d.E >= 1 && d.T >= 1 && d.B >= 1 && d.H >= 1, op, ": empty input: E, T, B and H must be >= 1, got E ",
              d.E, ", T ", d.T, ", B ", d.B, ", H ", d.H);
  check_tensor(op, "w_hh", w_hh, {d.E, d.GH, d.H}, "(E, G*H, H) with G the cell's gate blocks", lead);
  return d;
}

// at::empty for the ops' large outputs, asking Linux to back them with 2 MB pages.  The outputs
// are fresh memory the kernel must fault in and zero on first touch; with 4 KB pages that took
// about as long as the recurrence itself (perf on the 2-core AMD EPYC: LSTM forward, E = 8,
// T = 500, 215 MB of h_all + saved: 167 ms -> 91 ms of CPU time with huge pages).  torch does the
// same for every allocation under THP_MEM_ALLOC_ENABLE=1; this is the op's own share of it.
at::Tensor empty_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const uintptr_t begin = reinterpret_cast<uintptr_t>(t.data_ptr());
  const uintptr_t first = (begin + kHuge - 1) & ~(kHuge - 1), last = (begin + t.nbytes()) & ~(kHuge - 1);
  if (last > first) madvise(reinterpret_cast<void*>(first), last - first, MADV_HUGEPAGE);  // a hint: failure is fine
#endif
  return t;
}

template <typename F>
void for_models(int64_t E, const F& f) {
  at::parallel_for(0, E, 1, [&](int64_t begin, int64_t end) {
    for (int64_t e = begin; e < end; ++e) f(e);
  });
}

std::tuple<at::Tensor, at::Tensor> ensemble_rnn_forward_cpu(const at::Tensor& xproj_in, const at::Tensor& w_hh_in,
                                                            const at::Tensor& b_hh_in, c10::string_view cell_name) {
  const char* op = "ensemble_rnn_forward";
  const int cell = parse_ensemble_cell(op, std::string(cell_name));
  const Dims d = ensemble_dims(op, cell, "xproj", xproj_in, w_hh_in);
  check_tensor(op, "xproj", xproj_in, {d.E, d.T, d.B, d.GH}, "(E, T, B, G*H), G*H the rows of w_hh", xproj_in);
  check_tensor(op, "b_hh", b_hh_in, {d.E, d.GH}, "(E, G*H)", xproj_in);
  const at::Tensor xproj = xproj_in.contiguous(), w_hh = w_hh_in.contiguous(), b_hh = b_hh_in.contiguous();
  at::Tensor h_all = empty_output({d.E, d.T, d.B, d.H}, xproj.options());
  at::Tensor saved = empty_output({d.E, d.T, d.B, d.SH}, xproj.options());
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "ensemble_rnn_forward", [&] {
    using T = scalar_t;
    EnsembleCells::dispatch(cell, [&](auto c) {
      using Cell = decltype(c);
      const FusedShape sh = ensemble_shape(d.GH, d.H, d.B, sizeof(T));
      if (sh.lanes > 0) {
        return forward_fused<T>(cell, d, sh, xproj.data_ptr<T>(), w_hh.data_ptr<T>(), b_hh.data_ptr<T>(),
                                      h_all.data_ptr<T>(), saved.data_ptr<T>());
      }
      for_models(d.E, [&](int64_t e) {
        std::vector<T> hp(d.B * d.GH), zeros(d.H, T(0)), scr(kForwardScratch<Cell, T>);
        forward_model<Cell, T>(d, xproj.data_ptr<T>() + e * d.T * d.B * d.GH, w_hh.data_ptr<T>() + e * d.GH * d.H,
                               b_hh.data_ptr<T>() + e * d.GH, h_all.data_ptr<T>() + e * d.T * d.B * d.H,
                               saved.data_ptr<T>() + e * d.T * d.B * d.SH, hp.data(), zeros.data(), scr.data());
      });
    });
  });
  return {h_all, saved};
}

std::tuple<at::Tensor, at::Tensor> ensemble_rnn_backward_cpu(const at::Tensor& dh_all_in, const at::Tensor& h_all_in,
                                                             const at::Tensor& saved_in, const at::Tensor& w_hh_in,
                                                             c10::string_view cell_name) {
  const char* op = "ensemble_rnn_backward";
  const int cell = parse_ensemble_cell(op, std::string(cell_name));
  const Dims d = ensemble_dims(op, cell, "h_all", h_all_in, w_hh_in);
  check_tensor(op, "h_all", h_all_in, {d.E, d.T, d.B, d.H}, "(E, T, B, H)", h_all_in);
  check_tensor(op, "dh_all", dh_all_in, {d.E, d.T, d.B, d.H}, "(E, T, B, H), the shape of h_all", h_all_in);
  check_tensor(op, "saved", saved_in, {d.E, d.T, d.B, d.SH}, "(E, T, B, S*H) as ensemble_rnn_forward returned it",
               h_all_in);
  const at::Tensor dh_all = dh_all_in.contiguous(), h_all = h_all_in.contiguous(), saved = saved_in.contiguous(),
                   w_hh = w_hh_in.contiguous();
  at::Tensor dxproj = empty_output({d.E, d.T, d.B, d.GH}, h_all.options());
  at::Tensor dhproj = empty_output({d.E, d.T, d.B, d.GH}, h_all.options());
  AT_DISPATCH_FLOATING_TYPES(h_all.scalar_type(), "ensemble_rnn_backward", [&] {
    using T = scalar_t;
    EnsembleCells::dispatch(cell, [&](auto c) {
      using Cell = decltype(c);
      const FusedShape sh = ensemble_shape(d.H, d.H, d.B, sizeof(T));
      if (sh.lanes > 0) {
        return backward_fused<T>(cell, d, sh, dh_all.data_ptr<T>(), h_all.data_ptr<T>(), saved.data_ptr<T>(),
                                       w_hh.data_ptr<T>(), dxproj.data_ptr<T>(), dhproj.data_ptr<T>());
      }
      for_models(d.E, [&](int64_t e) {
        std::vector<T> carry(d.B * d.H), dc(d.B * d.H), zeros(d.H, T(0)), scr(kBackwardScratch<Cell, T>);
        const int64_t oh = e * d.T * d.B * d.H, og = e * d.T * d.B * d.GH;
        backward_model<Cell, T>(d, dh_all.data_ptr<T>() + oh, h_all.data_ptr<T>() + oh,
                                saved.data_ptr<T>() + e * d.T * d.B * d.SH, w_hh.data_ptr<T>() + e * d.GH * d.H,
                                dxproj.data_ptr<T>() + og, dhproj.data_ptr<T>() + og, carry.data(), dc.data(),
                                zeros.data(), scr.data());
      });
    });
  });
  return {dxproj, dhproj};
}

}  // namespace
}  // namespace mdesc::cpu

TORCH_LIBRARY_IMPL(mdesc, CPU, m) {
  m.impl("ensemble_rnn_forward", &mdesc::cpu::ensemble_rnn_forward_cpu);
  m.impl("ensemble_rnn_backward", &mdesc::cpu::ensemble_rnn_backward_cpu);
}
