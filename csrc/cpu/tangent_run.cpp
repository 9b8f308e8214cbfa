// CPU implementation of mdesc::tangent_run (schema and shapes: csrc/mdesc.cpp; CUDA's
// counterpart: csrc/cuda/tangent_run.cu; the cells: csrc/common/cell_math.h).
//
// The whole time loop runs here.  Work is split into units of (checkpoint, tile of sequences),
// run in parallel with at::parallel_for; each unit owns its buffers, allocated once before its
// time loop.  Inside a unit, the state and the k tangent vectors of every sequence in the tile
// sit side by side as columns of one matrix, so a step of layer l is one GEMM per weight matrix
// ([G x H] times [H x tile*(1+k)], reading the layer's h rows of every column) plus one pass of
// pointwise work:
//
//   Z   [n, M] column-major, M = tile * (1 + k), rows [h_1, c_1, ..., h_L, c_L] (LSTM, n = 2HL)
//       or [h_1, ..., h_L] (n = HL): column s*(1+k) is sequence s's state, columns
//       s*(1+k) + 1 .. + k its tangent frame, so a sequence's frame is a contiguous [n, k]
//       matrix for the QR.
//   G   [G, M] gate pre-activations of the current layer (G = gates * H rows).
//   XP  [G, Tu * tile] layer-0 input projection W_ih x + bias of the driven part, computed up
//       front in one GEMM (Tu = longest drive in the tile).
//
// On CPUs with AVX-512 (and layers at least one vector wide; AVX2 when asked: cpu_path) the GEMM
// and the pointwise pass of a layer step are one fused pass instead (csrc/cpu/fused_step.h): weights packed once per
// work unit, G never leaves L1, and Z is double-buffered (the step reads zc_, writes the other
// buffer).  cpu_path="gemm" or portable_gemm keeps the two-pass step.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <string>
#include <vector>

#include "common/run_checks.h"
#include "cpu/fused_step.h"
#include "cpu/gemm.h"
#include "cpu/input_projection.h"
#include "cpu/pointwise.h"
#include "cpu/qr.h"

namespace mdesc::cpu {
namespace {

// Everything a work unit reads, as raw pointers into contiguous tensors.
template <typename T>
struct RunArgs {
  RunDims d;
  bool portable;              // portable GEMM and QR (RunOptions::portable_gemm)
  bool fused;                 // the fused step (fused_step.h) where this CPU has one
  bool avx2;                  // ... with its AVX2 code even on an AVX-512 CPU (cpu_path="fused_avx2")
  const T* x;                 // [C|1, T, B, I]
  const int64_t* lengths;     // [B]
  std::vector<const T*> w_ih; // per layer [C, G, I_l]
  std::vector<const T*> w_hh; // per layer [C, G, H]
  std::vector<const T*> bias; // per layer [C, G]
  const T* h0;                // [C|1, L, B, H]
  const T* c0;                // [C|1, L, B, Hc]  (Hc = H for the LSTM, else 0)
  const T* q0;                // [C|1, B|1, n, k]
  double* logs;               // [C, B, nblocks, k]
  T* hT;                      // [C, L, B, H]
  T* cT;                      // [C, L, B, Hc]
};

template <typename T>
class TileRunner {
 public:
  TileRunner(const RunArgs<T>& a, int64_t tile)
      : a_(a), d_(a.d), cols_(1 + a.d.k), M_(tile * (1 + a.d.k)), qr_(a.d.n, a.d.k, a.portable) {
    z_.resize(d_.n * M_);
    coef_.resize(kMaxCoefs * d_.H);
    xp_.resize(d_.G * d_.T * tile);
    xbuf_.resize(d_.I * d_.T * tile);
    inputs_.resize(tile);
    if (a.fused) sh_ = fused_shape(d_.cell, d_.H, M_, sizeof(T), a.avx2);
    lanes_ = sh_.lanes;
    if (lanes_ > 0) {  // the fused step (csrc/cpu/fused_step.h): its packed weights and scratch
      const int64_t packed = fused_packed_size(sh_, d_.H);
      wp_hh_.resize(d_.L * packed);
      wp_ih_.resize((d_.L - 1) * packed);
      z2_.resize(d_.n * M_);
      fcoef_.resize(tile * kMaxCoefs * d_.H);
      panel_.resize(fused_panel_size(sh_, M_, d_.H));
      fgates_.resize(sh_.nr * sh_.Gpad);
      wp_x_.resize(fused_packed_size(sh_, d_.I));
      panel_.resize(std::max<int64_t>(panel_.size(), sh_.nr * d_.I));
    } else {
      g_.resize(d_.G * M_);
    }
    zc_ = z_.data();
  }

  // Runs sequences [b0, b0 + nb) of checkpoint c through all S steps.
  void run(int64_t c, int64_t b0, int64_t nb) {
    nb_ = nb;
    M_ = nb * cols_;
    zc_ = z_.data();
    load_initial_state(c, b0);
    project_inputs(c, b0);
    if (lanes_ > 0) pack_weights(c);
    for (int64_t t = 0; t < d_.S; ++t) {
      if (lanes_ > 0) {
        fused_step(c, b0, t);
      } else {
        for (int64_t l = 0; l < d_.L; ++l) step_layer(c, b0, l, t);
      }
      if (d_.k > 0) {
        const int64_t block = qr_block_after_step(d_, t + 1);
        if (block != -2) orthonormalise(c, b0, block);
      }
    }
    store_final_state(c, b0);
  }

 private:
  T* column(int64_t s, int64_t v) { return zc_ + (s * cols_ + v) * d_.n; }

  // Row of layer l's h block in Z (its c block, for the LSTM, follows at + H).
  int64_t h_row(int64_t l) const { return d_.halves * l * d_.H; }

  void load_initial_state(int64_t c, int64_t b0) {
    const int64_t H = d_.H, Hc = d_.Hc, L = d_.L, B = d_.B, n = d_.n, k = d_.k;
    const int64_t cs = d_.state_per_ckpt ? c : 0;
    const int64_t cq = d_.q_per_ckpt ? c : 0;
    for (int64_t s = 0; s < nb_; ++s) {
      const int64_t b = b0 + s;
      const int64_t bq = d_.q_per_seq ? b : 0;
      T* state = column(s, 0);
      for (int64_t l = 0; l < L; ++l) {
        const T* h = a_.h0 + ((cs * L + l) * B + b) * H;
        const T* cc = a_.c0 + ((cs * L + l) * B + b) * Hc;
        std::copy(h, h + H, state + h_row(l));
        std::copy(cc, cc + Hc, state + h_row(l) + H);
      }
      const T* q = a_.q0 + (cq * (d_.q_per_seq ? B : 1) + bq) * n * k;  // [n, k] row-major
      for (int64_t j = 0; j < k; ++j) {
        T* v = column(s, 1 + j);
        for (int64_t r = 0; r < n; ++r) v[r] = q[r * k + j];
      }
    }
  }

  // XP[:, t * nb + s] = W_ih[0] x[t, b0 + s] + bias[0] for t < longest drive in the tile.
  void project_inputs(int64_t c, int64_t b0) {
    const int64_t I = d_.I, G = d_.G;
    int64_t tu = 0;
    for (int64_t s = 0; s < nb_; ++s) tu = std::max(tu, a_.lengths[b0 + s]);
    const T* x = a_.x + (d_.x_per_ckpt ? c : 0) * d_.T * d_.B * I;
    cpu::project_inputs<T>(sh_, a_.portable, x, d_.B, I, b0, nb_, tu, a_.w_ih[0] + c * G * I, a_.bias[0] + c * G,
                           G, {xbuf_.data(), wp_x_.data(), panel_.data(), fgates_.data()}, xp_.data());
  }

  void step_layer(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t H = d_.H, Gh = d_.G, n = d_.n;
    const bool portable = a_.portable;
    T* g = g_.data();
    // G = W_hh h_l (+ W_ih h_{l-1}, already updated this step), state and tangent columns alike.
    gemm<T>(portable, true, Gh, M_, H, T(1), a_.w_hh[l] + c * Gh * H, H, z_.data() + h_row(l), n, T(0), g, Gh);
    if (l > 0) {
      gemm<T>(portable, true, Gh, M_, H, T(1), a_.w_ih[l] + c * Gh * H, H, z_.data() + h_row(l - 1), n, T(1),
              g, Gh);
    }
    set_inputs(c, b0, l, t);
    cell_pointwise_tile(d_.cell, H, nb_, cols_, n, g, inputs_.data(), z_.data() + h_row(l), coef_.data());
  }

  // The fused path's weights of checkpoint c, packed once per work unit (all layers).
  void pack_weights(int64_t c) {
    fused_pack_layers<T>(sh_, d_.L, d_.H, c, a_.w_hh, a_.w_ih, wp_hh_.data(), wp_ih_.data());
  }

  // One step of every layer through the fused step: reads zc_, writes the other buffer, swaps.
  void fused_step(int64_t c, int64_t b0, int64_t t) {
    const int64_t H = d_.H, packed = fused_packed_size(sh_, H);
    T* znext = zc_ == z_.data() ? z2_.data() : z_.data();
    for (int64_t l = 0; l < d_.L; ++l) {
      set_inputs(c, b0, l, t);
      FusedLayerStep<T> step{sh_, H, d_.n, M_, cols_, h_row(l), l > 0 ? h_row(l - 1) : 0,
                             wp_hh_.data() + l * packed, l > 0 ? wp_ih_.data() + (l - 1) * packed : nullptr,
                             zc_, znext, inputs_.data(), fcoef_.data(), panel_.data(), fgates_.data()};
      fused_layer_step(d_.cell, step);
    }
    zc_ = znext;
  }

  // inputs_[s]: what layer l adds to sequence s's state column at step t: the input projection
  // (with bias) on driven layer-0 steps, else the bias.
  void set_inputs(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t G = d_.G;
    select_layer_inputs<T>(nb_, a_.lengths + b0, l == 0, t, xp_.data(), a_.bias[l] + c * G, G, inputs_.data());
  }


  // Orthonormalise each sequence's frame and add log R_jj to the block's logs (block -1: discard).
  void orthonormalise(int64_t c, int64_t b0, int64_t block) {
    for (int64_t s = 0; s < nb_; ++s) {
      double* out = block >= 0 ? a_.logs + ((c * d_.B + b0 + s) * d_.nblocks + block) * d_.k : nullptr;
      qr_(column(s, 1), out);
    }
  }

  void store_final_state(int64_t c, int64_t b0) {
    const int64_t H = d_.H, Hc = d_.Hc, L = d_.L, B = d_.B;
    for (int64_t s = 0; s < nb_; ++s) {
      const T* state = column(s, 0);
      for (int64_t l = 0; l < L; ++l) {
        const T* h = state + h_row(l);
        std::copy(h, h + H, a_.hT + ((c * L + l) * B + b0 + s) * H);
        std::copy(h + H, h + H + Hc, a_.cT + ((c * L + l) * B + b0 + s) * Hc);
      }
    }
  }

  const RunArgs<T>& a_;
  const RunDims& d_;
  const int64_t cols_;
  int64_t M_, nb_ = 0;
  FrameQR<T> qr_;
  FusedShape sh_;             // the fused step's tiling (lanes 0: the GEMM + pointwise path)
  int64_t lanes_ = 0;
  T* zc_ = nullptr;           // the current state buffer: z_ or, on the fused path, z2_
  std::vector<T> z_, g_, coef_, xp_, xbuf_, z2_, wp_hh_, wp_ih_, fcoef_, panel_, fgates_, wp_x_;
  std::vector<const T*> inputs_;
};

// Sequences per work unit: enough columns for an efficient GEMM (about `columns`, the op's
// cpu_tile_columns), but enough units to keep every thread busy.
int64_t choose_tile(const RunDims& d, int64_t columns) {
  int64_t tile = std::max<int64_t>(1, std::min<int64_t>(d.B, (columns + d.k) / (1 + d.k)));
  const int64_t threads = at::get_num_threads();
  while (tile > 1 && d.C * ceil_div(d.B, tile) < 2 * threads) tile = ceil_div(tile, 2);
  return tile;
}

template <typename T>
void run_all(const RunArgs<T>& args, int64_t tile_columns) {
  const RunDims& d = args.d;
  const int64_t tile = choose_tile(d, tile_columns);
  const int64_t tiles_per_ckpt = ceil_div(d.B, tile);
  at::parallel_for(0, d.C * tiles_per_ckpt, 1, [&](int64_t begin, int64_t end) {
    TileRunner<T> runner(args, tile);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t c = unit / tiles_per_ckpt;
      const int64_t b0 = (unit % tiles_per_ckpt) * tile;
      runner.run(c, b0, std::min(tile, d.B - b0));
    }
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tangent_run_cpu(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& q0_in,
    int64_t zero_input_steps, int64_t warmup, int64_t qr_every, c10::string_view cell,
    int64_t cpu_tile_columns, bool portable_gemm, c10::string_view /*cuda_path*/,
    int64_t /*cuda_max_checkpoints*/, bool /*poison_outputs*/, c10::string_view cpu_path_in) {
  const RunDims d = check_run_inputs(std::string(cell), x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in,
                                     q0_in, zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x_in.device().is_cpu(), "tangent_run (CPU): tensors must be on the CPU");
  TORCH_CHECK(cpu_tile_columns >= 1, "tangent_run: cpu_tile_columns must be >= 1, got ", cpu_tile_columns);
  const std::string cpu_path(cpu_path_in);
  TORCH_CHECK(cpu_path == "auto" || cpu_path == "fused" || cpu_path == "fused_avx2" || cpu_path == "gemm",
              "tangent_run: cpu_path must be 'auto', 'fused', 'fused_avx2' or 'gemm', got '", cpu_path, "'");
  // "auto" takes the fused step with AVX-512 only: its AVX2 code ran at half the speed of BLAS +
  // pointwise on this project's machine with MKL held to AVX2 (benchmarks/results/README.md)
  const bool fused = !portable_gemm && (cpu_path == "fused" || cpu_path == "fused_avx2" ||
                                        (cpu_path == "auto" && fused_lanes(x_in.element_size()) * x_in.element_size() == 64));
  if (cpu_path == "fused_avx2") {
    TORCH_CHECK(fused_has_avx2(), "tangent_run: cpu_path='fused_avx2' needs a CPU with AVX2 and FMA; use cpu_path='auto'");
  }
  if (cpu_path == "fused" || cpu_path == "fused_avx2") {
    const int64_t lanes = cpu_path == "fused_avx2" ? 32 / x_in.element_size() : fused_lanes(x_in.element_size());
    TORCH_CHECK(!portable_gemm, "tangent_run: cpu_path='fused' (or 'fused_avx2') and portable_gemm=True exclude each other");
    TORCH_CHECK(lanes > 0 && d.H >= lanes, "tangent_run: cpu_path='", cpu_path, "' cannot run here: ",
                lanes == 0 ? std::string("this CPU has neither AVX2+FMA nor AVX-512")
                           : "the layers' H = " + std::to_string(d.H) + " is narrower than one vector (" +
                                 std::to_string(lanes) + " lanes)",
                "; use cpu_path='auto' (it falls back to BLAS + pointwise)");
  }
  const at::Tensor lengths = lengths_in.contiguous();
  const int64_t* len = lengths.data_ptr<int64_t>();
  check_lengths(d, len);
  const auto opts = x_in.options();
  at::Tensor logs = at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble));
  at::Tensor hT = at::empty({d.C, d.L, d.B, d.H}, opts);
  at::Tensor cT = at::empty({d.C, d.L, d.B, d.Hc}, opts);
  // Keep contiguous copies alive for the duration of the run.
  std::vector<at::Tensor> keep;
  auto contiguous = [&keep](const at::Tensor& t) {
    keep.push_back(t.contiguous());
    return keep.back();
  };
  const at::Tensor x = contiguous(x_in), h0 = contiguous(h0_in), c0 = contiguous(c0_in),
                   q0 = contiguous(q0_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "tangent_run_cpu", [&] {
    RunArgs<scalar_t> args{d, portable_gemm, fused, cpu_path == "fused_avx2", x.data_ptr<scalar_t>(), len, {}, {}, {}, h0.data_ptr<scalar_t>(),
                           c0.data_ptr<scalar_t>(), q0.data_ptr<scalar_t>(), logs.data_ptr<double>(),
                           hT.data_ptr<scalar_t>(), cT.data_ptr<scalar_t>()};
    for (int64_t l = 0; l < d.L; ++l) {
      args.w_ih.push_back(contiguous(w_ih[l]).data_ptr<scalar_t>());
      args.w_hh.push_back(contiguous(w_hh[l]).data_ptr<scalar_t>());
      args.bias.push_back(contiguous(bias[l]).data_ptr<scalar_t>());
    }
    run_all(args, cpu_tile_columns);
  });
  return {logs, hT, cT};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdesc, CPU, m) { m.impl("tangent_run", &tangent_run_cpu); }

}  // namespace mdesc::cpu
