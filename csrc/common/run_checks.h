// Input validation and run geometry of the runs, shared by every backend and both variants:
// mdesc::tangent_run and mdesc::lstm_twin_run (schemas: csrc/mdesc.cpp).  The twin's checks are
// the tangent run's plus its two extra tensors (dh0, dc0).  User errors are TORCH_CHECKs whose
// messages name the op and say what was wrong; the Python layer validates models and sequences
// first, so these mostly guard direct calls of torch.ops.mdesc.*.
#pragma once

#include <ATen/ATen.h>

#include <string>

#include "common/cell_math.h"

namespace mdesc {

struct RunDims {
  CellKind cell;       // which recurrent cell (the twin: always the LSTM)
  int64_t G;           // gate rows per layer, cell_gates(cell) * H
  int64_t halves;      // tangent rows per hidden unit, cell_halves(cell) (2: h and c)
  int64_t Hc;          // width of the c state, H for the LSTM, 0 otherwise
  int64_t C;           // checkpoints
  int64_t T;           // driven steps (time axis of x)
  int64_t B;           // sequences
  int64_t I;           // input size of layer 0
  int64_t L;           // layers
  int64_t H;           // hidden size
  int64_t n;           // tangent-space dimension halves*H*L
  int64_t k;           // tangent vectors (0: forward only)
  int64_t S;           // total steps T + zero_input_steps
  int64_t warmup;      // uncounted leading steps
  int64_t qr_every;    // re-orthonormalisation interval
  int64_t nblocks;     // counted blocks (common/cell_math.h: counted_blocks), 0 when k == 0
  bool x_per_ckpt;     // x has a checkpoint axis of size C (else broadcast from 1)
  bool state_per_ckpt; // h0/c0 have a checkpoint axis of size C
  bool delta_per_ckpt; // the twin's dh0/dc0 have a checkpoint axis of size C (tangent run: false)
  bool q_per_ckpt;     // q0 has a checkpoint axis of size C
  bool q_per_seq;      // q0 has a sequence axis of size B
};

// What one call of an op passes: its name for messages, its cell, and its tensors (the tangent
// run leaves dh0 and dc0 null).
struct RunInputs {
  const char* op;                // "tangent_run" or "lstm_twin_run"
  std::string cell;              // a name of common/cell_math.h's Cells
  const at::Tensor& x;           // [C|1, T, B, I]
  const at::Tensor& lengths;     // [B] int64
  at::TensorList w_ih, w_hh, bias;
  const at::Tensor& h0;          // [C|1, L, B, H]
  const at::Tensor& c0;          // [C|1, L, B, Hc]
  const at::Tensor& q0;          // [C|1, B|1, n, k]
  const at::Tensor* dh0 = nullptr;  // twin only: [C|1, L, B, H]
  const at::Tensor* dc0 = nullptr;
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline CellKind parse_cell(const char* op, const std::string& name) {
  std::string names;
  for (int i = 0; i < Cells::size; ++i) {
    if (name == Cells::names[i]) return static_cast<CellKind>(i);
    names += (i == 0 ? "" : ", ") + std::string(Cells::names[i]);
  }
  TORCH_CHECK(false, op, ": cell must be one of ", names, ", got '", name, "'");
  return CellKind{};
}

namespace detail {

// x, the weights and lengths: sets cell, G, halves, Hc, C, T, B, I, L, H, x_per_ckpt.
inline void check_inputs_and_weights(const RunInputs& in, RunDims& d) {
  const char* op = in.op;
  const at::Tensor& x = in.x;
  d.cell = parse_cell(op, in.cell);
  TORCH_CHECK(x.dim() == 4, op, ": x must be [C|1, T, B, I], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, op,
              ": x must be float32 or float64, got ", x.scalar_type());
  d.L = static_cast<int64_t>(in.w_ih.size());
  TORCH_CHECK(d.L >= 1, op, ": need at least one layer of weights");
  TORCH_CHECK(static_cast<int64_t>(in.w_hh.size()) == d.L && static_cast<int64_t>(in.bias.size()) == d.L, op,
              ": w_ih, w_hh and bias must list the same number of layers, got ", in.w_ih.size(), ", ",
              in.w_hh.size(), ", ", in.bias.size());
  TORCH_CHECK(in.w_hh[0].dim() == 3, op, ": w_hh[0] must be [C, G, H], got ", in.w_hh[0].sizes());
  d.C = in.w_hh[0].size(0);
  d.H = in.w_hh[0].size(2);
  d.G = cell_gates(d.cell) * d.H;
  d.halves = cell_halves(d.cell);
  d.Hc = d.halves == 2 ? d.H : 0;
  TORCH_CHECK(d.C >= 1 && d.H >= 1, op, ": empty weights ", in.w_hh[0].sizes());
  d.T = x.size(1);
  d.B = x.size(2);
  d.I = x.size(3);
  TORCH_CHECK(d.T >= 1, op, ": empty sequence (T = 0)");
  TORCH_CHECK(d.B >= 1, op, ": empty batch (B = 0)");
  TORCH_CHECK(x.size(0) == 1 || x.size(0) == d.C, op, ": x has ", x.size(0), " checkpoints but the weights have ", d.C);
  d.x_per_ckpt = x.size(0) == d.C && d.C > 1;
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t width = l == 0 ? d.I : d.H;
    for (const auto* t : {&in.w_ih[l], &in.w_hh[l], &in.bias[l]}) {
      TORCH_CHECK(t->scalar_type() == x.scalar_type(), op, ": all tensors must share x's dtype ", x.scalar_type(),
                  ", layer ", l, " has ", t->scalar_type());
      TORCH_CHECK(t->device() == x.device(), op, ": all tensors must be on ", x.device(), ", layer ", l,
                  " has one on ", t->device());
    }
    for (const auto& [name, w, cols] : {std::tuple{"w_ih", &in.w_ih[l], width}, std::tuple{"w_hh", &in.w_hh[l], d.H}}) {
      TORCH_CHECK(w->dim() == 3 && w->size(0) == d.C && w->size(1) == d.G && w->size(2) == cols, op, ": ", name, "[", l,
                  "] must be [", d.C, ", ", d.G, ", ", cols, "] for cell ", in.cell, ", got ", w->sizes());
    }
    TORCH_CHECK(in.bias[l].dim() == 2 && in.bias[l].size(0) == d.C && in.bias[l].size(1) == d.G, op, ": bias[", l,
                "] must be [", d.C, ", ", d.G, "] for cell ", in.cell, ", got ", in.bias[l].sizes());
  }
  TORCH_CHECK(in.lengths.dim() == 1 && in.lengths.size(0) == d.B && in.lengths.scalar_type() == at::kLong, op,
              ": lengths must be int64 [B = ", d.B, "], got ", in.lengths.scalar_type(), " ", in.lengths.sizes());
}

// A pair of states (h0 and c0, or the twin's dh0 and dc0), [C|1, L, B, H] and [C|1, L, B, Hc]
// with one checkpoint axis; returns whether that axis has size C.
// hname, cname: how the messages name each tensor; pair: both.
inline bool check_state_pair(const RunInputs& in, const RunDims& d, const at::Tensor& h, const at::Tensor& c,
                             const char* hname, const char* cname, const char* pair) {
  const char* op = in.op;
  for (const at::Tensor* t : {&h, &c}) {
    const int64_t width = t == &h ? d.H : d.Hc;
    TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == d.C) && t->size(1) == d.L &&
                    t->size(2) == d.B && t->size(3) == width,
                op, ": ", t == &h ? hname : cname, " must be [C|1, L=", d.L, ", B=", d.B, ", ", width, "] for cell ",
                in.cell, d.Hc == 0 ? " (no cell state: c0 is empty)" : "", ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == in.x.scalar_type() && t->device() == in.x.device(), op, ": ", pair,
                " must match x's dtype and device");
  }
  TORCH_CHECK(h.size(0) == c.size(0), op, ": ", pair, " must have the same checkpoint axis");
  return h.size(0) == d.C && d.C > 1;
}

// q0 and the schedule: sets n, k, q_per_ckpt, q_per_seq, S, warmup, qr_every, nblocks.
inline void check_frame_and_schedule(const RunInputs& in, RunDims& d, int64_t zero_input_steps, int64_t warmup,
                                     int64_t qr_every) {
  const char* op = in.op;
  const at::Tensor& q0 = in.q0;
  d.n = d.halves * d.H * d.L;
  TORCH_CHECK(q0.dim() == 4 && (q0.size(0) == 1 || q0.size(0) == d.C) && (q0.size(1) == 1 || q0.size(1) == d.B) &&
                  q0.size(2) == d.n,
              op, ": q0 must be [C|1, B|1, n=", d.halves, "*H*L=", d.n, ", k] for cell ", in.cell, ", got ",
              q0.sizes());
  TORCH_CHECK(q0.scalar_type() == in.x.scalar_type() && q0.device() == in.x.device(), op,
              ": q0 must match x's dtype and device");
  d.k = q0.size(3);
  TORCH_CHECK(d.k <= d.n, op, ": k = ", d.k, " tangent vectors exceed the tangent-space dimension ", d.n);
  d.q_per_ckpt = q0.size(0) == d.C && d.C > 1;
  d.q_per_seq = q0.size(1) == d.B && d.B > 1;
  TORCH_CHECK(zero_input_steps >= 0, op, ": zero_input_steps must be >= 0, got ", zero_input_steps);
  TORCH_CHECK(warmup >= 0, op, ": warmup must be >= 0, got ", warmup);
  TORCH_CHECK(qr_every >= 1, op, ": qr_every must be >= 1, got ", qr_every);
  d.S = d.T + zero_input_steps;
  TORCH_CHECK(d.k == 0 || warmup < d.S, op, ": warmup = ", warmup, " leaves no counted steps in a run of ", d.S,
              " steps");
  d.warmup = warmup;
  d.qr_every = qr_every;
  d.nblocks = d.k == 0 ? 0 : counted_blocks(d.S, warmup, qr_every);
}

}  // namespace detail

// Checks one call's inputs and returns its geometry.  (The twin also requires the LSTM.)
inline RunDims check_run_inputs(const RunInputs& in, int64_t zero_input_steps, int64_t warmup, int64_t qr_every) {
  RunDims d{};
  detail::check_inputs_and_weights(in, d);
  d.state_per_ckpt = detail::check_state_pair(in, d, in.h0, in.c0, "h0", "c0", "h0 and c0");
  if (in.dh0 != nullptr) {
    TORCH_CHECK(d.cell == cell_kind<LstmCell>(), in.op, ": the twin run supports the LSTM only");
    d.delta_per_ckpt = detail::check_state_pair(in, d, *in.dh0, *in.dc0, "dh0 and dc0", "dh0 and dc0", "dh0 and dc0");
  }
  detail::check_frame_and_schedule(in, d, zero_input_steps, warmup, qr_every);
  return d;
}

// Drive lengths must lie in [1, T]; `len` points at B int64 values on the host.  (Data-dependent,
// so backends whose tensors live elsewhere copy lengths to the host first.)
inline void check_lengths(const char* op, const RunDims& d, const int64_t* len) {
  for (int64_t b = 0; b < d.B; ++b) {
    TORCH_CHECK(len[b] >= 1 && len[b] <= d.T, op, ": lengths[", b, "] = ", len[b], " must be in [1, T = ", d.T, "]");
  }
}

// The schedule of common/cell_math.h for this run.
inline int64_t qr_block_after_step(const RunDims& d, int64_t s) {
  return qr_block_after_step(s, d.warmup, d.qr_every, d.S);
}

}  // namespace mdesc
