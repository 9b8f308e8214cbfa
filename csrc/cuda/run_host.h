// Host-side orchestration of the CUDA paths of mdesc::tangent_run and mdesc::lstm_twin_run,
// written once and parameterised by a launcher so the same code drives the GPU (run.cu) and the
// CPU emulation used by the tests (emulation/emulate.cpp):
//
//   fused     all S steps in one kernel (fused_kernel.cuh); weights, states, tangent frames and
//             the Gram-Schmidt in shared memory (tangent run only)
//   stepwise  per step: batched GEMMs over checkpoints (at::bmm_out -> cuBLAS) into a preallocated
//             buffer + one pointwise kernel per layer (pointwise.cuh), and a QR kernel every
//             qr_every steps (qr.cuh); any size.  The twin is its variant (kTwin): one more
//             column per sequence, the delta = twin - state, and the twin's pointwise kernel.
//
// Both are templated on the cell (common/cell_math.h); callers pick it with dispatch_cell.
//
// A launcher is callable as launch(kernel, grid_x, grid_y, threads, shared_bytes, args...).
// Both paths receive contiguous tensors that passed check_run_inputs (common/run_checks.h), write
// into preallocated outputs, and process checkpoints [c_begin, c_begin + cc) so the caller can
// bound the memory of the layer-0 input projection.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <limits>
#include <vector>

#include "common/run_checks.h"
#include "cuda/fused_kernel.cuh"
#include "cuda/pointwise.cuh"
#include "cuda/qr.cuh"

namespace mdesc::cuda_impl {

// Inputs and outputs of one call, contiguous, on one device.
struct RunTensors {
  at::Tensor x;                 // [C|1, T, B, I]
  at::Tensor lengths;           // [B] int64, on the device, each in [1, T]
  std::vector<at::Tensor> w_ih; // per layer [C, G, I_l]
  std::vector<at::Tensor> w_hh; // per layer [C, G, H]
  std::vector<at::Tensor> bias; // per layer [C, G]
  at::Tensor h0, c0;            // [C|1, L, B, H] and [C|1, L, B, Hc]
  at::Tensor q0;                // [C|1, B|1, n, k]
  at::Tensor dh0, dc0;          // twin only: [C|1, L, B, H] (else undefined)
  at::Tensor logs;              // out: [C, B, nblocks, k] float64
  at::Tensor hT, cT;            // out: [C, L, B, H] and [C, L, B, Hc]
  at::Tensor dhT, dcT;          // twin only, out: [C, L, B, H]
};

// The inputs of one call made contiguous, and its outputs allocated: logs zeros (twin) or empty,
// the states empty; NaN everywhere with `poison` (so a test sees every element is written).
inline RunTensors contiguous_tensors(const RunInputs& in, const RunDims& d, const at::Tensor& lengths_on_device,
                                     bool poison) {
  RunTensors t;
  t.x = in.x.contiguous();
  t.lengths = lengths_on_device.contiguous();
  for (int64_t l = 0; l < d.L; ++l) {
    t.w_ih.push_back(in.w_ih[l].contiguous());
    t.w_hh.push_back(in.w_hh[l].contiguous());
    t.bias.push_back(in.bias[l].contiguous());
  }
  t.h0 = in.h0.contiguous();
  t.c0 = in.c0.contiguous();
  t.q0 = in.q0.contiguous();
  const bool twin = in.dh0 != nullptr;
  const auto opts = in.x.options();
  t.logs = twin ? at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble))
                : at::empty({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble));
  t.hT = at::empty({d.C, d.L, d.B, d.H}, opts);
  t.cT = at::empty({d.C, d.L, d.B, d.Hc}, opts);
  if (twin) {
    t.dh0 = in.dh0->contiguous();
    t.dc0 = in.dc0->contiguous();
    t.dhT = at::empty({d.C, d.L, d.B, d.H}, opts);
    t.dcT = at::empty({d.C, d.L, d.B, d.H}, opts);
  }
  if (poison) {
    for (at::Tensor* o : {&t.logs, &t.hT, &t.cT, &t.dhT, &t.dcT}) {
      if (o->defined()) o->fill_(std::numeric_limits<double>::quiet_NaN());
    }
  }
  return t;
}

// The properties of the device the launch geometry depends on.
struct DeviceLimits {
  int sms = 0;                  // multiprocessors
  size_t smem_block_optin = 0;  // opt-in shared memory per block (bytes)
  size_t smem_per_sm = 0;       // shared memory per multiprocessor (bytes)
  size_t smem_reserved = 0;     // shared memory the system reserves per block (bytes)
  int max_threads_per_sm = 0;
};

// Geometry of one fused launch: BT sequences per thread block, tangent columns processed GC at a
// time, shared memory per block (bytes).  BT = 0: the fused path does not fit.
struct FusedConfig {
  int BT = 0;
  int GC = 0;
  size_t smem = 0;
};

inline size_t fused_smem_bytes(const RunDims& d, int BT, int GC, size_t elem) {
  return static_cast<size_t>(fused_layout(cell_shape(d.cell), d.H, d.L, d.k, BT, GC, static_cast<int64_t>(elem)).total);
}

// Picks BT and GC for the fused path on a device with these limits, or BT = 0 if even BT = 1 does
// not fit in the opt-in shared memory per block.  cc = checkpoints in one launch.
inline FusedConfig choose_fused_config(const RunDims& d, int64_t cc, size_t elem, const DeviceLimits& dev) {
  const size_t limit = dev.smem_block_optin;
  const size_t per_sm = dev.smem_per_sm;
  const size_t reserved = dev.smem_reserved;
  const int64_t sms = dev.sms;
  const int64_t max_blocks_per_sm = std::max(1, dev.max_threads_per_sm / kFusedThreads);
  // Start from about 32 GEMM columns (states + tangents) per block, at most 16 sequences, and go
  // no lower than 8 columns: with fewer, most threads of the gate GEMM idle.
  int64_t bt_max = std::max<int64_t>(1, std::min<int64_t>(16, 32 / (1 + d.k)));
  while (bt_max > 1 && bt_max / 2 >= d.B) bt_max /= 2;
  const int64_t bt_min = std::min<int64_t>(bt_max, std::max<int64_t>(1, 8 / (1 + d.k)));
  // Among tiles that fit, keep the one with the most sequences in flight on the whole GPU (blocks
  // per SM are limited by shared memory); on a tie, the one that occupies more SMs, then the one
  // with more blocks per SM, whose barriers then overlap.  (A heuristic, not yet tuned on a GPU.)
  FusedConfig best{};
  int64_t best_resident = -1, best_sms = 0, best_bps = 0;
  for (int64_t bt = bt_max; bt >= 1; bt /= 2) {
    int64_t gc = std::max<int64_t>(1, std::min<int64_t>(bt * d.k, 64));
    size_t bytes = 0;
    while (true) {
      bytes = fused_smem_bytes(d, static_cast<int>(bt), static_cast<int>(gc), elem);
      if (bytes <= limit || gc <= 4) break;
      gc = std::max<int64_t>(4, gc / 2);
    }
    if (bytes > limit) continue;
    if (bt < bt_min && best.BT > 0) break;
    const int64_t bps = std::max<int64_t>(
        1, std::min<int64_t>(max_blocks_per_sm, static_cast<int64_t>(per_sm / (bytes + reserved))));
    const int64_t blocks = cc * ceil_div(d.B, bt);
    const int64_t resident = std::min(std::min(blocks, sms * bps) * bt, cc * d.B);  // real sequences only
    const int64_t sms_used = std::min(blocks, sms);
    if (resident > best_resident || (resident == best_resident && sms_used > best_sms) ||
        (resident == best_resident && sms_used == best_sms && bps > best_bps)) {
      best = {static_cast<int>(bt), static_cast<int>(gc), bytes};
      best_resident = resident;
      best_sms = sms_used;
      best_bps = bps;
    }
  }
  return best;
}

// Per-checkpoint weights packed as the fused kernel's shared-memory image, [C, nW].
inline at::Tensor pack_fused_weights(const RunDims& d, const RunTensors& t) {
  std::vector<at::Tensor> parts;
  for (int64_t l = 0; l < d.L; ++l) {
    if (l > 0) parts.push_back(t.w_ih[l].transpose(1, 2).reshape({d.C, -1}));
    parts.push_back(t.w_hh[l].transpose(1, 2).reshape({d.C, -1}));
  }
  for (int64_t l = 0; l < d.L; ++l) parts.push_back(t.bias[l]);
  at::Tensor packed = at::cat(parts, 1).contiguous();
  TORCH_INTERNAL_ASSERT(packed.size(1) == fused_layout(cell_shape(d.cell), d.H, d.L, d.k, 1, 1, 1).nW);
  return packed;
}

// Device memory one checkpoint needs beyond inputs and outputs (bytes): the layer-0 projection.
inline int64_t fused_bytes_per_checkpoint(const RunDims& d, size_t elem) {
  return d.T * d.B * d.G * static_cast<int64_t>(elem);
}

// ... and for the stepwise path: projection + G + the Z/Cm matrices (N columns per layer).
inline int64_t stepwise_bytes_per_checkpoint(const RunDims& d, size_t elem, bool twin = false) {
  const int64_t N = d.B * ((twin ? 2 : 1) + d.k);
  return (d.G * d.T * d.B + d.G * N + d.halves * d.L * d.H * N) * static_cast<int64_t>(elem);
}

// Layer-0 input projection incl. bias for checkpoints [c_begin, c_begin + cc), laid out so that a
// (t, b) row of G values is contiguous.  Returns the tensor and its (checkpoint, t, b) strides.
struct Projection {
  at::Tensor xp;
  int64_t sc, st, sb;
};

inline Projection project_inputs(const RunDims& d, const RunTensors& t, int64_t c_begin, int64_t cc) {
  const int64_t GH = d.G;
  const at::Tensor w = t.w_ih[0].narrow(0, c_begin, cc);   // [cc, G, I]
  const at::Tensor bias = t.bias[0].narrow(0, c_begin, cc); // [cc, G]
  if (!d.x_per_ckpt) {
    // One GEMM for all checkpoints: [T*B, I] x [I, cc*G] -> [T*B, cc*G]
    const at::Tensor x2 = t.x.reshape({d.T * d.B, d.I});
    at::Tensor xp = at::addmm(bias.reshape({cc * GH}), x2, w.reshape({cc * GH, d.I}).t());
    return {xp, GH, d.B * cc * GH, cc * GH};
  }
  // Per-checkpoint inputs: [cc, T*B, I] x [cc, I, G] -> [cc, T*B, G]
  const at::Tensor x3 = t.x.narrow(0, c_begin, cc).reshape({cc, d.T * d.B, d.I});
  at::Tensor xp = at::baddbmm(bias.unsqueeze(1).expand({cc, d.T * d.B, GH}), x3, w.transpose(1, 2));
  return {xp, d.T * d.B * GH, d.B * GH, GH};
}

template <class Cell, typename Launch>
void run_fused(const RunDims& d, const RunTensors& t, const at::Tensor& wpack, const FusedConfig& cfg,
               int64_t c_begin, int64_t cc, const Launch& launch) {
  const Projection p = project_inputs(d, t, c_begin, cc);
  constexpr bool kHasC = Cell::kHalves == 2;
  AT_DISPATCH_FLOATING_TYPES(t.x.scalar_type(), "tangent_run_cuda_fused", [&] {
    FusedArgs<scalar_t> a{};
    a.wpack = wpack.data_ptr<scalar_t>();
    a.xproj = p.xp.data_ptr<scalar_t>();
    a.xp_sc = p.sc;
    a.xp_st = p.st;
    a.xp_sb = p.sb;
    a.lengths = t.lengths.data_ptr<int64_t>();
    a.h0 = t.h0.data_ptr<scalar_t>();
    a.c0 = kHasC ? t.c0.data_ptr<scalar_t>() : nullptr;
    a.state_sc = d.state_per_ckpt ? d.L * d.B * d.H : 0;
    a.q0 = t.q0.data_ptr<scalar_t>();
    a.q_sc = d.q_per_ckpt ? (d.q_per_seq ? d.B : 1) * d.n * d.k : 0;
    a.q_sb = d.q_per_seq ? d.n * d.k : 0;
    a.logs = d.k > 0 ? t.logs.data_ptr<double>() : nullptr;
    a.hT = t.hT.data_ptr<scalar_t>();
    a.cT = kHasC ? t.cT.data_ptr<scalar_t>() : nullptr;
    a.c_begin = c_begin;
    a.B = static_cast<int>(d.B);
    a.Tdrive = static_cast<int>(d.T);
    a.L = static_cast<int>(d.L);
    a.H = static_cast<int>(d.H);
    a.k = static_cast<int>(d.k);
    a.BT = cfg.BT;
    a.GC = std::max(cfg.GC, 1);
    a.S = d.S;
    a.warmup = d.warmup;
    a.qr_every = d.qr_every;
    a.nblocks = d.nblocks;
    const size_t smem = fused_smem_bytes(d, a.BT, a.GC, sizeof(scalar_t));
    launch(fused_tangent_kernel<Cell, scalar_t>, static_cast<unsigned>(ceil_div(d.B, a.BT)),
           static_cast<unsigned>(cc), kFusedThreads, smem, a);
  });
}

// The stepwise path's matrices of checkpoints [c_begin, c_begin + cc): per layer Z (h rows) and
// Cm (c rows), [cc, H, N], columns b state, B + b k + j tangent j, D0 + b the twin's delta.
struct StepwiseState {
  at::Tensor Z, Cm;  // [L, cc, H, N], [L, cc, H or 0, N]
  int64_t N, D0;
};

template <class Cell, bool kTwin>
StepwiseState load_stepwise_state(const RunDims& d, const RunTensors& t, int64_t c_begin, int64_t cc) {
  constexpr bool kHasC = Cell::kHalves == 2;
  const int64_t H = d.H, B = d.B, k = d.k, L = d.L, rows = d.halves * H;
  StepwiseState st{};
  st.N = B * ((kTwin ? 2 : 1) + k);
  st.D0 = B * (1 + k);
  const auto opts = t.x.options();
  st.Z = at::empty({L, cc, H, st.N}, opts);
  st.Cm = at::empty({L, cc, kHasC ? H : 0, st.N}, opts);
  auto ckpt = [&](const at::Tensor& v, bool per_ckpt) { return per_ckpt ? v.narrow(0, c_begin, cc) : v; };
  const at::Tensor h0 = ckpt(t.h0, d.state_per_ckpt), c0 = ckpt(t.c0, d.state_per_ckpt);
  const at::Tensor q0 = ckpt(t.q0, d.q_per_ckpt);
  for (int64_t l = 0; l < L; ++l) {
    st.Z[l].narrow(2, 0, B).copy_(h0.select(1, l).transpose(1, 2));   // [cc|1, H, B]
    if (kHasC) st.Cm[l].narrow(2, 0, B).copy_(c0.select(1, l).transpose(1, 2));
    if constexpr (kTwin) {
      st.Z[l].narrow(2, st.D0, B).copy_(ckpt(t.dh0, d.delta_per_ckpt).select(1, l).transpose(1, 2));
      st.Cm[l].narrow(2, st.D0, B).copy_(ckpt(t.dc0, d.delta_per_ckpt).select(1, l).transpose(1, 2));
    }
    if (k > 0) {
      // q0 rows [l*rows, l*rows + H) are layer l's h block, [l*rows + H, l*rows + 2H) its c block.
      st.Z[l].narrow(2, B, B * k).view({cc, H, B, k}).copy_(q0.narrow(2, l * rows, H).permute({0, 2, 1, 3}));
      if (kHasC) {
        st.Cm[l].narrow(2, B, B * k).view({cc, H, B, k}).copy_(q0.narrow(2, l * rows + H, H).permute({0, 2, 1, 3}));
      }
    }
  }
  return st;
}

template <class Cell, bool kTwin>
void store_stepwise_state(const RunDims& d, const RunTensors& t, const StepwiseState& st, int64_t c_begin,
                          int64_t cc) {
  constexpr bool kHasC = Cell::kHalves == 2;
  const int64_t B = d.B;
  for (int64_t l = 0; l < d.L; ++l) {
    t.hT.narrow(0, c_begin, cc).select(1, l).copy_(st.Z[l].narrow(2, 0, B).transpose(1, 2));
    if (kHasC) t.cT.narrow(0, c_begin, cc).select(1, l).copy_(st.Cm[l].narrow(2, 0, B).transpose(1, 2));
    if constexpr (kTwin) {
      t.dhT.narrow(0, c_begin, cc).select(1, l).copy_(st.Z[l].narrow(2, st.D0, B).transpose(1, 2));
      t.dcT.narrow(0, c_begin, cc).select(1, l).copy_(st.Cm[l].narrow(2, st.D0, B).transpose(1, 2));
    }
  }
}

// Layer-0 input projection incl. bias for the stepwise path: [cc, G, T*B], one GEMM.
inline at::Tensor stepwise_projection(const RunDims& d, const RunTensors& t, int64_t c_begin, int64_t cc) {
  const int64_t GH = d.G, B = d.B;
  const at::Tensor w0 = t.w_ih[0].narrow(0, c_begin, cc);
  const at::Tensor b0 = t.bias[0].narrow(0, c_begin, cc);
  if (!d.x_per_ckpt) {
    const at::Tensor x2 = t.x.reshape({d.T * B, d.I});
    return at::addmm(b0.reshape({cc * GH, 1}), w0.reshape({cc * GH, d.I}), x2.t()).view({cc, GH, d.T * B});
  }
  const at::Tensor x3 = t.x.narrow(0, c_begin, cc).reshape({cc, d.T * B, d.I});
  return at::baddbmm(b0.unsqueeze(2).expand({cc, GH, d.T * B}), w0, x3.transpose(1, 2));
}

// Checkpoints [c_begin, c_begin + cc) through all S steps on the stepwise path; kTwin: the twin
// run (Cell = LstmCell).  dev.sms bounds the pointwise grid.
template <class Cell, bool kTwin, typename Launch>
void run_stepwise(const RunDims& d, const RunTensors& t, int64_t c_begin, int64_t cc, const DeviceLimits& dev,
                  const Launch& launch) {
  constexpr bool kHasC = Cell::kHalves == 2;
  const int64_t H = d.H, GH = d.G, B = d.B, k = d.k, L = d.L;
  const at::Tensor xp = stepwise_projection(d, t, c_begin, cc);
  const StepwiseState st = load_stepwise_state<Cell, kTwin>(d, t, c_begin, cc);
  const int64_t N = st.N;
  const at::Tensor &Z = st.Z, &Cm = st.Cm;
  at::Tensor G = at::empty({cc, GH, N}, t.x.options());

  const int64_t pw_total = cc * H * B;
  const unsigned pw_blocks = static_cast<unsigned>(std::min<int64_t>(
      ceil_div(pw_total, kPointwiseThreads), static_cast<int64_t>(dev.sms) * 32));
  const int nslots = k <= 2 ? kQrThreads / kWarpSize : 1;  // one warp per sequence, or all warps on one
  const unsigned qr_blocks = static_cast<unsigned>(ceil_div(B, nslots));
  at::Tensor qr_scratch = at::empty({k > 0 ? cc * B * mgs_scratch_per_slot(k) : 0}, t.x.options().dtype(at::kDouble));

  AT_DISPATCH_FLOATING_TYPES(t.x.scalar_type(), "mdesc_run_cuda_stepwise", [&] {
    std::vector<PointwiseArgs<scalar_t>> pw(L);
    std::vector<at::Tensor> whh(L), wih(L), zl(L);
    for (int64_t l = 0; l < L; ++l) {
      PointwiseArgs<scalar_t>& a = pw[l];
      a.z = Z[l].data_ptr<scalar_t>();
      a.cm = kHasC ? Cm[l].data_ptr<scalar_t>() : nullptr;
      a.g = G.data_ptr<scalar_t>();
      a.xproj = xp.data_ptr<scalar_t>();
      a.bias = t.bias[l].data_ptr<scalar_t>() + c_begin * GH;
      a.lengths = t.lengths.data_ptr<int64_t>();
      a.cc = cc;
      a.B = B;
      a.H = H;
      a.k = k;
      a.N = N;
      a.Tdrive = d.T;
      a.layer = static_cast<int>(l);
      whh[l] = t.w_hh[l].narrow(0, c_begin, cc);
      wih[l] = t.w_ih[l].narrow(0, c_begin, cc);
      zl[l] = Z[l];
    }
    for (int64_t step = 0; step < d.S; ++step) {
      for (int64_t l = 0; l < L; ++l) {
        at::bmm_out(G, whh[l], zl[l]);
        if (l > 0) G.baddbmm_(wih[l], zl[l - 1]);
        if constexpr (kTwin) {
          launch(twin_pointwise_kernel<scalar_t>, pw_blocks, 1u, kPointwiseThreads, size_t(0), pw[l], step);
        } else {
          launch(stepwise_pointwise_kernel<Cell, scalar_t>, pw_blocks, 1u, kPointwiseThreads, size_t(0), pw[l], step);
        }
      }
      if (k > 0) {
        const int64_t blk = qr_block_after_step(d, step + 1);
        if (blk != -2) {
          launch(stepwise_qr_kernel<scalar_t>, qr_blocks, static_cast<unsigned>(cc), kQrThreads, size_t(0),
                 Z.data_ptr<scalar_t>(), kHasC ? Cm.data_ptr<scalar_t>() : nullptr, cc, static_cast<int>(H),
                 static_cast<int>(L), B, static_cast<int>(k), N, nslots, t.logs.data_ptr<double>(), c_begin,
                 d.nblocks, blk, qr_scratch.data_ptr<double>());
        }
      }
    }
  });
  store_stepwise_state<Cell, kTwin>(d, t, st, c_begin, cc);
}

}  // namespace mdesc::cuda_impl
