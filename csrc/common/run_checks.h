// Input validation and run geometry for mdesc::tangent_run, shared by every backend.
// User errors are TORCH_CHECKs whose messages say what was wrong; the Python layer validates
// models and sequences first, so these mostly guard direct calls of torch.ops.mdesc.*.
#pragma once

#include <ATen/ATen.h>

#include <string>
#include <vector>

#include "common/cell_math.h"

namespace mdesc {

struct RunDims {
  CellKind cell;       // which recurrent cell
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
  int64_t nblocks;     // counted blocks ceil((S - warmup) / qr_every), 0 when k == 0
  bool x_per_ckpt;     // x has a checkpoint axis of size C (else broadcast from 1)
  bool state_per_ckpt; // h0/c0 have a checkpoint axis of size C
  bool q_per_ckpt;     // q0 has a checkpoint axis of size C
  bool q_per_seq;      // q0 has a sequence axis of size B
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

inline CellKind parse_cell(const std::string& name) {
  for (int i = 0; i < 4; ++i) {
    if (name == kCellNames[i]) return static_cast<CellKind>(i);
  }
  TORCH_CHECK(false, "tangent_run: cell must be one of lstm, gru, rnn_tanh, rnn_relu, got '", name, "'");
  return CellKind::kLstm;
}

// Tuning knobs of the op (explicit arguments, never environment variables; defaults in the
// schema, csrc/mdesc.cpp).  Each backend reads its own and ignores the others.
struct RunOptions {
  int64_t cpu_tile_columns = 48;    // CPU: target GEMM columns (state + tangents) per work unit
  bool portable_gemm = false;       // CPU: portable loops instead of torch's BLAS / LAPACK
  std::string cuda_path = "auto";   // CUDA: auto | fused | stepwise
  int64_t cuda_max_checkpoints = 0; // CUDA: at most this many checkpoints per launch (0: no cap)
  bool poison_outputs = false;      // CUDA: fill the outputs with NaN before running
  std::string cpu_path = "auto";    // CPU: auto | fused | gemm
};

inline RunDims check_run_inputs(const std::string& cell, const at::Tensor& x, const at::Tensor& lengths,
                                at::TensorList w_ih, at::TensorList w_hh, at::TensorList bias,
                                const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& q0,
                                int64_t zero_input_steps, int64_t warmup, int64_t qr_every) {
  RunDims d{};
  d.cell = parse_cell(cell);
  TORCH_CHECK(x.dim() == 4, "tangent_run: x must be [C|1, T, B, I], got ", x.sizes());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "tangent_run: x must be float32 or float64, got ", x.scalar_type());
  d.L = static_cast<int64_t>(w_ih.size());
  TORCH_CHECK(d.L >= 1, "tangent_run: need at least one layer of weights");
  TORCH_CHECK(static_cast<int64_t>(w_hh.size()) == d.L && static_cast<int64_t>(bias.size()) == d.L,
              "tangent_run: w_ih, w_hh and bias must list the same number of layers, got ",
              w_ih.size(), ", ", w_hh.size(), ", ", bias.size());
  TORCH_CHECK(w_hh[0].dim() == 3, "tangent_run: w_hh[0] must be [C, G, H], got ", w_hh[0].sizes());
  d.C = w_hh[0].size(0);
  d.H = w_hh[0].size(2);
  d.G = cell_gates(d.cell) * d.H;
  d.halves = cell_halves(d.cell);
  d.Hc = d.halves == 2 ? d.H : 0;
  TORCH_CHECK(d.C >= 1 && d.H >= 1, "tangent_run: empty weights ", w_hh[0].sizes());
  d.T = x.size(1);
  d.B = x.size(2);
  d.I = x.size(3);
  TORCH_CHECK(d.T >= 1, "tangent_run: empty sequence (T = 0)");
  TORCH_CHECK(d.B >= 1, "tangent_run: empty batch (B = 0)");
  TORCH_CHECK(x.size(0) == 1 || x.size(0) == d.C, "tangent_run: x has ", x.size(0),
              " checkpoints but the weights have ", d.C);
  d.x_per_ckpt = x.size(0) == d.C && d.C > 1;
  const auto dtype = x.scalar_type();
  const auto device = x.device();
  for (int64_t l = 0; l < d.L; ++l) {
    const int64_t in = l == 0 ? d.I : d.H;
    for (const auto* t : {&w_ih[l], &w_hh[l], &bias[l]}) {
      TORCH_CHECK(t->scalar_type() == dtype, "tangent_run: all tensors must share x's dtype ",
                  dtype, ", layer ", l, " has ", t->scalar_type());
      TORCH_CHECK(t->device() == device, "tangent_run: all tensors must be on ", device,
                  ", layer ", l, " has one on ", t->device());
    }
    TORCH_CHECK(w_ih[l].dim() == 3 && w_ih[l].size(0) == d.C && w_ih[l].size(1) == d.G &&
                    w_ih[l].size(2) == in,
                "tangent_run: w_ih[", l, "] must be [", d.C, ", ", d.G, ", ", in, "] for cell ", cell,
                ", got ", w_ih[l].sizes());
    TORCH_CHECK(w_hh[l].dim() == 3 && w_hh[l].size(0) == d.C && w_hh[l].size(1) == d.G &&
                    w_hh[l].size(2) == d.H,
                "tangent_run: w_hh[", l, "] must be [", d.C, ", ", d.G, ", ", d.H, "] for cell ", cell,
                ", got ", w_hh[l].sizes());
    TORCH_CHECK(bias[l].dim() == 2 && bias[l].size(0) == d.C && bias[l].size(1) == d.G,
                "tangent_run: bias[", l, "] must be [", d.C, ", ", d.G, "] for cell ", cell, ", got ",
                bias[l].sizes());
  }
  TORCH_CHECK(lengths.dim() == 1 && lengths.size(0) == d.B && lengths.scalar_type() == at::kLong,
              "tangent_run: lengths must be int64 [B = ", d.B, "], got ", lengths.scalar_type(), " ",
              lengths.sizes());
  for (const auto* t : {&h0, &c0}) {
    const int64_t width = t == &h0 ? d.H : d.Hc;
    TORCH_CHECK(t->dim() == 4 && (t->size(0) == 1 || t->size(0) == d.C) && t->size(1) == d.L &&
                    t->size(2) == d.B && t->size(3) == width,
                "tangent_run: ", t == &h0 ? "h0" : "c0", " must be [C|1, L=", d.L, ", B=", d.B, ", ", width,
                "] for cell ", cell, d.Hc == 0 ? " (no cell state: c0 is empty)" : "", ", got ", t->sizes());
    TORCH_CHECK(t->scalar_type() == dtype && t->device() == device,
                "tangent_run: h0/c0 must match x's dtype and device");
  }
  TORCH_CHECK(h0.size(0) == c0.size(0), "tangent_run: h0 and c0 must have the same checkpoint axis");
  d.state_per_ckpt = h0.size(0) == d.C && d.C > 1;
  d.n = d.halves * d.H * d.L;
  TORCH_CHECK(q0.dim() == 4 && (q0.size(0) == 1 || q0.size(0) == d.C) &&
                  (q0.size(1) == 1 || q0.size(1) == d.B) && q0.size(2) == d.n,
              "tangent_run: q0 must be [C|1, B|1, n=", d.halves, "*H*L=", d.n, ", k] for cell ", cell,
              ", got ", q0.sizes());
  TORCH_CHECK(q0.scalar_type() == dtype && q0.device() == device,
              "tangent_run: q0 must match x's dtype and device");
  d.k = q0.size(3);
  TORCH_CHECK(d.k <= d.n, "tangent_run: k = ", d.k, " tangent vectors exceed the tangent-space dimension ",
              d.n);
  d.q_per_ckpt = q0.size(0) == d.C && d.C > 1;
  d.q_per_seq = q0.size(1) == d.B && d.B > 1;
  TORCH_CHECK(zero_input_steps >= 0, "tangent_run: zero_input_steps must be >= 0, got ", zero_input_steps);
  TORCH_CHECK(warmup >= 0, "tangent_run: warmup must be >= 0, got ", warmup);
  TORCH_CHECK(qr_every >= 1, "tangent_run: qr_every must be >= 1, got ", qr_every);
  d.S = d.T + zero_input_steps;
  TORCH_CHECK(d.k == 0 || warmup < d.S, "tangent_run: warmup = ", warmup,
              " leaves no counted steps in a run of ", d.S, " steps");
  d.warmup = warmup;
  d.qr_every = qr_every;
  d.nblocks = d.k == 0 ? 0 : counted_blocks(d.S, warmup, qr_every);
  return d;
}

// Drive lengths must lie in [1, T]; `len` points at B int64 values on the host.  (Data-dependent,
// so backends whose tensors live elsewhere copy lengths to the host first.)
inline void check_lengths(const RunDims& d, const int64_t* len) {
  for (int64_t b = 0; b < d.B; ++b) {
    TORCH_CHECK(len[b] >= 1 && len[b] <= d.T, "tangent_run: lengths[", b, "] = ", len[b],
                " must be in [1, T = ", d.T, "]");
  }
}

// The schedule of common/cell_math.h for this run.
inline int64_t qr_block_after_step(const RunDims& d, int64_t s) {
  return qr_block_after_step(s, d.warmup, d.qr_every, d.S);
}

}  // namespace mdesc
