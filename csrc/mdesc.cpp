// Operator schemas of the mdesc extension, and nothing else.
//
// Each backend registers its implementation in its own folder:
//   csrc/cpu/   TORCH_LIBRARY_IMPL(mdesc, CPU, m)
//   csrc/cuda/  TORCH_LIBRARY_IMPL(mdesc, CUDA, m)
//
// Shapes (C checkpoints, T driven steps, B sequences, L layers, H hidden, I input, n = 2*H*L,
// k tangent vectors; "C|1" means either C or 1, broadcast over checkpoints):
//
// lstm_tangent_run(x, lengths, w_ih, w_hh, bias, h0, c0, q0,
//                  zero_input_steps, warmup, qr_every) -> (block_logs, h_T, c_T)
//   x        [C|1, T, B, I]  input sequences (float32 or float64; all tensors share the dtype)
//   lengths  [B] int64       driven length of each sequence, 1 <= lengths[b] <= T; after it the
//                            sequence receives zero input
//   w_ih[l]  [C, 4H, I_l]    input weights of layer l (I_0 = I, I_l = H), gates i, f, g, o
//   w_hh[l]  [C, 4H, H]      recurrent weights of layer l
//   bias[l]  [C, 4H]         b_ih + b_hh of layer l (zeros for bias=False)
//   h0, c0   [C|1, L, B, H]  initial state
//   q0       [C|1, B|1, n, k] initial tangent frame, rows ordered [h_1, c_1, ..., h_L, c_L];
//                            k = 0 runs the forward pass only
//   Every sequence runs S = T + zero_input_steps steps.  The frame is re-orthonormalised every
//   qr_every steps (counted from step 0 during warm-up, from `warmup` afterwards), at the end of
//   warm-up, and after the last step.  Steps >= warmup are counted in blocks of qr_every
//   (the last block may be shorter).
//   block_logs [C, B, nblocks, k] float64: sum of log R_ii over each counted block
//   h_T, c_T   [C, L, B, H]      state after the last step
#include <torch/library.h>

TORCH_LIBRARY(mdesc, m) {
  m.def(
      "lstm_tangent_run(Tensor x, Tensor lengths, Tensor[] w_ih, Tensor[] w_hh, Tensor[] bias, "
      "Tensor h0, Tensor c0, Tensor q0, int zero_input_steps, int warmup, int qr_every) "
      "-> (Tensor block_logs, Tensor h_T, Tensor c_T)");
}

// `import mdesc._C` loads this library (and with it the registrations above); it defines no
// Python functions of its own: everything is reached through torch.ops.mdesc.*.
#include <Python.h>

extern "C" PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module_def);
}
