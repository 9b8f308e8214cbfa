// CPU emulation of the CUDA implementation of mdesc::tangent_run, mdesc::lstm_twin_run and the
// ensemble recurrence (mdesc::ensemble_rnn_forward / _backward), for tests on machines without a
// GPU.  The kernels (fused_kernel.cuh, pointwise.cuh, qr.cuh, gemm.cuh, ensemble_kernels.cuh), the
// cells (common/cell_math.h, common/twin_math.h, the ensemble's per-unit math) and the host
// orchestration (run_host.h, ensemble_host.h) are compiled unchanged; only the launcher differs:
// each kernel launch runs through emu_launch (cuda_shim.h), one OS thread per CUDA thread.  Built on demand by tests/emulation.py
// with torch.utils.cpp_extension.load; not part of the mdesc extension.
#include <torch/extension.h>

#include "cuda/emulation/cuda_shim.h"
#include "common/run_checks.h"
#include "cuda/ensemble_host.h"
#include "cuda/run_host.h"

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#define MDESC_EMU_HAVE_MXCSR 1
#endif

namespace mdesc::cuda_impl {

// The array every kernel's `extern __shared__ unsigned char smem[]` refers to (one block at a time).
constexpr size_t kSmemCapacity = size_t(1) << 20;
alignas(16) unsigned char smem[kSmemCapacity];

namespace {

struct EmuLaunch {
  unsigned threads_override = 0;  // 0: the thread count the host code asks for
  // Flush denormals, as the CPU kernel does for the twin (and the GPU for float32 under
  // --use_fast_math); the emulated threads inherit the calling thread's floating-point environment.
  bool flush_denormals = false;
  template <typename... KArgs, typename... Args>
  void operator()(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads, size_t smem_bytes,
                  const Args&... args) const {
#ifdef MDESC_EMU_HAVE_MXCSR
    const unsigned saved = _mm_getcsr();
    if (flush_denormals) _mm_setcsr(saved | 0x8040u);
#endif
    emu_launch(kernel, grid_x, grid_y, threads_override ? threads_override : threads, smem, kSmemCapacity,
               smem_bytes, args...);
#ifdef MDESC_EMU_HAVE_MXCSR
    _mm_setcsr(saved);
#endif
  }
};

// Limits of an H100 SXM, so choose_fused_config picks what it would pick there.
DeviceLimits h100_limits() {
  DeviceLimits d;
  d.sms = 132;
  d.smem_block_optin = 232448;
  d.smem_per_sm = 233472;
  d.smem_reserved = 1024;
  d.max_threads_per_sm = 2048;
  return d;
}

// Same contract as torch.ops.mdesc.tangent_run (cell as a positional argument), plus:
//   path           "fused" or "stepwise"
//   bt, gc         fused tile geometry (0: what choose_fused_config picks for an H100)
//   max_ckpt       checkpoints per launch (0: all)
//   threads        threads per block (0: what the host code asks for)
// Returns (block_logs, h_T, c_T, [BT, GC]) with the outputs first filled with NaN.
std::vector<at::Tensor> emulate(const at::Tensor& x, const at::Tensor& lengths, std::vector<at::Tensor> w_ih,
                                std::vector<at::Tensor> w_hh, std::vector<at::Tensor> bias, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& q0, int64_t zero_input_steps, int64_t warmup,
                                int64_t qr_every, const std::string& cell, const std::string& path, int64_t bt, int64_t gc,
                                int64_t max_ckpt, int64_t threads) {
  const RunInputs in{"tangent_run", cell, x, lengths, w_ih, w_hh, bias, h0, c0, q0};
  const RunDims d = check_run_inputs(in, zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x.device().is_cpu(), "emulate: CPU tensors only");
  check_lengths(in.op, d, lengths.contiguous().data_ptr<int64_t>());
  const RunTensors t = contiguous_tensors(in, d, lengths, /*poison=*/true);
  const int64_t cc = max_ckpt > 0 ? std::min(max_ckpt, d.C) : d.C;
  const EmuLaunch launch{static_cast<unsigned>(threads)};
  FusedConfig cfg;
  if (path == "fused") {
    cfg = choose_fused_config(d, cc, t.x.element_size(), h100_limits());
    if (bt > 0) {
      cfg.BT = static_cast<int>(bt);
      cfg.GC = static_cast<int>(gc > 0 ? gc : std::max<int64_t>(1, std::min<int64_t>(bt * d.k, 64)));
    }
    TORCH_CHECK(cfg.BT > 0, "emulate: the fused path does not fit an H100 for these sizes");
    const at::Tensor wpack = pack_fused_weights(d, t);
    dispatch_cell(d.cell, [&](auto cell_tag) {
      using Cell = decltype(cell_tag);
      for (int64_t c = 0; c < d.C; c += cc) run_fused<Cell>(d, t, wpack, cfg, c, std::min(cc, d.C - c), launch);
    });
  } else {
    TORCH_CHECK(path == "stepwise", "emulate: path must be fused or stepwise, got ", path);
    DeviceLimits dev = h100_limits();
    dev.sms = 1;  // few pointwise blocks, so the grid-stride loop is exercised
    dispatch_cell(d.cell, [&](auto cell_tag) {
      using Cell = decltype(cell_tag);
      for (int64_t c = 0; c < d.C; c += cc) run_stepwise<Cell, false>(d, t, c, std::min(cc, d.C - c), dev, launch);
    });
  }
  return {t.logs, t.hT, t.cT, at::tensor(std::vector<int64_t>{cfg.BT, cfg.GC})};
}

// Same contract as torch.ops.mdesc.lstm_twin_run; `sms` bounds the pointwise grid (1 exercises
// the grid-stride loop).  Outputs start as NaN (block_logs as zeros, as on the GPU), so an
// element nobody writes shows.
std::vector<at::Tensor> emulate_twin(const at::Tensor& x, const at::Tensor& lengths, std::vector<at::Tensor> w_ih,
                                     std::vector<at::Tensor> w_hh, std::vector<at::Tensor> bias, const at::Tensor& h0,
                                     const at::Tensor& c0, const at::Tensor& dh0, const at::Tensor& dc0,
                                     const at::Tensor& q0, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
                                     int64_t max_ckpt, int64_t sms) {
  const RunInputs in{"lstm_twin_run", LstmCell::kName, x, lengths, w_ih, w_hh, bias, h0, c0, q0, &dh0, &dc0};
  const RunDims d = check_run_inputs(in, zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x.device().is_cpu(), "emulate_twin: CPU tensors only");
  check_lengths(in.op, d, lengths.contiguous().data_ptr<int64_t>());
  RunTensors t = contiguous_tensors(in, d, lengths, /*poison=*/true);
  t.logs.zero_();
  DeviceLimits dev = h100_limits();
  dev.sms = static_cast<int>(sms);
  const EmuLaunch launch{0, /*flush_denormals=*/true};
  const int64_t cc = max_ckpt > 0 ? std::min(max_ckpt, d.C) : d.C;
  for (int64_t c = 0; c < d.C; c += cc) run_stepwise<LstmCell, true>(d, t, c, std::min(cc, d.C - c), dev, launch);
  return {t.logs, t.hT, t.cT, t.dhT, t.dcT};
}

// What choose_fused_config picks on an H100 for these sizes: [BT, GC, shared bytes per block]
// (BT = 0: the stepwise path).
std::vector<int64_t> h100_fused_config(int64_t C, int64_t B, int64_t L, int64_t H, int64_t k, int64_t elem,
                                       const std::string& cell) {
  RunDims d{};
  d.cell = parse_cell("h100_fused_config", cell);
  d.G = cell_gates(d.cell) * H;
  d.halves = cell_halves(d.cell);
  d.C = C;
  d.B = B;
  d.L = L;
  d.H = H;
  d.k = k;
  d.n = d.halves * H * L;
  const FusedConfig cfg = choose_fused_config(d, C, static_cast<size_t>(elem), h100_limits());
  return {cfg.BT, cfg.GC, static_cast<int64_t>(cfg.smem)};
}

// Same contract as torch.ops.mdesc.ensemble_rnn_forward, on CPU tensors, plus `threads` per
// block (0: what the host code asks for) and `sms` (bounds the grid; 1 exercises the kernels'
// grid-stride loop).  Outputs start as NaN, so an element nobody writes shows.
std::vector<at::Tensor> emulate_ensemble_forward(const at::Tensor& xproj, const at::Tensor& w_hh,
                                                 const at::Tensor& b_hh, const std::string& cell, int64_t threads,
                                                 int64_t sms) {
  constexpr const char* op = "emulate_ensemble_forward";
  TORCH_CHECK(xproj.device().is_cpu(), op, ": CPU tensors only");
  std::tuple<at::Tensor, at::Tensor> out;
  dispatch_ensemble_cell(op, cell, [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    const EnsembleDims d = check_ensemble_forward<Cell>(op, xproj, w_hh, b_hh);
    out = ensemble_forward<Cell>(d, xproj, w_hh, b_hh, static_cast<int>(sms), /*poison=*/true,
                                 EmuLaunch{static_cast<unsigned>(threads)});
  });
  return {std::get<0>(out), std::get<1>(out)};
}

// Same contract as torch.ops.mdesc.ensemble_rnn_backward; threads, sms as above.
std::vector<at::Tensor> emulate_ensemble_backward(const at::Tensor& dh_all, const at::Tensor& h_all,
                                                  const at::Tensor& saved, const at::Tensor& w_hh,
                                                  const std::string& cell, int64_t threads, int64_t sms) {
  constexpr const char* op = "emulate_ensemble_backward";
  TORCH_CHECK(h_all.device().is_cpu(), op, ": CPU tensors only");
  std::tuple<at::Tensor, at::Tensor> out;
  dispatch_ensemble_cell(op, cell, [&](auto cell_tag) {
    using Cell = decltype(cell_tag);
    const EnsembleDims d = check_ensemble_backward<Cell>(op, dh_all, h_all, saved, w_hh);
    out = ensemble_backward<Cell>(d, dh_all, h_all, saved, w_hh, static_cast<int>(sms), /*poison=*/true,
                                  EmuLaunch{static_cast<unsigned>(threads)});
  });
  return {std::get<0>(out), std::get<1>(out)};
}

}  // namespace
}  // namespace mdesc::cuda_impl

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("emulate", &mdesc::cuda_impl::emulate, "CPU emulation of the CUDA tangent_run (tests only)");
  m.def("h100_fused_config", &mdesc::cuda_impl::h100_fused_config,
        "[BT, GC, shared bytes] the fused path would use on an H100 (BT = 0: stepwise path)");
  m.def("emulate_twin", &mdesc::cuda_impl::emulate_twin, "CPU emulation of the CUDA lstm_twin_run (tests only)");
  m.def("emulate_ensemble_forward", &mdesc::cuda_impl::emulate_ensemble_forward,
        "CPU emulation of the CUDA ensemble_rnn_forward (tests only)");
  m.def("emulate_ensemble_backward", &mdesc::cuda_impl::emulate_ensemble_backward,
        "CPU emulation of the CUDA ensemble_rnn_backward (tests only)");
}
