// CUDA implementation of mdesc::ensemble_rnn_forward and mdesc::ensemble_rnn_backward, the
// recurrent layer of E models at once (schemas: csrc/mdesc.cpp; the CPU op defines the semantics
// this reproduces; the Python side: mdesc/ensemble/recurrent.py and _op.py).
//
// This file validates the inputs, picks the cell and launches ensemble_host.h's loop on the
// current stream: per step one cuBLAS strided-batched GEMM over the E models and one pointwise
// kernel (ensemble_kernels.cuh).  float32 is compiled with --use_fast_math (setup.py), as the
// Lyapunov kernels are.
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <string>
#include <tuple>

#include "cuda/ensemble_host.h"

namespace mdesc::cuda_impl {
namespace {

// Launches a kernel on the current stream (the launcher of ensemble_host.h; no shared memory).
struct EnsembleLaunch {
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem,
                  const Args&... args) const {
    kernel<<<dim3(grid_x, grid_y), threads, smem, c10::cuda::getCurrentCUDAStream().stream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

int multiprocessors() {
  int v = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&v, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return v;
}

void check_on_cuda(const char* op, const at::Tensor& first) {
  TORCH_CHECK(first.is_cuda(), op, " (CUDA): tensors must be on a CUDA device, the first is on ", first.device());
}

std::tuple<at::Tensor, at::Tensor> ensemble_rnn_forward_cuda(const at::Tensor& xproj, const at::Tensor& w_hh,
                                                             const at::Tensor& b_hh, c10::string_view cell) {
  constexpr const char* op = "ensemble_rnn_forward";
  check_on_cuda(op, xproj);
  const c10::cuda::CUDAGuard guard(xproj.device());
  std::tuple<at::Tensor, at::Tensor> out;
  dispatch_ensemble_cell(op, std::string(cell), [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    const EnsembleDims d = check_ensemble_forward<Cell>(op, xproj, w_hh, b_hh);
    out = ensemble_forward<Cell>(d, xproj, w_hh, b_hh, multiprocessors(), /*poison=*/false, EnsembleLaunch{});
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> ensemble_rnn_backward_cuda(const at::Tensor& dh_all, const at::Tensor& h_all,
                                                              const at::Tensor& saved, const at::Tensor& w_hh,
                                                              c10::string_view cell) {
  constexpr const char* op = "ensemble_rnn_backward";
  check_on_cuda(op, h_all);
  const c10::cuda::CUDAGuard guard(h_all.device());
  std::tuple<at::Tensor, at::Tensor> out;
  dispatch_ensemble_cell(op, std::string(cell), [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    const EnsembleDims d = check_ensemble_backward<Cell>(op, dh_all, h_all, saved, w_hh);
    out = ensemble_backward<Cell>(d, dh_all, h_all, saved, w_hh, multiprocessors(), /*poison=*/false,
                                  EnsembleLaunch{});
  });
  return out;
}

}  // namespace
}  // namespace mdesc::cuda_impl

TORCH_LIBRARY_IMPL(mdesc, CUDA, m) {
  m.impl("ensemble_rnn_forward", &mdesc::cuda_impl::ensemble_rnn_forward_cuda);
  m.impl("ensemble_rnn_backward", &mdesc::cuda_impl::ensemble_rnn_backward_cuda);
}
