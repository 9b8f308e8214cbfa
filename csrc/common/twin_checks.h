// Input validation and run geometry for mdesc::lstm_twin_run (schema: csrc/mdesc_twin.cpp),
// shared by every backend.  Messages say what was wrong; the Python layer (mdesc/core/twin.py)
// validates models and sequences first, so these mostly guard direct calls of torch.ops.mdesc.*.
#pragma once

#include <ATen/ATen.h>

namespace mdesc::twin {

struct TwinDims {
  int64_t C, T, B, I, L, H, n, k, S, warmup, qr_every, nblocks;
  bool x_per_ckpt, state_per_ckpt, delta_per_ckpt, q_per_ckpt, q_per_seq;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline TwinDims check_twin_inputs(const at::Tensor& x, const at::Tensor& lengths, at::TensorList w_ih,
                                  at::TensorList w_hh, at::TensorList bias, const at::Tensor& h0,
                                  const at::Tensor& c0, const at::Tensor& dh0, const at::Tensor& dc0,
                                  const at::Tensor& q0, int64_t zero_input_steps, int64_t warmup,
                                  int64_t qr_every) {
  TwinDims d{};
  const char* op = "lstm_twin_run: ";
  TORCH_CHECK(x.dim() == 4, op, "x must be [C|1, T, B, I], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              "x must be float32 or float64, got ", x.scalar_type());
  d.L = static_cast<int64_t>(w_ih.size());
  TORCH_CHECK(d.L >= 1, op, "need at least one layer of weights");
  TORCH_CHECK(static_cast<int64_t>(w_hh.size()) == d.L && static_cast<int64_t>(bias.size()) == d.L, op,
              "w_ih, w_hh and bias must list the same number of layers, got ", w_ih.size(), ", ",
              w_hh.size(), ", ", bias.size());
  TORCH_CHECK(w_hh[0].dim() == 3, op, "w_hh[0] must be [C, 4H, H], got ", w_hh[0].sizes());
  d.C = w_hh[0].size(0);
  d.H = w_hh[0].size(2);
  TORCH_CHECK(d.C >= 1 && d.H >= 1, op, "empty weights ", w_hh[0].sizes());
  d.T = x.size(1);
  d.B = x.size(2);
  d.I = x.size(3);
  TORCH_CHECK(d.T >= 1, op, "empty sequence (T = 0)");
  TORCH_CHECK(d.B >= 1, op, "empty batch (B = 0)");
  TORCH_CHECK(x.size(0) == 1 || x.size(0) == d.C, op, "x has ", x.size(0), " checkpoints but the weights have ", d.C);
  d.x_per_ckpt = x.size(0) == d.C && d.C > 1;
  const auto dtype = x.scalar_type();
  const auto device = x.device();
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t in = l == 0 ? d.I : d.H;
    for (const auto* t : {&w_ih[l], &w_hh[l], &bias[l]}) {
      TORCH_CHECK(t->scalar_type() == dtype, op, "all tensors must share x's dtype ", dtype, ", layer ", l,
                  " has ", t->scalar_type());
      TORCH_CHECK(t->device() == device, op, "all tensors must be on ", device, ", layer ", l, " has one on ",
                  t->device());
    }
    TORCH_CHECK(w_ih[l].dim() == 3 && w_ih[l].size(0) == d.C && w_ih[l].size(1) == 4 * d.H && w_ih[l].size(2) == in,
                op, "w_ih[", l, "] must be [", d.C, ", ", 4 * d.H, ", ", in, "], got ", w_ih[l].sizes());
    TORCH_CHECK(w_hh[l].dim() == 3 && w_hh[l].size(0) == d.C && w_hh[l].size(1) == 4 * d.H && w_hh[l].size(2) == d.H,
                op, "w_hh[", l, "] must be [", d.C, ", ", 4 * d.H, ", ", d.H, "], got ", w_hh[l].sizes());
    TORCH_CHECK(bias[l].dim() == 2 && bias[l].size(0) == d.C && bias[l].size(1) == 4 * d.H, op, "bias[", l,
                "] must be [", d.C, ", ", 4 * d.H, "], got ", bias[l].sizes());
  }
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == d.B && lengths.scalar_type() == at::kLong, op,
              "lengths must be int64 [B = ", d.B, "], got ", lengths.scalar_type(), " ", lengths.sizes());
  for (const auto* t : {&h0, &c0, &dh0, &dc0}) {
    TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == d.C) && t->size(1) == d.L &&
                    t->size(2) == d.B && t->size(3) == d.H,
                op, "h0, c0, dh0 and dc0 must be [C|1, L=", d.L, ", B=", d.B, ", H=", d.H, "], got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == dtype && t->device() == device, op,
                "h0, c0, dh0 and dc0 must match x's dtype and device");
  }
  TORCH_CHECK(h0.size(0) == c0.size(0), op, "h0 and c0 must have the same checkpoint axis");
  TORCH_CHECK(dh0.size(0) == dc0.size(0), op, "dh0 and dc0 must have the same checkpoint axis");
  d.state_per_ckpt = h0.size(0) == d.C && d.C > 1;
  d.delta_per_ckpt = dh0.size(0) == d.C && d.C > 1;
  d.n = 2 * d.H * d.L;
  TORCH_CHECK(q0.dim() == 4 && (q0.size(0) == 1 || q0.size(0) == d.C) && (q0.size(1) == 1 || q0.size(1) == d.B) &&
                  q0.size(2) == d.n,
              op, "q0 must be [C|1, B|1, n=2*H*L=", d.n, ", k], got ", q0.sizes());
  TORCH_CHECK(q0.scalar_type() == dtype && q0.device() == device, op, "q0 must match x's dtype and device");
  d.k = q0.size(3);
  TORCH_CHECK(d.k <= d.n, op, "k = ", d.k, " tangent vectors exceed the tangent-space dimension ", d.n);
  d.q_per_ckpt = q0.size(0) == d.C && d.C > 1;
  d.q_per_seq = q0.size(1) == d.B && d.B > 1;
  TORCH_CHECK(zero_input_steps >= 0, op, "zero_input_steps must be >= 0, got ", zero_input_steps);
  TORCH_CHECK(warmup >= 0, op, "warmup must be >= 0, got ", warmup);
  TORCH_CHECK(qr_every >= 1, op, "qr_every must be >= 1, got ", qr_every);
  d.S = d.T + zero_input_steps;
  TORCH_CHECK(d.k == 0 || warmup < d.S, op, "warmup = ", warmup, " leaves no counted steps in a run of ", d.S,
              " steps");
  d.warmup = warmup;
  d.qr_every = qr_every;
  d.nblocks = d.k == 0 ? 0 : ceil_div(d.S - warmup, qr_every);
  return d;
}

// Drive lengths must lie in [1, T]; `len` points at B int64 values on the host.
inline void check_twin_lengths(const TwinDims& d, const int64_t* len) {
  for (int64_t b = 0; b < d.B; ++b) {
    TORCH_CHECK(len[b] >= 1 && len[b] <= d.T, "lstm_twin_run: lengths[", b, "] = ", len[b], " must be in [1, T = ",
                d.T, "]");
  }
}

}  // namespace mdesc::twin
