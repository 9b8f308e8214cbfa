// The CUDA path of mdesc::lstm_twin_run (schema: csrc/mdesc_twin.cpp; math:
// csrc/common/twin_math.h; the CPU kernel csrc/cpu/twin_run.cpp defines the semantics), written
// once and parameterised by a launcher so the same code drives the GPU (twin_run.cu) and the CPU
// emulation used by the tests (emulation/emulate_twin.cpp).
//
// The stepwise structure of tangent_host.h: per step and layer, batched GEMMs over checkpoints
// (at::bmm_out -> cuBLAS) into a preallocated buffer, then one pointwise kernel; the frame's
// Gram-Schmidt every qr_every steps is tangent_host.h's kernel (qr.cuh), unchanged.  Per layer
// and checkpoint the columns of Z (h rows) and Cm (c rows), [H, N], N = B (2 + k), are
//
//   b                    state of sequence b
//   B + b k + j          tangent vector j of sequence b (the layout qr.cuh expects)
//   B (1 + k) + b        delta = twin - state of sequence b (no bias: it cancels)
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <vector>

#include "common/cell_math.h"  // qr_block_after_step
#include "common/twin_checks.h"
#include "common/twin_math.h"
#include "cuda/qr.cuh"

namespace mdesc::cuda_impl {

struct TwinTensors {
  at::Tensor x, lengths;                      // [C|1, T, B, I], [B] int64 on the device
  std::vector<at::Tensor> w_ih, w_hh, bias;   // per layer [C, 4H, I_l], [C, 4H, H], [C, 4H]
  at::Tensor h0, c0, dh0, dc0;                // [C|1, L, B, H]
  at::Tensor q0;                              // [C|1, B|1, n, k]
  at::Tensor logs, hT, cT, dhT, dcT;          // out
};

constexpr int kTwinThreads = 256;

template <typename T>
struct TwinPointwiseArgs {
  T* z;                    // [cc, H, N] h rows of layer l
  T* cm;                   // [cc, H, N] c rows of layer l
  const T* g;              // [cc, 4H, N] the GEMMs' output
  const T* xproj;          // [cc, 4H, T, B] layer-0 input projection + bias
  const T* bias;           // [cc, 4H] bias of layer l (offset to the launch's first checkpoint)
  const int64_t* lengths;  // [B]
  int64_t cc, B, H, k, N, Tdrive;
  int layer;
};

// One thread per (checkpoint, unit, sequence): the state and the delta of its unit, then every
// tangent vector of the sequence, the coefficients kept in registers.
template <typename T>
__global__ void __launch_bounds__(kTwinThreads) twin_pointwise_kernel(const TwinPointwiseArgs<T> a, int64_t t) {
  const int64_t total = a.cc * a.H * a.B;
  const int64_t H = a.H, N = a.N, HN = a.H * a.N, D0 = a.B * (1 + a.k);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = idx % a.B;
    const int64_t u = (idx / a.B) % H;
    const int64_t cl = idx / (a.B * H);
    T* Z = a.z + cl * HN + u * N;
    T* Cm = a.cm + cl * HN + u * N;
    const T* G = a.g + cl * 4 * HN + u * N;
    T in[4];
    if (a.layer == 0 && t < a.lengths[b]) {
      const T* xp = a.xproj + ((cl * 4 * H + u) * a.Tdrive + t) * a.B + b;
      const int64_t gate_stride = H * a.Tdrive * a.B;
#pragma unroll
      for (int q = 0; q < 4; ++q) in[q] = xp[q * gate_stride];
    } else {
      const T* bias = a.bias + cl * 4 * H + u;
#pragma unroll
      for (int q = 0; q < 4; ++q) in[q] = bias[q * H];
    }
    T pre[4], da[4];
#pragma unroll
    for (int q = 0; q < 4; ++q) {
      pre[q] = G[q * HN + b] + in[q];
      da[q] = G[q * HN + D0 + b];
    }
    T h = Z[b], c = Cm[b], dh = Z[D0 + b], dc = Cm[D0 + b];
    T k0, k1, k2, k3, k4, k5;
    twin::lstm_twin_unit(pre[0], pre[1], pre[2], pre[3], da[0], da[1], da[2], da[3], h, c, dh, dc, k0, k1, k2, k3,
                         k4, k5);
    Z[b] = h;
    Cm[b] = c;
    Z[D0 + b] = dh;
    Cm[D0 + b] = dc;
    for (int64_t j = 0; j < a.k; ++j) {
      const int64_t col = a.B + b * a.k + j;
      T th = Z[col], tc = Cm[col];
      twin::lstm_tangent_unit(k0, k1, k2, k3, k4, k5, G[col], G[HN + col], G[2 * HN + col], G[3 * HN + col], th, tc);
      Z[col] = th;
      Cm[col] = tc;
    }
  }
}

// Checkpoints [c_begin, c_begin + cc) through all S steps.  `sms` bounds the pointwise grid.
template <typename Launch>
void run_twin_stepwise(const twin::TwinDims& d, const TwinTensors& t, int64_t c_begin, int64_t cc, int sms,
                       const Launch& launch) {
  const int64_t H = d.H, GH = 4 * d.H, B = d.B, k = d.k, L = d.L, N = d.B * (2 + d.k), D0 = d.B * (1 + d.k);
  const int64_t rows = 2 * H;
  const auto opts = t.x.options();

  const at::Tensor w0 = t.w_ih[0].narrow(0, c_begin, cc);
  const at::Tensor b0 = t.bias[0].narrow(0, c_begin, cc);
  at::Tensor xp;
  if (!d.x_per_ckpt) {
    const at::Tensor x2 = t.x.reshape({d.T * B, d.I});
    xp = at::addmm(b0.reshape({cc * GH, 1}), w0.reshape({cc * GH, d.I}), x2.t()).view({cc, GH, d.T * B});
  } else {
    const at::Tensor x3 = t.x.narrow(0, c_begin, cc).reshape({cc, d.T * B, d.I});
    xp = at::baddbmm(b0.unsqueeze(2).expand({cc, GH, d.T * B}), w0, x3.transpose(1, 2));
  }
  xp = xp.contiguous();

  at::Tensor Z = at::empty({L, cc, H, N}, opts);
  at::Tensor Cm = at::empty({L, cc, H, N}, opts);
  auto ckpt = [&](const at::Tensor& v, bool per_ckpt) { return per_ckpt ? v.narrow(0, c_begin, cc) : v; };
  const at::Tensor h0 = ckpt(t.h0, d.state_per_ckpt), c0 = ckpt(t.c0, d.state_per_ckpt);
  const at::Tensor dh0 = ckpt(t.dh0, d.delta_per_ckpt), dc0 = ckpt(t.dc0, d.delta_per_ckpt);
  const at::Tensor q0 = ckpt(t.q0, d.q_per_ckpt);
  for (int64_t l = 0; l < L; ++l) {
    Z[l].narrow(2, 0, B).copy_(h0.select(1, l).transpose(1, 2));
    Cm[l].narrow(2, 0, B).copy_(c0.select(1, l).transpose(1, 2));
    Z[l].narrow(2, D0, B).copy_(dh0.select(1, l).transpose(1, 2));
    Cm[l].narrow(2, D0, B).copy_(dc0.select(1, l).transpose(1, 2));
    if (k > 0) {
      Z[l].narrow(2, B, B * k).view({cc, H, B, k}).copy_(q0.narrow(2, l * rows, H).permute({0, 2, 1, 3}));
      Cm[l].narrow(2, B, B * k).view({cc, H, B, k}).copy_(q0.narrow(2, l * rows + H, H).permute({0, 2, 1, 3}));
    }
  }
  at::Tensor G = at::empty({cc, GH, N}, opts);

  const int64_t pw_total = cc * H * B;
  const unsigned pw_blocks = static_cast<unsigned>(
      std::max<int64_t>(1, std::min<int64_t>(twin::ceil_div(pw_total, kTwinThreads), static_cast<int64_t>(sms) * 32)));
  const int nslots = k <= 2 ? kQrThreads / kWarpSize : 1;
  const unsigned qr_blocks = static_cast<unsigned>(twin::ceil_div(B, nslots));
  at::Tensor qr_scratch = at::empty({k > 0 ? cc * B * mgs_scratch_per_slot(k) : 0}, t.x.options().dtype(at::kDouble));

  AT_DISPATCH_FLOATING_TYPES(t.x.scalar_type(), "lstm_twin_run_cuda", [&] {
    std::vector<TwinPointwiseArgs<scalar_t>> pw(L);
    std::vector<at::Tensor> whh(L), wih(L);
    for (int64_t l = 0; l < L; ++l) {
      TwinPointwiseArgs<scalar_t>& a = pw[l];
      a.z = Z[l].data_ptr<scalar_t>();
      a.cm = Cm[l].data_ptr<scalar_t>();
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
    }
    for (int64_t step = 0; step < d.S; ++step) {
      for (int64_t l = 0; l < L; ++l) {
        at::Tensor zl = Z[l];
        at::bmm_out(G, whh[l], zl);
        if (l > 0) G.baddbmm_(wih[l], Z[l - 1]);
        launch(twin_pointwise_kernel<scalar_t>, pw_blocks, 1u, kTwinThreads, size_t(0), pw[l], step);
      }
      if (k > 0) {
        const int64_t blk = qr_block_after_step(step + 1, d.warmup, d.qr_every, d.S);
        if (blk != -2) {
          launch(stepwise_qr_kernel<scalar_t>, qr_blocks, static_cast<unsigned>(cc), kQrThreads, size_t(0),
                 Z.data_ptr<scalar_t>(), Cm.data_ptr<scalar_t>(), cc, static_cast<int>(H), static_cast<int>(L), B,
                 static_cast<int>(k), N, nslots, t.logs.data_ptr<double>(), c_begin, d.nblocks, blk,
                 qr_scratch.data_ptr<double>());
        }
      }
    }
  });

  for (int64_t l = 0; l < L; ++l) {
    t.hT.narrow(0, c_begin, cc).select(1, l).copy_(Z[l].narrow(2, 0, B).transpose(1, 2));
    t.cT.narrow(0, c_begin, cc).select(1, l).copy_(Cm[l].narrow(2, 0, B).transpose(1, 2));
    t.dhT.narrow(0, c_begin, cc).select(1, l).copy_(Z[l].narrow(2, D0, B).transpose(1, 2));
    t.dcT.narrow(0, c_begin, cc).select(1, l).copy_(Cm[l].narrow(2, D0, B).transpose(1, 2));
  }
}

}  // namespace mdesc::cuda_impl
