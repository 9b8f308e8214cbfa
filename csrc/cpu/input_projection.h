// The layer-0 input projection of a work unit's driven steps, shared by the tangent and twin
// kernels (csrc/cpu/run.cpp, both variants): XP[:, t * nb + s] = W_ih x[t, b0 + s] + bias
// for t < tu, through the fused step's block GEMM where the unit runs the fused step
// (sh.lanes > 0), else through BLAS (or the portable loops).
#pragma once

#include <algorithm>
#include <cstdint>

#include "cpu/fused_step.h"
#include "cpu/gemm.h"

namespace mdesc::cpu {

// Scratch of the fused path (unused otherwise): wp fused_packed_size(sh, I) elements, panel
// sh.nr * I, gates sh.nr * sh.Gpad.
template <typename T>
struct ProjectionScratch {
  T* xbuf;   // [tu * nb, I] the gathered inputs
  T* wp;
  T* panel;
  T* gates;
};

template <typename T>
void project_inputs(const FusedShape& sh, bool portable, const T* x, int64_t B, int64_t I, int64_t b0, int64_t nb,
                    int64_t tu, const T* w, const T* bias, int64_t G, const ProjectionScratch<T>& tmp, T* xp) {
  for (int64_t t = 0; t < tu; ++t) std::copy(x + (t * B + b0) * I, x + (t * B + b0 + nb) * I, tmp.xbuf + t * nb * I);
  const int64_t cols = tu * nb;
  if (sh.lanes > 0) {  // nr input columns at a time
    const int64_t nr = sh.nr;
    fused_pack_weights<T>(sh, I, w, tmp.wp);
    for (int64_t col0 = 0; col0 < cols; col0 += nr) {
      const int64_t m = std::min(nr, cols - col0);
      fused_detail::pack_panel<T>(nr, tmp.xbuf + col0 * I, I, 0, m, I, tmp.panel);
      fused_block_gemm(sh, I, tmp.wp, tmp.panel, tmp.gates);
      for (int64_t j = 0; j < m; ++j) {
        const T* g = tmp.gates + j * sh.Gpad;
        T* p = xp + (col0 + j) * G;
        for (int64_t r = 0; r < G; ++r) p[r] = g[r] + bias[r];
      }
    }
    return;
  }
  gemm<T>(portable, true, G, cols, I, T(1), w, I, tmp.xbuf, I, T(0), xp, G);
  for (int64_t col = 0; col < cols; ++col) {
    T* p = xp + col * G;
    for (int64_t r = 0; r < G; ++r) p[r] += bias[r];
  }
}

// in[s]: what a layer adds to sequence s's state column at step t -- the input projection (with
// bias) xp[:, t * nb + s] on layer 0's driven steps (t < lengths[s]), else the layer's bias.
template <typename T>
void select_layer_inputs(int64_t nb, const int64_t* lengths, bool layer0, int64_t t, const T* xp, const T* bias,
                         int64_t G, const T** in) {
  for (int64_t s = 0; s < nb; ++s) {
    const bool driven = layer0 && t < lengths[s];
    in[s] = driven ? xp + (t * nb + s) * G : bias;
  }
}

}  // namespace mdesc::cpu
