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
//                             h_t, saved_t = cell(xproj_t, hw + b_hh, h_{t-1}, c_{t-1})
//   backward, t = T-1 .. 0:   dxproj_t, dhproj_t, dc, direct = cell VJP(dh_all_t + dh_rec, ...)
//                             dh_rec = direct + dhproj_t W_hh   (E, B, GH) x (E, GH, H)
// The state starts at zero, so step 0 needs no GEMM.  dW_hh and db_hh are formed from dhproj by
// the caller (one GEMM over all steps), as on the CPU.
//
// Cost per step and model (B sequences, GH = G H): each GEMM 2 B H GH FLOPs (forward one,
// backward one); the pointwise kernels move ~B (2 GH + (S + 2) H) elements forward and
// ~B (2 GH + (S + 4) H) backward.  At the paper's shape (E 8, B 32, H 60, LSTM) a step is
// 8 x 0.92 MFLOP of GEMM: far below what one GPU launch can fill, so on a GPU the step time is
// launch latency (two launches per step), the price of the batched formulation's simplicity.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <initializer_list>
#include <limits>
#include <string>
#include <tuple>

#include "common/run_checks.h"  // ceil_div
#include "cuda/ensemble_kernels.cuh"

namespace mdesc::cuda_impl {

// Sizes of one call: E models, T steps, B sequences, H units, GH = G*H gate rows, SH = S*H saved.
struct EnsembleDims {
  int64_t E, T, B, H, GH, SH;
};

// The checks of the ops' arguments, with the CPU op's messages (csrc/cpu/ensemble.cpp), so a
// user sees the same error on either device.
namespace ensemble_checks {

// The index of a cell in EnsembleCells (common/ensemble_math.h), or a readable error.
inline int parse_cell(const char* op, const std::string& name) {
  const int idx = EnsembleCells::find(name.c_str());
  if (idx < 0) {
    std::string names;
    for (int i = 0; i < EnsembleCells::size; ++i) names += (i == 0 ? "" : ", ") + std::string(EnsembleCells::names[i]);
    TORCH_CHECK(false, op, ": cell must be one of ", names, ", got '", name, "'");
  }
  return idx;
}

// One tensor's rank, sizes, dtype and device against `like`.
inline void check_tensor(const char* op, const char* name, const at::Tensor& t, std::initializer_list<int64_t> sizes,
                         const char* dims, const at::Tensor& like) {
  bool ok = t.dim() == static_cast<int64_t>(sizes.size());
  int64_t i = 0;
  for (int64_t s : sizes) ok = ok && t.size(i++) == s;
  TORCH_CHECK(ok, op, ": ", name, " must be ", dims, ", got ", t.sizes());
  TORCH_CHECK(t.scalar_type() == like.scalar_type(), op, ": ", name, " must have the dtype of the others (",
              like.scalar_type(), "), got ", t.scalar_type());
  TORCH_CHECK(t.device() == like.device(), op, ": ", name, " must be on ", like.device(), ", got ", t.device());
}

// `lead` ((E, T, B, ...): xproj in the forward, h_all in the backward) and w_hh -> the geometry.
template <class Cell>
EnsembleDims dims(const char* op, const char* lead_name, const at::Tensor& lead, const at::Tensor& w_hh) {
  TORCH_CHECK(lead.scalar_type() == at::kFloat || lead.scalar_type() == at::kDouble, op,
              ": tensors must be float32 or float64, got ", lead.scalar_type());
  TORCH_CHECK(lead.dim() == 4, op, ": ", lead_name, " must have 4 dimensions (E, T, B, ...), got ", lead.sizes());
  TORCH_CHECK(w_hh.dim() == 3, op, ": w_hh must be (E, G*H, H), got ", w_hh.sizes());
  EnsembleDims d{lead.size(0), lead.size(1), lead.size(2), w_hh.size(2), 0, 0};
  d.GH = Cell::kGates * d.H;
  d.SH = Cell::kSaved * d.H;
  TORCH_CHECK(d.E >= 1 && d.T >= 1 && d.B >= 1 && d.H >= 1, op, ": empty input: E, T, B and H must be >= 1, got E ",
              d.E, ", T ", d.T, ", B ", d.B, ", H ", d.H);
  check_tensor(op, "w_hh", w_hh, {d.E, d.GH, d.H}, "(E, G*H, H) with G the cell's gate blocks", lead);
  return d;
}

}  // namespace ensemble_checks

// Checks of ensemble_rnn_forward's arguments.
template <class Cell>
EnsembleDims check_ensemble_forward(const char* op, const at::Tensor& xproj, const at::Tensor& w_hh,
                                    const at::Tensor& b_hh) {
  const EnsembleDims d = ensemble_checks::dims<Cell>(op, "xproj", xproj, w_hh);
  ensemble_checks::check_tensor(op, "xproj", xproj, {d.E, d.T, d.B, d.GH}, "(E, T, B, G*H), G*H the rows of w_hh",
                                xproj);
  ensemble_checks::check_tensor(op, "b_hh", b_hh, {d.E, d.GH}, "(E, G*H)", xproj);
  return d;
}

// Checks of ensemble_rnn_backward's arguments.
template <class Cell>
EnsembleDims check_ensemble_backward(const char* op, const at::Tensor& dh_all, const at::Tensor& h_all,
                                     const at::Tensor& saved, const at::Tensor& w_hh) {
  const EnsembleDims d = ensemble_checks::dims<Cell>(op, "h_all", h_all, w_hh);
  ensemble_checks::check_tensor(op, "h_all", h_all, {d.E, d.T, d.B, d.H}, "(E, T, B, H)", h_all);
  ensemble_checks::check_tensor(op, "dh_all", dh_all, {d.E, d.T, d.B, d.H}, "(E, T, B, H), the shape of h_all",
                                h_all);
  ensemble_checks::check_tensor(op, "saved", saved, {d.E, d.T, d.B, d.SH},
                                "(E, T, B, S*H) as ensemble_rnn_forward returned it", h_all);
  return d;
}

// Calls f(Cell{}) for the cell named `name` (an error naming the cells if there is none).
template <class F>
void dispatch_ensemble_cell(const char* op, const std::string& name, F&& f) {
  EnsembleCells::dispatch(ensemble_checks::parse_cell(op, name), static_cast<F&&>(f));
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
  at::Tensor saved = at::empty({d.E, d.T, d.B, d.SH}, opts);
  if (poison) {
    h_all.fill_(std::numeric_limits<double>::quiet_NaN());
    saved.fill_(std::numeric_limits<double>::quiet_NaN());
  }
  at::Tensor hw = at::empty({d.E, d.B, d.GH}, opts);
  const at::Tensor w_t = w_hh.transpose(1, 2);  // (E, H, GH)
  const unsigned blocks = ensemble_blocks(d, sms);
  AT_DISPATCH_FLOATING_TYPES(xproj.scalar_type(), "mdesc_ensemble_forward_cuda", [&] {
    EnsembleForwardArgs<scalar_t> a{xproj.data_ptr<scalar_t>(), nullptr, b_hh.data_ptr<scalar_t>(),
                                    h_all.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(), d.E, d.T, d.B, d.H};
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
      if (t > 0) dh_rec.baddbmm_(dhproj.select(1, t), w_hh);  // the kernel left the direct part in dh_rec
    }
  });
  return {dxproj, dhproj};
}

}  // namespace mdesc::cuda_impl
