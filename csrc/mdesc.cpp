// Operator schemas of the mdesc extension (one TORCH_LIBRARY), and the two small ops that answer
// from the C++ tables (counted_blocks, cells); nothing else.
//
// Each backend registers its implementation of both runs in its own folder, under the same file
// name:
//   csrc/cpu/run.cpp    TORCH_LIBRARY_IMPL(mdesc, CPU, m)
//   csrc/cuda/run.cu    TORCH_LIBRARY_IMPL(mdesc, CUDA, m)
// and both take the cell math from csrc/common/cell_math.h (the twin's: common/twin_math.h) and
// the input checks from csrc/common/run_checks.h.
//
// Shapes (C checkpoints, T driven steps, B sequences, L layers, H hidden, I input, G gate rows
// per layer, n tangent-space dimension, k tangent vectors; "C|1" means either C or 1, broadcast
// over checkpoints):
//
//   cell       G     n        c state   gate rows (in this order)
//   lstm       4H    2*H*L    [.., H]   i, f, g, o
//   gru        4H    H*L      [.., 0]   r, z, n_x, n_h (see cell_math.h: W_hh's n_x rows and
//                                       W_ih's n_h rows are zero; bias b_r, b_z, b_in, b_hn)
//   rnn_tanh   H     H*L      [.., 0]   the one pre-activation
//   rnn_relu   H     H*L      [.., 0]
//
// tangent_run(x, lengths, w_ih, w_hh, bias, h0, c0, q0, zero_input_steps, warmup, qr_every,
//             *, cell, <tuning knobs>) -> (block_logs, h_T, c_T)
//   x        [C|1, T, B, I]  input sequences (float32 or float64; all tensors share the dtype)
//   lengths  [B] int64       driven length of each sequence, 1 <= lengths[b] <= T; after it the
//                            sequence receives zero input
//   w_ih[l]  [C, G, I_l]     input weights of layer l (I_0 = I, I_l = H)
//   w_hh[l]  [C, G, H]       recurrent weights of layer l
//   bias[l]  [C, G]          b_ih + b_hh of layer l (zeros for bias=False; GRU: see above)
//   h0       [C|1, L, B, H]  initial hidden state
//   c0       [C|1, L, B, H]  initial cell state (LSTM); [C|1, L, B, 0] for the other cells
//   q0       [C|1, B|1, n, k] initial tangent frame, rows ordered [h_1, c_1, ..., h_L, c_L]
//                            (LSTM) or [h_1, ..., h_L]; k = 0 runs the forward pass only
//   Every sequence runs S = T + zero_input_steps steps.  The frame is re-orthonormalised every
//   qr_every steps (counted from step 0 during warm-up, from `warmup` afterwards), at the end of
//   warm-up, and after the last step.  Steps >= warmup are counted in blocks of qr_every
//   (the last block may be shorter): nblocks = ceil((S - warmup) / qr_every), 0 when k = 0
//   (common/cell_math.h: qr_block_after_step, counted_blocks).
//   block_logs [C, B, nblocks, k] float64: sum of log R_ii over each counted block
//   h_T, c_T   [C, L, B, H] / [C, L, B, H or 0]  state after the last step
//
// Tuning knobs (keyword-only, with defaults; results do not depend on them beyond rounding):
//   cpu_tile_columns      CPU: target GEMM columns (state + tangent columns) per work unit
//   portable_gemm         CPU: plain loops instead of torch's BLAS and LAPACK (for tests)
//   cuda_path             CUDA: "auto", "fused" (error if it does not fit) or "stepwise"
//   cuda_max_checkpoints  CUDA: at most this many checkpoints per launch (0: as memory allows)
//   poison_outputs        CUDA: fill the outputs with NaN before running (tests check that
//                         every element is written)
//   cpu_path              CPU: "auto" (the fused step of csrc/cpu/fused_step.h where the CPU has
//                         AVX-512 and H fills a vector, else BLAS + pointwise), "fused" (the fused
//                         step with AVX-512 or AVX2; error where it cannot run), "fused_avx2" (its
//                         AVX2 code even on an AVX-512 CPU: for tests) or "gemm" (BLAS + pointwise);
//                         portable_gemm runs the portable loops whatever this says
//
// lstm_twin_run(x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0, zero_input_steps, warmup,
//               qr_every, *, cpu_tile_columns, portable_gemm, cpu_path)
//     -> (block_logs, h_T, c_T, dh_T, dc_T)
//   The twin run without cancellation (issue 11; Python: mdesc/core/_twin_ops.py, public API
//   mdesc/core/twin.py).  Everything as for tangent_run with LSTM cells, plus the difference to
//   a twin carried beside the state:
//   dh0, dc0 [C|1, L, B, H]  the twin's initial state minus the run's (h0 + dh0, c0 + dc0)
//   dh_T, dc_T [C, L, B, H]  the twin's final state minus the run's, computed as a difference
//                            (finite, not linearised; relative precision, no cancellation)
//   The tangent vectors follow the Jacobian of the unperturbed run (as in the tangent run); the
//   twin is the full nonlinear dynamics from the perturbed state.  Differences below the dtype's
//   smallest normal number are flushed to zero.  Tuning knobs: tangent_run's CPU ones.
//
// ensemble_rnn_forward(xproj, w_hh, b_hh, cell) -> (h_all, saved)
// ensemble_rnn_backward(dh_all, h_all, saved, w_hh, cell) -> (dxproj, dhproj)
//   The recurrent layer of E independent models at once (issue 24; Python:
//   mdesc/ensemble/recurrent.py and _op.py; per-unit math and the `saved` layout:
//   common/ensemble_math.h; CPU: csrc/cpu/ensemble.cpp).  State starts at zero.
//   xproj  [E, T, B, G*H]  W_ih x + b_ih (G gate blocks: lstm 4 i,f,g,o; gru 3 r,z,n; rnn 1)
//   w_hh   [E, G*H, H], b_hh [E, G*H]   PyTorch's weight_hh / bias_hh, stacked over models
//   h_all  [E, T, B, H]    the hidden state after every step
//   saved  [E, T, B, S*H]  what the backward needs (S: lstm 6, gru 4, rnn 0)
//   dh_all [E, T, B, H]    dL/dh_all;  dxproj = dL/dxproj,  dhproj = dL/d(W_hh h_{t-1} + b_hh)
//   (equal to dxproj except GRU's n block); the caller forms dW_hh and db_hh from dhproj.
//
// cpu_fused_lanes(elem_bytes) -> int: vector lanes of the fused CPU step on this CPU for 4- or
// 8-byte elements (0: none; layers need H >= lanes).
//
// counted_blocks(steps, warmup, qr_every) -> int: the counted blocks of a run of `steps` steps,
// the one rule of common/cell_math.h every backend sizes block_logs by (mdesc/core/schedule.py is
// Python's copy, tested against this one).
//
// cells() -> str[]: the cells' names in the order of common/cell_math.h's table (Cells), which
// mdesc/core/cells.py's CELLS must list.
#include <torch/library.h>

#include <string>
#include <vector>

#include "common/cell_math.h"
#include "cpu/fused_step.h"

namespace mdesc {
namespace {

int64_t counted_blocks_op(int64_t steps, int64_t warmup, int64_t qr_every) {
  TORCH_CHECK(steps >= 0 && warmup >= 0 && qr_every >= 1, "counted_blocks: need steps >= 0, warmup >= 0 and ",
              "qr_every >= 1, got ", steps, ", ", warmup, ", ", qr_every);
  return counted_blocks(steps, warmup, qr_every);
}

std::vector<std::string> cells_op() { return {std::begin(Cells::names), std::end(Cells::names)}; }

}  // namespace
}  // namespace mdesc

TORCH_LIBRARY(mdesc, m) {
  m.def(
      "tangent_run(Tensor x, Tensor lengths, Tensor[] w_ih, Tensor[] w_hh, Tensor[] bias, "
      "Tensor h0, Tensor c0, Tensor q0, int zero_input_steps, int warmup, int qr_every, *, "
      "str cell=\"lstm\", int cpu_tile_columns=48, bool portable_gemm=False, str cuda_path=\"auto\", "
      "int cuda_max_checkpoints=0, bool poison_outputs=False, str cpu_path=\"auto\") "
      "-> (Tensor block_logs, Tensor h_T, Tensor c_T)");
  m.def(
      "lstm_twin_run(Tensor x, Tensor lengths, Tensor[] w_ih, Tensor[] w_hh, Tensor[] bias, "
      "Tensor h0, Tensor c0, Tensor dh0, Tensor dc0, Tensor q0, int zero_input_steps, int warmup, "
      "int qr_every, *, int cpu_tile_columns=48, bool portable_gemm=False, str cpu_path=\"auto\") "
      "-> (Tensor block_logs, Tensor h_T, Tensor c_T, Tensor dh_T, Tensor dc_T)");
  m.def("ensemble_rnn_forward(Tensor xproj, Tensor w_hh, Tensor b_hh, str cell) -> (Tensor h_all, Tensor saved)");
  m.def(
      "ensemble_rnn_backward(Tensor dh_all, Tensor h_all, Tensor saved, Tensor w_hh, str cell) "
      "-> (Tensor dxproj, Tensor dhproj)");
  m.def("cpu_fused_lanes(int elem_bytes) -> int", &mdesc::cpu::fused_lanes);
  m.def("counted_blocks(int steps, int warmup, int qr_every) -> int", &mdesc::counted_blocks_op);
  m.def("cells() -> str[]", &mdesc::cells_op);
}

// `import mdesc._C` loads this library (and with it the registrations above); it defines no
// Python functions of its own: everything is reached through torch.ops.mdesc.*.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
