// CPU implementation of mdesc::lstm_twin_run (schema and shapes: csrc/mdesc_twin.cpp; math:
// csrc/common/twin_math.h).
//
// The structure of the tangent kernel (csrc/cpu/tangent_run.cpp): work units of (checkpoint, tile of
// sequences) in parallel, each with its buffers allocated once, and one GEMM per weight matrix per
// layer and step over every column of the tile, followed by one pointwise pass.  The only change
// is one more column per sequence, the difference to the twin:
//
//   Z  [n, M] column-major, M = tile * (2 + k), rows [h_1, c_1, ..., h_L, c_L] (n = 2HL):
//      column s*(2+k) is sequence s's state, s*(2+k) + 1 its delta = twin - state, and
//      s*(2+k) + 2 .. + 1 + k its tangent frame (contiguous [n, k] for the re-orthonormalisation).
//   G  [4H, M] the GEMMs' output: the state's pre-activations (the input projection or bias is
//      added in the pointwise pass), the delta's d = W dh exactly as a product (bias and input
//      cancel in a difference), and the tangents' W q.
//   XP [4H, Tu * tile] layer-0 input projection W_ih x + bias of the driven part, in one GEMM.
//
// On CPUs with AVX-512 (H at least one vector; AVX2 when asked) a layer step is one fused pass instead, as
// in the tangent kernel (csrc/cpu/fused_step.h; the twin's update: csrc/cpu/fused_twin.cpp), with
// Z double-buffered; cpu_path="gemm" or portable_gemm keeps the GEMM + pointwise step.
//
// Runs with flush-to-zero / denormals-are-zero (x86): a delta below the dtype's smallest normal
// number (1.2e-38 in float32) becomes 0, which is also what keeps a dying perturbation from
// slowing the kernel down with denormal arithmetic.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "cpu/fused_step.h"
#include "cpu/gemm.h"
#include "cpu/input_projection.h"
#include "cpu/qr.h"  // FrameQR
#include "common/twin_checks.h"
#include "common/cell_math.h"  // qr_block_after_step

// Everything below, the math of twin_math.h included, without trapping math: GCC 12 will not
// if-convert (so not vectorise) the clamps of twin_math.h's exp otherwise.  Nothing here uses
// floating-point exceptions.
#pragma GCC push_options
#pragma GCC optimize("no-trapping-math")
#include "common/twin_math.h"

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#define MDESC_TWIN_HAVE_MXCSR 1
#endif

namespace mdesc::cpu {
namespace {

using twin::TwinDims;

#if defined(__x86_64__) && defined(__GNUC__)
#define MDESC_TWIN_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define MDESC_TWIN_MULTIVERSION
#endif

// Unit r of the state and delta columns, and of one tangent column: scalars only, so they
// vectorise once inlined into the `omp simd` loops.
template <typename T>
inline __attribute__((always_inline)) void twin_unit(int64_t r, int64_t H, const T* __restrict g,
                                                     const T* __restrict gd, const T* __restrict in,
                                                     T* __restrict z, T* __restrict zd, T* __restrict coef) {
  T h = z[r], c = z[H + r], dh = zd[r], dc = zd[H + r];
  T k0, k1, k2, k3, k4, k5;
  twin::lstm_twin_unit(g[r] + in[r], g[H + r] + in[H + r], g[2 * H + r] + in[2 * H + r], g[3 * H + r] + in[3 * H + r],
                       gd[r], gd[H + r], gd[2 * H + r], gd[3 * H + r], h, c, dh, dc, k0, k1, k2, k3, k4, k5);
  z[r] = h, z[H + r] = c, zd[r] = dh, zd[H + r] = dc;
  coef[r] = k0, coef[H + r] = k1, coef[2 * H + r] = k2, coef[3 * H + r] = k3, coef[4 * H + r] = k4,
  coef[5 * H + r] = k5;
}

template <typename T>
inline __attribute__((always_inline)) void tangent_unit(int64_t r, int64_t H, const T* __restrict ga,
                                                        const T* __restrict coef, T* __restrict zt) {
  T dh = zt[r], dc = zt[H + r];
  twin::lstm_tangent_unit(coef[r], coef[H + r], coef[2 * H + r], coef[3 * H + r], coef[4 * H + r], coef[5 * H + r],
                          ga[r], ga[H + r], ga[2 * H + r], ga[3 * H + r], dh, dc);
  zt[r] = dh, zt[H + r] = dc;
}

// One layer's pointwise pass over a tile: g [4H, nb*cols], z [n, nb*cols] at the layer's first
// h row; sequence s owns columns s*cols .. (state, delta, k tangents); in[s] is added to its state.
template <typename T>
inline __attribute__((always_inline)) void twin_tile_impl(int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in, T* z,
                           T* coef) {
  const int64_t H4 = 4 * H;
  for (int64_t s = 0; s < nb; ++s) {
    const T* gs = g + s * cols * H4;
    T* zs = z + s * cols * n;
    const T* __restrict ins = in[s];
#pragma omp simd
    for (int64_t r = 0; r < H; ++r) twin_unit<T>(r, H, gs, gs + H4, ins, zs, zs + n, coef);
    for (int64_t j = 2; j < cols; ++j) {
#pragma omp simd
      for (int64_t r = 0; r < H; ++r) tangent_unit<T>(r, H, gs + j * H4, coef, zs + j * n);
    }
  }
}

MDESC_TWIN_MULTIVERSION
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const float* g, const float* const* in,
                         float* z, float* coef) {
  twin_tile_impl(H, nb, cols, n, g, in, z, coef);
}

MDESC_TWIN_MULTIVERSION
void twin_pointwise_tile(int64_t H, int64_t nb, int64_t cols, int64_t n, const double* g, const double* const* in,
                         double* z, double* coef) {
  twin_tile_impl(H, nb, cols, n, g, in, z, coef);
}

template <typename T>
struct TwinArgs {
  TwinDims d;
  bool portable;
  bool fused;                  // the fused step (fused_step.h, fused_twin.cpp) where this CPU has one
  bool avx2;                   // ... with its AVX2 code even on an AVX-512 CPU (cpu_path="fused_avx2")
  const T* x;                  // [C|1, T, B, I]
  const int64_t* lengths;      // [B]
  std::vector<const T*> w_ih;  // per layer [C, 4H, I_l]
  std::vector<const T*> w_hh;  // per layer [C, 4H, H]
  std::vector<const T*> bias;  // per layer [C, 4H]
  const T* h0;                 // [C|1, L, B, H]
  const T* c0;
  const T* dh0;                // [C|1, L, B, H]
  const T* dc0;
  const T* q0;                 // [C|1, B|1, n, k]
  double* logs;                // [C, B, nblocks, k]
  T* hT;                       // [C, L, B, H]
  T* cT;
  T* dhT;
  T* dcT;
};

template <typename T>
class TwinTileRunner {
 public:
  TwinTileRunner(const TwinArgs<T>& a, int64_t tile) : a_(a), d_(a.d), cols_(2 + a.d.k), M_(tile * (2 + a.d.k)),
        qr_(a.d.n, a.d.k, /*portable=*/true) {
    const int64_t H = d_.H;
    z_.resize(d_.n * M_);
    coef_.resize(6 * H);
    xp_.resize(4 * H * d_.T * tile);
    xbuf_.resize(d_.I * d_.T * tile);
    inputs_.resize(tile);
    if (a.fused) sh_ = fused_shape(CellKind::kLstm, H, M_, sizeof(T), a.avx2);
    if (sh_.lanes > 0) {  // the fused step's packed weights and scratch
      const int64_t packed = fused_packed_size(sh_, H);
      wp_hh_.resize(d_.L * packed);
      wp_ih_.resize((d_.L - 1) * packed);
      wp_x_.resize(fused_packed_size(sh_, d_.I));
      z2_.resize(d_.n * M_);
      fcoef_.resize(tile * 6 * H);
      stash_.resize(tile * 4 * H);
      panel_.resize(std::max<int64_t>(fused_panel_size(sh_, M_, H), sh_.nr * d_.I));
      fgates_.resize(sh_.nr * sh_.Gpad);
    } else {
      g_.resize(4 * H * M_);
    }
    zc_ = z_.data();
  }

  void run(int64_t c, int64_t b0, int64_t nb) {
    nb_ = nb;
    M_ = nb * cols_;
    zc_ = z_.data();
    load(c, b0);
    project_inputs(c, b0);
    if (sh_.lanes > 0) pack_weights(c);
    for (int64_t t = 0; t < d_.S; ++t) {
      if (sh_.lanes > 0) {
        fused_step(c, b0, t);
      } else {
        for (int64_t l = 0; l < d_.L; ++l) step_layer(c, b0, l, t);
      }
      if (d_.k > 0) {
        const int64_t block = qr_block_after_step(t + 1, d_.warmup, d_.qr_every, d_.S);
        if (block != -2) orthonormalise(c, b0, block);
      }
    }
    store(c, b0);
  }

 private:
  T* column(int64_t s, int64_t v) { return zc_ + (s * cols_ + v) * d_.n; }

  void load(int64_t c, int64_t b0) {
    const int64_t H = d_.H, L = d_.L, B = d_.B, n = d_.n, k = d_.k;
    const int64_t cs = d_.state_per_ckpt ? c : 0, cd = d_.delta_per_ckpt ? c : 0, cq = d_.q_per_ckpt ? c : 0;
    for (int64_t s = 0; s < nb_; ++s) {
      const int64_t b = b0 + s;
      T* state = column(s, 0);
      T* delta = column(s, 1);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t os = ((cs * L + l) * B + b) * H, od = ((cd * L + l) * B + b) * H;
        std::copy(a_.h0 + os, a_.h0 + os + H, state + 2 * l * H);
        std::copy(a_.c0 + os, a_.c0 + os + H, state + 2 * l * H + H);
        std::copy(a_.dh0 + od, a_.dh0 + od + H, delta + 2 * l * H);
        std::copy(a_.dc0 + od, a_.dc0 + od + H, delta + 2 * l * H + H);
      }
      const int64_t bq = d_.q_per_seq ? b : 0;
      const T* q = a_.q0 + (cq * (d_.q_per_seq ? B : 1) + bq) * n * k;  // [n, k] row-major
      for (int64_t j = 0; j < k; ++j) {
        T* v = column(s, 2 + j);
        for (int64_t r = 0; r < n; ++r) v[r] = q[r * k + j];
      }
    }
  }

  void project_inputs(int64_t c, int64_t b0) {
    const int64_t I = d_.I, G = 4 * d_.H;
    int64_t tu = 0;
    for (int64_t s = 0; s < nb_; ++s) tu = std::max(tu, a_.lengths[b0 + s]);
    const T* x = a_.x + (d_.x_per_ckpt ? c : 0) * d_.T * d_.B * I;
    cpu::project_inputs<T>(sh_, a_.portable, x, d_.B, I, b0, nb_, tu, a_.w_ih[0] + c * G * I, a_.bias[0] + c * G,
                           G, {xbuf_.data(), wp_x_.data(), panel_.data(), fgates_.data()}, xp_.data());
  }

  // What layer l adds to each state column at step t: the input projection (with bias) on driven
  // layer-0 steps, else the bias.
  void set_inputs(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t G = 4 * d_.H;
    select_layer_inputs<T>(nb_, a_.lengths + b0, l == 0, t, xp_.data(), a_.bias[l] + c * G, G, inputs_.data());
  }


  void pack_weights(int64_t c) {
    fused_pack_layers<T>(sh_, d_.L, d_.H, c, a_.w_hh, a_.w_ih, wp_hh_.data(), wp_ih_.data());
  }

  // One step of every layer through the fused step: reads zc_, writes the other buffer, swaps.
  void fused_step(int64_t c, int64_t b0, int64_t t) {
    const int64_t H = d_.H, packed = fused_packed_size(sh_, H);
    T* znext = zc_ == z_.data() ? z2_.data() : z_.data();
    for (int64_t l = 0; l < d_.L; ++l) {
      set_inputs(c, b0, l, t);
      FusedLayerStep<T> step{sh_, H, d_.n, M_, cols_, 2 * l * H, l > 0 ? 2 * (l - 1) * H : 0,
                             wp_hh_.data() + l * packed, l > 0 ? wp_ih_.data() + (l - 1) * packed : nullptr,
                             zc_, znext, inputs_.data(), fcoef_.data(), panel_.data(), fgates_.data(),
                             stash_.data()};
      fused_twin_layer_step(step);
    }
    zc_ = znext;
  }

  void step_layer(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t H = d_.H, H4 = 4 * H, n = d_.n;
    T* g = g_.data();
    gemm<T>(a_.portable, true, H4, M_, H, T(1), a_.w_hh[l] + c * H4 * H, H, z_.data() + 2 * l * H, n, T(0), g,
                 H4);
    if (l > 0) {
      gemm<T>(a_.portable, true, H4, M_, H, T(1), a_.w_ih[l] + c * H4 * H, H, z_.data() + 2 * (l - 1) * H, n,
                   T(1), g, H4);
    }
    set_inputs(c, b0, l, t);
    twin_pointwise_tile(H, nb_, cols_, n, g, inputs_.data(), z_.data() + 2 * l * H, coef_.data());
  }

  // Each sequence's [n, k] frame through cpu/qr.h's FrameQR, Gram-Schmidt only (diag R > 0, float64
  // dots; log R_jj added to the block's logs; lost columns -inf, a non-finite frame NaN), the
  // same re-orthonormalisation as the tangent kernel's.
  void orthonormalise(int64_t c, int64_t b0, int64_t block) {
    const int64_t k = d_.k;
    for (int64_t s = 0; s < nb_; ++s) {
      double* out = block >= 0 ? a_.logs + ((c * d_.B + b0 + s) * d_.nblocks + block) * k : nullptr;
      qr_(column(s, 2), out);
    }
  }

  void store(int64_t c, int64_t b0) {
    const int64_t H = d_.H, L = d_.L, B = d_.B;
    for (int64_t s = 0; s < nb_; ++s) {
      const T* state = column(s, 0);
      const T* delta = column(s, 1);
      for (int64_t l = 0; l < L; ++l) {
        const int64_t o = ((c * L + l) * B + b0 + s) * H;
        std::copy(state + 2 * l * H, state + 2 * l * H + H, a_.hT + o);
        std::copy(state + 2 * l * H + H, state + 2 * l * H + 2 * H, a_.cT + o);
        std::copy(delta + 2 * l * H, delta + 2 * l * H + H, a_.dhT + o);
        std::copy(delta + 2 * l * H + H, delta + 2 * l * H + 2 * H, a_.dcT + o);
      }
    }
  }

  const TwinArgs<T>& a_;
  const TwinDims& d_;
  const int64_t cols_;
  int64_t M_, nb_ = 0;
  FrameQR<T> qr_;
  std::vector<T> z_, g_, coef_, xp_, xbuf_;
  std::vector<const T*> inputs_;
  FusedShape sh_;    // the fused step's tiling (lanes 0: the GEMM + pointwise path)
  T* zc_ = nullptr;  // the current state buffer: z_ or, on the fused path, z2_
  std::vector<T> z2_, wp_hh_, wp_ih_, wp_x_, fcoef_, stash_, panel_, fgates_;
};

// Sequences per work unit: about `columns` GEMM columns, but enough units for every thread.
int64_t choose_tile(const TwinDims& d, int64_t columns) {
  int64_t tile = std::max<int64_t>(1, std::min<int64_t>(d.B, (columns + d.k + 1) / (2 + d.k)));
  const int64_t threads = at::get_num_threads();
  while (tile > 1 && d.C * twin::ceil_div(d.B, tile) < 2 * threads) tile = twin::ceil_div(tile, 2);
  return tile;
}

// Flush-to-zero and denormals-are-zero for the lifetime of the object (restored after).
struct FlushDenormals {
#ifdef MDESC_TWIN_HAVE_MXCSR
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};

template <typename T>
void run_all(const TwinArgs<T>& args, int64_t columns) {
  const TwinDims& d = args.d;
  const int64_t tile = choose_tile(d, columns);
  const int64_t tiles_per_ckpt = twin::ceil_div(d.B, tile);
  at::parallel_for(0, d.C * tiles_per_ckpt, 1, [&](int64_t begin, int64_t end) {
    FlushDenormals ftz;
    TwinTileRunner<T> runner(args, tile);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t c = unit / tiles_per_ckpt;
      const int64_t b0 = (unit % tiles_per_ckpt) * tile;
      runner.run(c, b0, std::min(tile, d.B - b0));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_twin_run_cpu(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& dh0_in,
    const at::Tensor& dc0_in, const at::Tensor& q0_in, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
    int64_t cpu_tile_columns, bool portable_gemm, c10::string_view cpu_path_in) {
  const TwinDims d = twin::check_twin_inputs(x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in, dh0_in, dc0_in, q0_in,
                                             zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x_in.device().is_cpu(), "lstm_twin_run (CPU): tensors must be on the CPU");
  TORCH_CHECK(cpu_tile_columns >= 1, "lstm_twin_run: cpu_tile_columns must be >= 1, got ", cpu_tile_columns);
  const std::string cpu_path(cpu_path_in);
  TORCH_CHECK(cpu_path == "auto" || cpu_path == "fused" || cpu_path == "fused_avx2" || cpu_path == "gemm",
              "lstm_twin_run: cpu_path must be 'auto', 'fused', 'fused_avx2' or 'gemm', got '", cpu_path, "'");
  if (cpu_path == "fused_avx2") {
    TORCH_CHECK(fused_has_avx2(), "lstm_twin_run: cpu_path='fused_avx2' needs a CPU with AVX2 and FMA; use cpu_path='auto'");
  }
  if (cpu_path == "fused" || cpu_path == "fused_avx2") {
    const int64_t lanes = cpu_path == "fused_avx2" ? 32 / x_in.element_size() : fused_lanes(x_in.element_size());
    TORCH_CHECK(!portable_gemm, "lstm_twin_run: cpu_path='fused' (or 'fused_avx2') and portable_gemm=True exclude each other");
    TORCH_CHECK(lanes > 0 && d.H >= lanes, "lstm_twin_run: cpu_path='", cpu_path, "' cannot run here: ",
                lanes == 0 ? std::string("this CPU has neither AVX2+FMA nor AVX-512")
                           : "H = " + std::to_string(d.H) + " is narrower than one vector (" + std::to_string(lanes) +
                                 " lanes)",
                "; use cpu_path='auto' (it falls back to BLAS + pointwise)");
  }
  const at::Tensor lengths = lengths_in.contiguous();
  const int64_t* len = lengths.data_ptr<int64_t>();
  twin::check_twin_lengths(d, len);
  const auto opts = x_in.options();
  at::Tensor logs = at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble));
  at::Tensor hT = at::empty({d.C, d.L, d.B, d.H}, opts), cT = at::empty({d.C, d.L, d.B, d.H}, opts);
  at::Tensor dhT = at::empty({d.C, d.L, d.B, d.H}, opts), dcT = at::empty({d.C, d.L, d.B, d.H}, opts);
  std::vector<at::Tensor> keep;
  auto contiguous = [&keep](const at::Tensor& t) {
    keep.push_back(t.contiguous());
    return keep.back();
  };
  const at::Tensor x = contiguous(x_in), h0 = contiguous(h0_in), c0 = contiguous(c0_in), dh0 = contiguous(dh0_in),
                   dc0 = contiguous(dc0_in), q0 = contiguous(q0_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_twin_run_cpu", [&] {
    TwinArgs<scalar_t> args{d,
                            portable_gemm,
                            // "auto": the fused step with AVX-512 only (as the tangent kernel)
                            !portable_gemm && (cpu_path == "fused" || cpu_path == "fused_avx2" ||
                                               (cpu_path == "auto" && fused_lanes(x.element_size()) * x.element_size() == 64)),
                            cpu_path == "fused_avx2",
                            x.data_ptr<scalar_t>(),
                            len,
                            {},
                            {},
                            {},
                            h0.data_ptr<scalar_t>(),
                            c0.data_ptr<scalar_t>(),
                            dh0.data_ptr<scalar_t>(),
                            dc0.data_ptr<scalar_t>(),
                            q0.data_ptr<scalar_t>(),
                            logs.data_ptr<double>(),
                            hT.data_ptr<scalar_t>(),
                            cT.data_ptr<scalar_t>(),
                            dhT.data_ptr<scalar_t>(),
                            dcT.data_ptr<scalar_t>()};
    for (int64_t l = 0; l < d.L; ++l) {
      args.w_ih.push_back(contiguous(w_ih[l]).data_ptr<scalar_t>());
      args.w_hh.push_back(contiguous(w_hh[l]).data_ptr<scalar_t>());
      args.bias.push_back(contiguous(bias[l]).data_ptr<scalar_t>());
    }
    run_all(args, cpu_tile_columns);
  });
  return {logs, hT, cT, dhT, dcT};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdesc, CPU, m) { m.impl("lstm_twin_run", &lstm_twin_run_cpu); }

}  // namespace mdesc::cpu

#pragma GCC pop_options
