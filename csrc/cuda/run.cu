// CUDA implementation of mdesc::tangent_run and mdesc::lstm_twin_run (schemas and shapes:
// csrc/mdesc.cpp; the CPU kernel csrc/cpu/run.cpp defines the semantics this must reproduce; the
// cells: csrc/common/cell_math.h, the twin's math: csrc/common/twin_math.h).
//
// This file (the only CUDA translation unit) validates the inputs, allocates the outputs, splits
// the checkpoints into launches that bound the memory of the layer-0 input projection, picks one
// of the two paths of run_host.h and launches its kernels on the current stream:
//
//   fused     all S steps in one kernel; weights, states, tangent frames and the Gram-Schmidt
//             in shared memory.  Used whenever one checkpoint's weights plus a one-sequence tile
//             fit in a block's opt-in shared memory (H100, k = 1: one layer up to H = 116 in
//             float32 / 80 in float64, two layers up to 67 / 47, three up to 52 / 36).
//   stepwise  per step cuBLAS batched GEMMs + one fused pointwise kernel per layer; any size.
//             The twin always runs this path, with its delta column beside the state.
//   (float32 is compiled with --use_fast_math, which flushes denormals to zero as the CPU kernel
//   does for the twin.)
//
// Tuning arguments of the op (no environment variables; defaults in csrc/mdesc.cpp):
//   cuda_path = auto|fused|stepwise    force a path (fused errors if it does not fit)
//   cuda_max_checkpoints = n           at most n checkpoints per launch (0: as memory allows)
//   poison_outputs = true              fill the outputs with NaN before running, so a test can
//                                      see that every element is written
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <string>

#include <cuda_pipeline.h>

#include "common/run_checks.h"
#include "cuda/run_host.h"

namespace mdesc::cuda_impl {
namespace {

DeviceLimits current_device_limits() {
  const int dev = c10::cuda::current_device();
  auto attr = [dev](cudaDeviceAttr a) {
    int v = 0;
    C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, a, dev));
    return v;
  };
  DeviceLimits d;
  d.sms = attr(cudaDevAttrMultiProcessorCount);
  d.smem_block_optin = static_cast<size_t>(attr(cudaDevAttrMaxSharedMemoryPerBlockOptin));
  d.smem_per_sm = static_cast<size_t>(attr(cudaDevAttrMaxSharedMemoryPerMultiprocessor));
  d.smem_reserved = static_cast<size_t>(attr(cudaDevAttrReservedSharedMemoryPerBlock));
  d.max_threads_per_sm = attr(cudaDevAttrMaxThreadsPerMultiProcessor);
  return d;
}

// Launches a kernel on the current stream (the launcher of run_host.h).
struct CudaLaunch {
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem,
                  const Args&... args) const {
    if (smem > 0) {
      C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
    }
    kernel<<<dim3(grid_x, grid_y), threads, smem, c10::cuda::getCurrentCUDAStream().stream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

// Checkpoints per launch: the scratch memory of one launch (mostly the layer-0 projection, T*B*4H
// per checkpoint) is kept under a quarter of the free device memory, at most 4 GiB.
int64_t checkpoints_per_launch(const RunDims& d, int64_t bytes_per_ckpt, int64_t max_checkpoints) {
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t budget = std::clamp<int64_t>(static_cast<int64_t>(free_bytes / 4), int64_t(64) << 20,
                                             int64_t(4) << 30);
  int64_t cc = std::max<int64_t>(1, budget / std::max<int64_t>(1, bytes_per_ckpt));
  cc = std::min<int64_t>({cc, d.C, 65535});  // 65535: grid y limit
  if (max_checkpoints > 0) cc = std::min<int64_t>(cc, max_checkpoints);
  return cc;
}

// Checks one call's inputs on the device and returns them contiguous with the outputs allocated.
RunTensors prepare_cuda(const RunInputs& in, const RunDims& d, bool poison_outputs) {
  TORCH_CHECK(in.x.is_cuda(), in.op, " (CUDA): tensors must be on a CUDA device, x is on ", in.x.device());
  // Lengths are checked on the host (one small copy), then used on the device.
  const at::Tensor len_host = in.lengths.to(at::kCPU).contiguous();
  check_lengths(in.op, d, len_host.data_ptr<int64_t>());
  TORCH_CHECK(d.C <= std::numeric_limits<int>::max() && d.B <= std::numeric_limits<int>::max() &&
                  d.T <= std::numeric_limits<int>::max(),
              in.op, " (CUDA): C, B and T must each be below 2^31");
  return contiguous_tensors(in, d, in.lengths.to(in.x.device()), poison_outputs);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tangent_run_cuda(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& q0_in,
    int64_t zero_input_steps, int64_t warmup, int64_t qr_every, c10::string_view cell,
    int64_t /*cpu_tile_columns*/, bool /*portable_gemm*/, c10::string_view cuda_path,
    int64_t cuda_max_checkpoints, bool poison_outputs, c10::string_view /*cpu_path*/) {
  const RunInputs in{"tangent_run", std::string(cell), x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in, q0_in};
  const RunDims d = check_run_inputs(in, zero_input_steps, warmup, qr_every);
  TORCH_CHECK(cuda_max_checkpoints >= 0, "tangent_run: cuda_max_checkpoints must be >= 0, got ",
              cuda_max_checkpoints);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const RunTensors t = prepare_cuda(in, d, poison_outputs);

  const std::string path(cuda_path);
  TORCH_CHECK(path == "auto" || path == "fused" || path == "stepwise",
              "tangent_run (CUDA): cuda_path must be auto, fused or stepwise, got '", path, "'");
  const size_t elem = t.x.element_size();

  bool fused = path != "stepwise";
  int64_t cc = checkpoints_per_launch(
      d, fused ? fused_bytes_per_checkpoint(d, elem) : stepwise_bytes_per_checkpoint(d, elem), cuda_max_checkpoints);
  const DeviceLimits dev = current_device_limits();
  FusedConfig cfg;
  if (fused) {
    cfg = choose_fused_config(d, cc, elem, dev);
    if (cfg.BT == 0) {
      TORCH_CHECK(path != "fused", "tangent_run (CUDA): cuda_path='fused' but the weights of one ",
                  "checkpoint (L = ", d.L, ", H = ", d.H, ", ", t.x.scalar_type(), ") and one sequence with k = ",
                  d.k, " need ", fused_smem_bytes(d, 1, 4, elem), " bytes of shared memory, more than this ",
                  "device's per-block limit; use cuda_path='auto' or 'stepwise'");
      fused = false;
      cc = checkpoints_per_launch(d, stepwise_bytes_per_checkpoint(d, elem), cuda_max_checkpoints);
    }
  }
  const at::Tensor wpack = fused ? pack_fused_weights(d, t) : at::Tensor();
  dispatch_cell(d.cell, [&](auto c) {
    using Cell = decltype(c);
    for (int64_t c0 = 0; c0 < d.C; c0 += cc) {
      const int64_t n = std::min(cc, d.C - c0);
      if (fused) {
        run_fused<Cell>(d, t, wpack, cfg, c0, n, CudaLaunch{});
      } else {
        run_stepwise<Cell, false>(d, t, c0, n, dev, CudaLaunch{});
      }
    }
  });
  return {t.logs, t.hT, t.cT};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_twin_run_cuda(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& dh0_in,
    const at::Tensor& dc0_in, const at::Tensor& q0_in, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
    int64_t /*cpu_tile_columns*/, bool /*portable_gemm*/, c10::string_view /*cpu_path*/) {
  const RunInputs in{"lstm_twin_run", LstmCell::kName, x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in, q0_in,
                     &dh0_in, &dc0_in};
  const RunDims d = check_run_inputs(in, zero_input_steps, warmup, qr_every);
  const c10::cuda::CUDAGuard guard(x_in.device());
  const RunTensors t = prepare_cuda(in, d, false);
  const int64_t cc =
      checkpoints_per_launch(d, stepwise_bytes_per_checkpoint(d, t.x.element_size(), /*twin=*/true), 0);
  const DeviceLimits dev = current_device_limits();
  for (int64_t c0 = 0; c0 < d.C; c0 += cc) {
    run_stepwise<LstmCell, true>(d, t, c0, std::min(cc, d.C - c0), dev, CudaLaunch{});
  }
  return {t.logs, t.hT, t.cT, t.dhT, t.dcT};
}

}  // namespace
}  // namespace mdesc::cuda_impl

TORCH_LIBRARY_IMPL(mdesc, CUDA, m) {
  m.impl("tangent_run", &mdesc::cuda_impl::tangent_run_cuda);
  m.impl("lstm_twin_run", &mdesc::cuda_impl::lstm_twin_run_cuda);
}
