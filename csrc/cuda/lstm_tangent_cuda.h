// Host-side interface between the CUDA entry point (lstm_tangent_run.cu) and the two paths:
//
//   fused     (lstm_tangent_fused.cu)     one launch runs every step; weights in shared memory
//   stepwise  (lstm_tangent_stepwise.cu)  per step: cuBLAS batched GEMMs + one fused pointwise
//                                         kernel per layer (+ a QR kernel every qr_every steps)
//
// Both receive contiguous CUDA tensors that have passed check_run_inputs (csrc/run_checks.h) and
// write into preallocated outputs.  They process checkpoints [c_begin, c_begin + cc) so the
// entry point can bound the memory of the layer-0 input projection.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "run_checks.h"

namespace mdesc::cuda_impl {

struct RunTensors {
  at::Tensor x;                 // [C|1, T, B, I]
  at::Tensor lengths;           // [B] int64, on the device, each in [1, T]
  std::vector<at::Tensor> w_ih; // per layer [C, 4H, I_l]
  std::vector<at::Tensor> w_hh; // per layer [C, 4H, H]
  std::vector<at::Tensor> bias; // per layer [C, 4H]
  at::Tensor h0, c0;            // [C|1, L, B, H]
  at::Tensor q0;                // [C|1, B|1, n, k]
  at::Tensor logs;              // out: [C, B, nblocks, k] float64
  at::Tensor hT, cT;            // out: [C, L, B, H]
};

// Geometry of one fused launch: BT sequences per thread block, tangent columns processed GC at a
// time, shared memory per block.
struct FusedConfig {
  int BT = 0;
  int GC = 0;
  size_t smem = 0;
};

// Shared memory the fused kernel needs for these sizes (bytes), see the layout in
// lstm_tangent_fused.cu.
size_t fused_smem_bytes(const RunDims& d, int BT, int GC, size_t elem);

// Picks BT and GC for the fused path, or returns BT = 0 if even BT = 1 does not fit in the
// device's opt-in shared memory per block.  cc = checkpoints in one launch.
FusedConfig choose_fused_config(const RunDims& d, int64_t cc, size_t elem);

// Packed per-checkpoint weights for the fused kernel, [C, nW] (see lstm_tangent_fused.cu).
at::Tensor pack_fused_weights(const RunDims& d, const RunTensors& t);

void run_fused(const RunDims& d, const RunTensors& t, const at::Tensor& wpack, const FusedConfig& cfg,
               int64_t c_begin, int64_t cc);

void run_stepwise(const RunDims& d, const RunTensors& t, int64_t c_begin, int64_t cc);

// Bytes of device memory one checkpoint needs beyond the inputs and outputs.
int64_t fused_bytes_per_checkpoint(const RunDims& d, size_t elem);
int64_t stepwise_bytes_per_checkpoint(const RunDims& d, size_t elem);

}  // namespace mdesc::cuda_impl
