// The fused CPU path of the ensemble recurrence (csrc/cpu/ensemble.cpp drives it; the per-unit
// math and the layouts: csrc/common/ensemble_math.h).  One call runs one block of at most nr
// sequences of one model through every step:
//   forward   pack h_{t-1} of the block as a B-panel; gates [nr][Gpad] = W_hh h_{t-1} by the
//             register-tiled block GEMM of csrc/cpu/fused_step.h (W_hh packed once per call);
//             then each sequence's cell update from those rows while they are in L1
//   backward  each sequence's vector-Jacobian product (dxproj, dhproj rows, the direct part of
//             dL/dh_{t-1}, dL/dc_{t-1}); pack the block's dhproj rows as a B-panel; carry +=
//             dhproj_t W_hh by the same block GEMM (W_hh^T packed: H rows, K = G*H)
// Why (issue 24; measured on the 2-core AMD EPYC): with BLAS per step and a pointwise pass whose
// last H mod W units went through packed scratch, the pointwise pass took 4-5x the products'
// time.  Here every unit vector is a whole vector: the last one overlaps the one before when W
// does not divide H (same inputs, same outputs), which needs the outputs apart from the inputs,
// so the backward's carry and dc are double-buffered.  The functions are always_inline so they
// compile for the ISA of the entry point that calls them (csrc/cpu/ensemble_fused.cpp); the
// path needs H >= one vector (else ensemble.cpp takes the BLAS path).
#pragma once

#include <cstdint>
#include <cstring>
#include <utility>

#include "common/ensemble_math.h"
#include "cpu/fused_step.h"
#include "cpu/pointwise.h"

namespace mdesc::cpu {

// One block of one model (pointers to the model's own tensors; rows t, b indexed inside).
template <typename T>
struct EnsembleBlock {
  FusedShape sh;              // tiling of the block's product (G*H rows forward, H backward)
  int64_t steps, B, H;        // steps, sequences of the model, hidden units
  int64_t b0, nb;             // the block: sequences b0 .. b0 + nb - 1, nb <= sh.nr
  const T* wp;                // packed W_hh (forward) or W_hh^T (backward), fused_pack_weights
  const T* xp = nullptr;      // forward: xproj [T, B, G*H]
  const T* bias = nullptr;    // forward: b_hh [G*H]
  T* h = nullptr;             // h_all [T, B, H] (written by the forward, read by the backward)
  T* s = nullptr;             // saved [T, B, S*H] (likewise)
  const T* dh = nullptr;      // backward: dh_all [T, B, H]
  T* dxp = nullptr;           // backward: dxproj [T, B, G*H]
  T* dhp = nullptr;           // backward: dhproj [T, B, G*H]
  T* panel = nullptr;         // scratch: fused_panel_size(sh, nr, K)
  T* out = nullptr;           // scratch: [nr][Gpad]
  const T* zeros = nullptr;   // G*H zeros
  T* carry = nullptr;         // backward scratch: 2 x [nr, H]
  T* dc = nullptr;            // backward scratch: 2 x [nr, H]
};

// Entry points (ensemble_fused.cpp): run the block with the ISA of b.sh.bytes; `cell` an index
// of EnsembleCells.
void ensemble_forward_block(int cell, const EnsembleBlock<float>& b);
void ensemble_forward_block(int cell, const EnsembleBlock<double>& b);
void ensemble_backward_block(int cell, const EnsembleBlock<float>& b);
void ensemble_backward_block(int cell, const EnsembleBlock<double>& b);

namespace ensemble_detail {

#define MDESC_AI inline __attribute__((always_inline))

// Software prefetch of n contiguous elements into L2 (for reading or for writing): the next
// step's rows of a block sit a whole step (B rows) further on, a jump the hardware prefetcher
// does not follow, and perf showed the forward stalled on its first read of xproj.
template <typename T>
MDESC_AI void prefetch_read(const T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(p + i, 0, 2);
}
template <typename T>
MDESC_AI void prefetch_write(T* p, int64_t n) {
  for (int64_t i = 0; i < n; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(p + i, 1, 2);
}

// Lane v of a unit vector: gate q of the unit at q*H + v in xp, g (W_hh h_{t-1}), bias.
template <class Cell, typename T>
MDESC_AI void forward_lane(int64_t v, int64_t H, const T* __restrict xp, const T* __restrict g,
                           const T* __restrict bias, const T* __restrict hprev, const T* __restrict cprev,
                           T* __restrict h, T* __restrict s) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  T a[G], b[G], sv[S > 0 ? S : 1];
#pragma GCC unroll 8
  for (int q = 0; q < G; ++q) {
    a[q] = xp[q * H + v];
    b[q] = g[q * H + v] + bias[q * H + v];
  }
  T hu = hprev[v];
  T cu = Cell::kHasC ? cprev[v] : T(0);
  Cell::template forward<CpuMath>(a, b, hu, cu, sv);
  h[v] = hu;
#pragma GCC unroll 8
  for (int q = 0; q < S; ++q) s[q * H + v] = sv[q];
}

template <class Cell, typename T>
MDESC_AI void backward_lane(int64_t v, int64_t H, const T* __restrict s, const T* __restrict h,
                            const T* __restrict hprev, const T* __restrict cprev, const T* __restrict dh_all,
                            const T* __restrict carry_in, const T* __restrict dc_in, T* __restrict carry_out,
                            T* __restrict dc_out, T* __restrict dxp, T* __restrict dhp) {
  constexpr int G = Cell::kGates, S = Cell::kSaved;
  T sv[S > 0 ? S : 1], dx[G], dhv[G];
#pragma GCC unroll 8
  for (int q = 0; q < S; ++q) sv[q] = s[q * H + v];
  const T dh = dh_all[v] + carry_in[v];
  T dcu = Cell::kHasC ? dc_in[v] : T(0);
  T direct;
  Cell::backward(sv, h[v], hprev[v], Cell::kHasC ? cprev[v] : T(0), dh, dcu, dx, dhv, direct);
#pragma GCC unroll 8
  for (int q = 0; q < G; ++q) {
    dxp[q * H + v] = dx[q];
    dhp[q * H + v] = dhv[q];
  }
  carry_out[v] = direct;
  if constexpr (Cell::kHasC) dc_out[v] = dcu;
}

template <class Cell, typename T, int Bytes>
MDESC_AI void forward_block(const EnsembleBlock<T>& k) {
  constexpr int W = fused_detail::Vec<T, Bytes>::kLanes;
  const int64_t H = k.H, GH = Cell::kGates * H, SH = Cell::kSaved * H;
  const int64_t step_h = k.B * H, step_g = k.B * GH, step_s = k.B * SH;
  for (int64_t t = 0; t < k.steps; ++t) {
    const bool first = t == 0;
    if (t + 1 < k.steps) {  // the block's rows of step t + 1, while this step computes
      prefetch_read(k.xp + (t + 1) * step_g + k.b0 * GH, k.nb * GH);
      prefetch_write(k.h + (t + 1) * step_h + k.b0 * H, k.nb * H);
      prefetch_write(k.s + (t + 1) * step_s + k.b0 * SH, k.nb * SH);
    }
    if (!first) {
      fused_detail::pack_panel<T>(k.sh.nr, k.h + (t - 1) * step_h + k.b0 * H, H, 0, k.nb, H, k.panel);
      fused_detail::block_gemm_any<T, Bytes>(k.sh, H, k.wp, k.panel, nullptr, nullptr, k.out);
    }
    for (int64_t j = 0; j < k.nb; ++j) {
      const int64_t b = k.b0 + j;
      const T* __restrict xp = k.xp + t * step_g + b * GH;
      const T* __restrict g = first ? k.zeros : k.out + j * k.sh.Gpad;
      const T* __restrict hprev = first ? k.zeros : k.h + (t - 1) * step_h + b * H;
      const T* __restrict cprev = k.zeros;
      if constexpr (Cell::kHasC) {
        if (!first) cprev = k.s + (t - 1) * step_s + b * SH + Cell::kCSlot * H;
      }
      T* __restrict h = k.h + t * step_h + b * H;
      T* __restrict s = k.s + t * step_s + b * SH;
      fused_detail::for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v)
          forward_lane<Cell, T>(v, H, xp + r, g + r, k.bias + r, hprev + r, cprev + r, h + r, s + r);
      });
    }
  }
}

template <class Cell, typename T, int Bytes>
MDESC_AI void backward_block(const EnsembleBlock<T>& k) {
  constexpr int W = fused_detail::Vec<T, Bytes>::kLanes;
  const int64_t H = k.H, GH = Cell::kGates * H, SH = Cell::kSaved * H, NRH = k.sh.nr * H;
  const int64_t step_h = k.B * H, step_g = k.B * GH, step_s = k.B * SH;
  T *carry_in = k.carry, *carry_out = k.carry + NRH, *dc_in = k.dc, *dc_out = k.dc + NRH;
  std::memset(carry_in, 0, sizeof(T) * NRH);
  std::memset(dc_in, 0, sizeof(T) * NRH);
  for (int64_t t = k.steps - 1; t >= 0; --t) {
    const bool first = t == 0;
    if (t >= 1) {  // the block's rows of step t - 1, while this step computes (h_{t-2} is read as well)
      prefetch_read(k.s + (t - 1) * step_s + k.b0 * SH, k.nb * SH);
      prefetch_read(k.dh + (t - 1) * step_h + k.b0 * H, k.nb * H);
      if (t >= 2) prefetch_read(k.h + (t - 2) * step_h + k.b0 * H, k.nb * H);
      prefetch_write(k.dxp + (t - 1) * step_g + k.b0 * GH, k.nb * GH);
      prefetch_write(k.dhp + (t - 1) * step_g + k.b0 * GH, k.nb * GH);
    }
    for (int64_t j = 0; j < k.nb; ++j) {
      const int64_t b = k.b0 + j;
      const T* __restrict s = k.s + t * step_s + b * SH;
      const T* __restrict h = k.h + t * step_h + b * H;
      const T* __restrict hprev = first ? k.zeros : k.h + (t - 1) * step_h + b * H;
      const T* __restrict cprev = k.zeros;
      if constexpr (Cell::kHasC) {
        if (!first) cprev = k.s + (t - 1) * step_s + b * SH + Cell::kCSlot * H;
      }
      const T* __restrict dh = k.dh + t * step_h + b * H;
      const T *__restrict ci = carry_in + j * H, *__restrict di = dc_in + j * H;
      T *__restrict co = carry_out + j * H, *__restrict dco = dc_out + j * H;
      T* __restrict dxp = k.dxp + t * step_g + b * GH;
      T* __restrict dhp = k.dhp + t * step_g + b * GH;
      fused_detail::for_unit_vectors<W>(H, [&](int64_t r) __attribute__((always_inline)) {
#pragma omp simd
        for (int64_t v = 0; v < W; ++v)
          backward_lane<Cell, T>(v, H, s + r, h + r, hprev + r, cprev + r, dh + r, ci + r, di + r, co + r,
                                 dco + r, dxp + r, dhp + r);
      });
    }
    if (first) break;
    fused_detail::pack_panel<T>(k.sh.nr, k.dhp + t * step_g + k.b0 * GH, GH, 0, k.nb, GH, k.panel);
    fused_detail::block_gemm_any<T, Bytes>(k.sh, GH, k.wp, k.panel, nullptr, nullptr, k.out);
    for (int64_t j = 0; j < k.nb; ++j) {
      T* __restrict co = carry_out + j * H;
      const T* __restrict o = k.out + j * k.sh.Gpad;
#pragma omp simd
      for (int64_t u = 0; u < H; ++u) co[u] += o[u];
    }
    std::swap(carry_in, carry_out);
    std::swap(dc_in, dc_out);
  }
}

#undef MDESC_AI

}  // namespace ensemble_detail
}  // namespace mdesc::cpu
