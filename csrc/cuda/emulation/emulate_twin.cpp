// CPU emulation of the CUDA implementation of mdesc::lstm_twin_run (csrc/cuda/twin_host.h and
// its kernels, compiled unchanged with the shim of cuda_shim.h: one OS thread per CUDA thread),
// for tests on machines without a GPU.  Built on demand by tests/test_twin.py with
// torch.utils.cpp_extension.load; not part of the mdesc extension.
#include <torch/extension.h>

#include "cuda/emulation/cuda_shim.h"
#include "cuda/twin_host.h"

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#endif

namespace mdesc::cuda_impl {
namespace {

struct EmuLaunch {
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem_bytes,
                  const Args&... args) const {
    static unsigned char smem[1];
    // Flush denormals like the CPU kernel (and the GPU for float32 under --use_fast_math); the
    // emulated threads inherit the calling thread's floating-point environment.
#if defined(__x86_64__) || defined(__SSE__)
    const unsigned saved = _mm_getcsr();
    _mm_setcsr(saved | 0x8040u);
#endif
    emu_launch(kernel, grid_x, grid_y, threads, smem, sizeof(smem), smem_bytes, args...);
#if defined(__x86_64__) || defined(__SSE__)
    _mm_setcsr(saved);
#endif
  }
};

// Same contract as torch.ops.mdesc.lstm_twin_run; `sms` bounds the pointwise grid (1 exercises
// the grid-stride loop).  Outputs start as NaN, so an element nobody writes shows.
std::vector<at::Tensor> emulate_twin(const at::Tensor& x, const at::Tensor& lengths, std::vector<at::Tensor> w_ih,
                                     std::vector<at::Tensor> w_hh, std::vector<at::Tensor> bias, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& dh0, const at::Tensor& dc0,
                                     const at::Tensor& q0, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
                                     int64_t max_ckpt, int64_t sms) {
  const twin::TwinDims d = twin::check_twin_inputs(x, lengths, w_ih, w_hh, bias, h0, c0, dh0, dc0, q0,
                                                   zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x.device().is_cpu(), "emulate_twin: CPU tensors only");
  twin::check_twin_lengths(d, lengths.contiguous().data_ptr<int64_t>());
  TwinTensors t;
  t.x = x.contiguous();
  t.lengths = lengths.contiguous();
  for (int64_t l = 0; l < d.L; ++l) {
    t.w_ih.push_back(w_ih[l].contiguous());
    t.w_hh.push_back(w_hh[l].contiguous());
    t.bias.push_back(bias[l].contiguous());
  }
  t.h0 = h0.contiguous();
  t.c0 = c0.contiguous();
  t.dh0 = dh0.contiguous();
  t.dc0 = dc0.contiguous();
  t.q0 = q0.contiguous();
  const double nan = std::numeric_limits<double>::quiet_NaN();
  t.logs = at::zeros({d.C, d.B, d.nblocks, d.k}, x.options().dtype(at::kDouble));
  for (at::Tensor* o : {&t.hT, &t.cT, &t.dhT, &t.dcT}) *o = at::full({d.C, d.L, d.B, d.H}, nan, x.options());
  const int64_t cc = max_ckpt > 0 ? std::min(max_ckpt, d.C) : d.C;
  for (int64_t c = 0; c < d.C; c += cc) {
    run_twin_stepwise(d, t, c, std::min(cc, d.C - c), static_cast<int>(sms), EmuLaunch{});
  }
  return {t.logs, t.hT, t.cT, t.dhT, t.dcT};
}

}  // namespace
}  // namespace mdesc::cuda_impl

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("emulate_twin", &mdesc::cuda_impl::emulate_twin, "CPU emulation of the CUDA lstm_twin_run (tests only)");
}
