// CUDA implementation of mdesc::lstm_twin_run (schema and shapes: csrc/mdesc_twin.cpp; the CPU
// kernel csrc/cpu/twin_run.cpp defines the semantics; math csrc/common/twin_math.h).  Validates
// the inputs, allocates the outputs, splits the checkpoints into launches that bound the memory
// of the layer-0 input projection, and runs the stepwise path of twin_host.h on the current
// stream.  (float32 is compiled with --use_fast_math, which flushes denormals to zero like the
// CPU kernel does.)
#include <ATen/ATen.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>

#include "cuda/twin_host.h"

namespace mdesc::cuda_impl {
namespace {

struct TwinCudaLaunch {
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem,
                  const Args&... args) const {
    kernel<<<dim3(grid_x, grid_y), threads, smem, c10::cuda::getCurrentCUDAStream().stream()>>>(args...);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_twin_run_cuda(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& dh0_in,
    const at::Tensor& dc0_in, const at::Tensor& q0_in, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
    int64_t /*cpu_tile_columns*/, bool /*portable_gemm*/, c10::string_view /*cpu_path*/) {
  const twin::TwinDims d = twin::check_twin_inputs(x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in, dh0_in, dc0_in,
                                                   q0_in, zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x_in.is_cuda(), "lstm_twin_run (CUDA): tensors must be on a CUDA device, x is on ", x_in.device());
  const c10::cuda::CUDAGuard guard(x_in.device());
  const at::Tensor len_host = lengths_in.to(at::kCPU).contiguous();
  twin::check_twin_lengths(d, len_host.data_ptr<int64_t>());
  TORCH_CHECK(d.C <= 65535 * 1024LL && d.B <= std::numeric_limits<int>::max(),
              "lstm_twin_run (CUDA): C and B too large");
  TwinTensors t;
  t.x = x_in.contiguous();
  t.lengths = lengths_in.to(x_in.device()).contiguous();
  for (int64_t l = 0; l < d.L; ++l) {
    t.w_ih.push_back(w_ih[l].contiguous());
    t.w_hh.push_back(w_hh[l].contiguous());
    t.bias.push_back(bias[l].contiguous());
  }
  t.h0 = h0_in.contiguous();
  t.c0 = c0_in.contiguous();
  t.dh0 = dh0_in.contiguous();
  t.dc0 = dc0_in.contiguous();
  t.q0 = q0_in.contiguous();
  const auto opts = x_in.options();
  t.logs = at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble));
  for (at::Tensor* o : {&t.hT, &t.cT, &t.dhT, &t.dcT}) *o = at::empty({d.C, d.L, d.B, d.H}, opts);

  // Scratch per checkpoint: projection [4H, T B] + G [4H, N] + Z, Cm [L, H, N]; a quarter of the
  // free memory at most.
  const int64_t N = d.B * (2 + d.k);
  const int64_t per_ckpt = (4 * d.H * d.T * d.B + 4 * d.H * N + 2 * d.L * d.H * N) * t.x.element_size();
  size_t free_bytes = 0, total_bytes = 0;
  C10_CUDA_CHECK(cudaMemGetInfo(&free_bytes, &total_bytes));
  const int64_t budget = std::max<int64_t>(int64_t(64) << 20, static_cast<int64_t>(free_bytes / 4));
  const int64_t cc = std::clamp<int64_t>(budget / std::max<int64_t>(1, per_ckpt), 1, std::min<int64_t>(d.C, 65535));
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  for (int64_t c0 = 0; c0 < d.C; c0 += cc) run_twin_stepwise(d, t, c0, std::min(cc, d.C - c0), sms, TwinCudaLaunch{});
  return {t.logs, t.hT, t.cT, t.dhT, t.dcT};
}

}  // namespace
}  // namespace mdesc::cuda_impl

TORCH_LIBRARY_IMPL(mdesc, CUDA, m) { m.impl("lstm_twin_run", &mdesc::cuda_impl::lstm_twin_run_cuda); }
