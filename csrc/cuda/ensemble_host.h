// Host side of the CUDA ensemble recurrence, mdesc::ensemble_rnn_forward / _backward (schemas:
// csrc/mdesc.cpp; the Python autograd Function: mdesc/ensemble/_op.py), written once and
// parameterised by a launcher so the same code drives the GPU (ensemble.cu) and the CPU emulation
// the tests use (emulation/emulate.cpp).  A launcher is callable as
// launch(kernel, grid_x, grid_y, threads, shared_bytes, args...), as in run_host.h.
//
// The batched formulation: every step is one batched GEMM over the E models (at::bmm_out ->
// cuBLAS strided-batched) and one pointwise kernel over the (E, B, H) units
// (ensemble_kernels.cuh):
//   forward,  t = 0 .. T-1:   hw = h_{t-1} W_hh^T            (E, B, H) x (E, H, GH)
//                             h_t, c_t, saved_t = cell(xproj_t, hw + b_hh, h_{t-1}, c_{t-1})
//   backward, t = T-1 .. 0:   dxproj_t, dhproj_t, dc, direct = cell VJP(dh_all_t + dh_rec, ...)
//                             dh_rec = direct + dhproj_t W_hh   (E, B, GH) x (E, GH, H)
// The state starts at zero, so step 0 needs no GEMM.  dW_hh and db_hh are formed from dhproj by
// the caller (one GEMM over all steps), as on the CPU.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <string>
#include <tuple>

#include "common/run_checks.h"  // ceil_div
#include "cuda/ensemble_kernels.cuh"

namespace mdesc::cuda_impl {

// Sizes of one call: E models, T steps, B sequences, H units, GH = gates * H, S saved per row.
struct EnsembleDims {
  int64_t E, T, B, H, GH, S;
};

namespace ensemble_detail {

inline void check_float(const char* op, const char* name, const at::Tensor& t, const at::Tensor& like) {
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have dtype ", like.scalar_type(),
              " like the first argument, got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on ", like.device(), " like the first argument, got ",
              t.device());
}

template <class Cell>
EnsembleDims dims_of(const char* op, const at::Tensor& w_hh, int64_t E, int64_t T, int64_t B) {
  TORCH_CHECK(w_hh.dim() == 3 && w_hh.size(0) == E && w_hh.size(1) == Cell::kGates * w_hh.size(2), op,
              ": w_hh must be (E = ", E, ", G*H, H) with G = ", Cell::kGates, " gates, got ", w_hh.sizes());
  const int64_t H = w_hh.size(2);
  TORCH_CHECK(E >= 1 && T >= 1 && B >= 1 && H >= 1, op, ": empty ensemble, sequence, batch or layer (E = ", E,
              ", T = ", T, ", B = ", B, ", H = ", H, ")");
  return {E, T, B, H, Cell::kGates * H, Cell::kSaved * H};
}

}  // namespace ensemble_detail

// Checks of ensemble_rnn_forward's arguments (the cell name is checked by the caller's dispatch).
template <class Cell>
EnsembleDims check_ensemble_forward(const char* op, const at::Tensor& xproj, const at::Tensor& w_hh,
                                    const at::Tensor& b_hh) {
  TORCH_CHECK(xproj.dim() == 4, op, ": xproj must be (E, T, B, G*H), got ", xproj.sizes());
  TORCH_CHECK(xproj.scalar_type() == at::kFloat || xproj.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64, got ", xproj.scalar_type());
  ensemble_detail::check_float(op, "w_hh", w_hh, xproj);
  ensemble_detail::check_float(op, "b_hh", b_hh, xproj);
  const EnsembleDims d = ensemble_detail::dims_of<Cell>(op, w_hh, xproj.size(0), xproj.size(1), xproj.size(2));
  TORCH_CHECK(xproj.size(3) == d.GH, op, ": xproj must be (E, T, B, G*H = ", d.GH, "), got ", xproj.sizes());
  TORCH_CHECK(b_hh.dim() == 2 && b_hh.size(0) == d.E && b_hh.size(1) == d.GH, op, ": b_hh must be (E = ", d.E,
              ", G*H = ", d.GH, "), got ", b_hh.sizes());
  return d;
}

// Checks of ensemble_rnn_backward's arguments.
template <class Cell>
EnsembleDims check_ensemble_backward(const char* op, const at::Tensor& dh_all, const at::Tensor& h_all,
                                     const at::Tensor& saved, const at::Tensor& w_hh) {
  TORCH_CHECK(h_all.dim() == 4, op, ": h_all must be (E, T, B, H), got ", h_all.sizes());
  TORCH_CHECK(h_all.scalar_type() == at::kFloat || h_all.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64, got ", h_all.scalar_type());
  for (const auto& [name, t] : {std::pair{"dh_all", &dh_all}, std::pair{"saved", &saved}, std::pair{"w_hh", &w_hh}}) {
    ensemble_detail::check_float(op, name, *t, h_all);
  }
  const EnsembleDims d = ensemble_detail::dims_of<Cell>(op, w_hh, h_all.size(0), h_all.size(1), h_all.size(2));
  TORCH_CHECK(h_all.size(3) == d.H, op, ": h_all must be (E, T, B, H = ", d.H, "), got ", h_all.sizes());
  TORCH_CHECK(dh_all.sizes() == h_all.sizes(), op, ": dh_all must have h_all's shape ", h_all.sizes(), ", got ",
              dh_all.sizes());
  TORCH_CHECK(saved.dim() == 4 && saved.size(0) == d.E && saved.size(1) == d.T && saved.size(2) == d.B &&
                  saved.size(3) == d.S,
              op, ": saved must be (E, T, B, S = ", d.S, ") as ensemble_rnn_forward returned it, got ", saved.sizes());
  return d;
}

// The pointwise grid: enough blocks for one thread per (model, sequence, unit), at most 32 per
// multiprocessor (the kernels loop over the rest).
inline unsigned ensemble_blocks(const EnsembleDims& d, int sms) {
  const int64_t total = d.E * d.B * d.H;
  return static_cast<unsigned>(std::max<int64_t>(
      1, std::min<int64_t>(ceil_div(total, kPointwiseThreads), static_cast<int64_t>(std::max(sms, 1)) * 32)));
}

// Forward over all T steps; returns (h_all, saved).  poison: outputs start as NaN (tests).
template <class Cell, typename Launch>
std::tuple<at::Tensor, at::Tensor> ensemble_forward(const EnsembleDims& d, const at::Tensor& xproj_in,
                                                    const at::Tensor& w_hh_in, const at::Tensor& b_hh_in, int sms,
                                                    bool poison, const Launch& launch) {
  const at::Tensor xproj = xproj_in.contiguous(), w_hh = w_hh_in.contiguous(), b_hh = b_hh_in.contiguous();
  const auto opts = xproj.options();
  at::Tensor h_all = at::empty({d.E, d.T, d.B, d.H}, opts);
  at::Tensor saved = at::empty({d.E, d.T, d.B, d.S}, opts);
  if (poison) {
    h_all.fill_(std::numeric_limits<double>::quiet_NaN());
    saved.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  at::Tensor c = Cell::kHasC ? at::zeros({d.E, d.B, d.H}, opts) : at::Tensor();
  at::Tensor hw = at::empty({d.E, d.B, d.GH}, opts);
  const at::Tensor w_t = w_hh.transpose(1, 2);  // (E, H, GH)
  const unsigned blocks = ensemble_blocks(d, sms);
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "mdesc_ensemble_forward_cuda", [&] {
    EnsembleForwardArgs<scalar_t> a{xproj.data_ptr<scalar_t>(), nullptr, b_hh.data_ptr<scalar_t>(),
                                    h_all.data_ptr<scalar_t>(), Cell::kHasC ? c.data_ptr<scalar_t>() : nullptr,
                                    saved.data_ptr<scalar_t>(), d.E, d.T, d.B, d.H};
    for (int64_t t = 0; t < d.T; ++t) {
      if (t > 0) {
        at::bmm_out(hw, h_all.select(1, t - 1), w_t);
        a.hw = hw.data_ptr<scalar_t>();
      }
      launch(ensemble_forward_kernel<Cell, scalar_t>, blocks, 1u, kPointwiseThreads, size_t(0), a, t);
    }
  });
  return {h_all, saved};
}

// Backward over all T steps in reverse; returns (dxproj, dhproj).
template <class Cell, typename Launch>
std::tuple<at::Tensor, at::Tensor> ensemble_backward(const EnsembleDims& d, const at::Tensor& dh_all_in,
                                                     const at::Tensor& h_all_in, const at::Tensor& saved_in,
                                                     const at::Tensor& w_hh_in, int sms, bool poison,
                                                     const Launch& launch) {
  const at::Tensor dh_all = dh_all_in.contiguous(), h_all = h_all_in.contiguous(), saved = saved_in.contiguous();
  const at::Tensor w_hh = w_hh_in.contiguous();
  const auto opts = h_all.options();
  at::Tensor dxproj = at::empty({d.E, d.T, d.B, d.GH}, opts);
  at::Tensor dhproj = at::empty({d.E, d.T, d.B, d.GH}, opts);
  if (poison) {
    dxproj.fill_(std::numeric_limits<double>::quiet_NaN());
    dhproj.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  at::Tensor dh_rec = at::zeros({d.E, d.B, d.H}, opts);
  at::Tensor dc = Cell::kHasC ? at::zeros({d.E, d.B, d.H}, opts) : at::Tensor();
  const unsigned blocks = ensemble_blocks(d, sms);
  AT_DISPATCH_FLOATING_TYPES(h_all.scalar_type(), "mdesc_ensemble_backward_cuda", [&] {
    const EnsembleBackwardArgs<scalar_t> a{dh_all.data_ptr<scalar_t>(), dh_rec.data_ptr<scalar_t>(),
                                           Cell::kHasC ? dc.data_ptr<scalar_t>() : nullptr,
                                           h_all.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                                           dxproj.data_ptr<scalar_t>(), dhproj.data_ptr<scalar_t>(),
                                           d.E, d.T, d.B, d.H};
    for (int64_t t = d.T - 1; t >= 0; --t) {
      launch(ensemble_backward_kernel<Cell, scalar_t>, blocks, 1u, kPointwiseThreads, size_t(0), a, t);
      if (t == 0) break;
      if constexpr (Cell::kDirectDh) {
        dh_rec.baddbmm_(dhproj.select(1, t), w_hh);  // the kernel left the direct part in dh_rec
      } else {
        at::bmm_out(dh_rec, dhproj.select(1, t), w_hh);
      }
    }
  });
  return {dxproj, dhproj};
}

}  // namespace mdesc::cuda_impl
