// Operator schema of the twin run without cancellation (issue 11, part 1), and nothing else.
// (A fragment of the mdesc library, beside csrc/mdesc.cpp, so it can evolve on its own.)
// Implementations: csrc/cpu/twin_run.cpp (CPU), csrc/cuda/twin_run.cu (CUDA); math in
// csrc/common/twin_math.h; Python wrapper mdesc/core/_twin_ops.py, public API mdesc/core/twin.py.
//
// lstm_twin_run(x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0, zero_input_steps, warmup,
//               qr_every, *, cpu_tile_columns, portable_gemm, cpu_path)
//     -> (block_logs, h_T, c_T, dh_T, dc_T)
//   Everything as for the tangent run of csrc/mdesc.cpp (LSTM cells: x [C|1, T, B, I], lengths
//   [B], w_ih[l] [C, 4H, I_l], w_hh[l] [C, 4H, H], bias[l] [C, 4H], h0, c0 [C|1, L, B, H], q0
//   [C|1, B|1, n = 2HL, k] with k >= 0 tangent vectors, the same re-orthonormalisation schedule
//   and block_logs [C, B, nblocks, k]), plus the difference to a twin carried beside the state:
//   dh0, dc0 [C|1, L, B, H]  the twin's initial state minus the run's (h0 + dh0, c0 + dc0)
//   dh_T, dc_T [C, L, B, H]  the twin's final state minus the run's, computed as a difference
//                            (finite, not linearised; relative precision, no cancellation)
//   The tangent vectors follow the Jacobian of the unperturbed run (as in the tangent run); the
//   twin is the full nonlinear dynamics from the perturbed state.  Differences below the dtype's
//   smallest normal number are flushed to zero.
//   cpu_tile_columns (CPU): target GEMM columns per work unit; cpu_path (CPU): as tangent_run's
//   ("auto": the fused step with AVX-512; "fused", "fused_avx2", "gemm"); portable_gemm (CPU): plain loops
//   instead of torch's BLAS (tests).  Results do not depend on either beyond rounding.
#include <torch/library.h>

TORCH_LIBRARY_FRAGMENT(mdesc, m) {
  m.def(
      "lstm_twin_run(Tensor x, Tensor lengths, Tensor[] w_ih, Tensor[] w_hh, Tensor[] bias, "
      "Tensor h0, Tensor c0, Tensor dh0, Tensor dc0, Tensor q0, int zero_input_steps, int warmup, "
      "int qr_every, *, int cpu_tile_columns=48, bool portable_gemm=False, str cpu_path=\"auto\") "
      "-> (Tensor block_logs, Tensor h_T, Tensor c_T, Tensor dh_T, Tensor dc_T)");
}
