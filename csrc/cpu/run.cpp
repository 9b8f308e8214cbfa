// CPU implementation of both runs, mdesc::tangent_run and mdesc::lstm_twin_run (schemas and
// shapes: csrc/mdesc.cpp; CUDA's counterpart: csrc/cuda/run.cu; the cells:
// csrc/common/cell_math.h).  One runner, TileRunner<T, Variant>; the twin is a variant of the
// tangent run (as pytorch_scatter passes its reducer as a template parameter): one more column
// per sequence, the difference to a twin, and its own pointwise math (common/twin_math.h).
//
// The whole time loop runs here.  Work is split into units of (checkpoint, tile of sequences),
// run in parallel with at::parallel_for; each unit owns its buffers, allocated once before its
// time loop.  Inside a unit, the columns of every sequence in the tile sit side by side in one
// matrix, so a step of layer l is one GEMM per weight matrix ([G x H] times [H x M], reading the
// layer's h rows of every column) plus one pass of pointwise work:
//
//   Z   [n, M] column-major, M = tile * cols, rows [h_1, c_1, ..., h_L, c_L] (LSTM, n = 2HL) or
//       [h_1, ..., h_L] (n = HL).  Sequence s owns columns s*cols .. s*cols + cols - 1: its state,
//       then (twin only) its delta = twin - state, then its k tangent vectors, so a sequence's
//       frame is a contiguous [n, k] matrix for the QR.  cols = 1 + k (tangent run), 2 + k (twin).
//   G   [G, M] gate pre-activations of the current layer (G = gates * H rows): the state's (the
//       input projection or bias is added in the pointwise pass), the delta's W dh exactly as a
//       product (bias and input cancel in a difference), the tangents' W q.
//   XP  [G, Tu * tile] layer-0 input projection W_ih x + bias of the driven part, computed up
//       front in one GEMM (Tu = longest drive in the tile).
//
// On CPUs with AVX-512 (and layers at least one vector wide; AVX2 when asked: cpu_path) the GEMM
// and the pointwise pass of a layer step are one fused pass instead (csrc/cpu/fused_step.h; the
// twin's update: csrc/cpu/fused_twin.cpp): weights packed once per work unit, G never leaves L1,
// and Z is double-buffered (the step reads zc_, writes the other buffer).  cpu_path="gemm" or
// portable_gemm keeps the two-pass step.
//
// The twin runs with flush-to-zero / denormals-are-zero (x86): a delta below the dtype's smallest
// normal number (1.2e-38 in float32) becomes 0, which also keeps a dying perturbation from
// slowing the kernel down with denormal arithmetic.
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

#if defined(__x86_64__) || defined(__SSE__)
#include <xmmintrin.h>
#define MDESC_HAVE_MXCSR 1
#endif

namespace mdesc::cpu {
namespace {

// Flush-to-zero and denormals-are-zero for the lifetime of the object (restored after).
struct FlushDenormals {
#ifdef MDESC_HAVE_MXCSR
  unsigned saved = _mm_getcsr();
  FlushDenormals() { _mm_setcsr(saved | 0x8040u); }
  ~FlushDenormals() { _mm_setcsr(saved); }
#endif
};
struct KeepDenormals {};

// The variants of the run: what differs between the tangent run and the twin.
struct TangentVariant {
  static constexpr const char* kOp = "tangent_run";
  static constexpr int64_t kDeltaColumns = 0;  // columns between the state and the frame
  static constexpr bool kPortableQr = false;   // Gram-Schmidt through BLAS unless portable_gemm
  using Denormals = KeepDenormals;
  template <typename T>
  static void pointwise(CellKind cell, int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g,
                        const T* const* in, T* z, T* coef) {
    cell_pointwise_tile(cell, H, nb, cols, n, g, in, z, coef);
  }
  template <typename T>
  static void fused(CellKind cell, const FusedLayerStep<T>& step) {
    fused_layer_step(cell, step);
  }
};

struct TwinVariant {
  static constexpr const char* kOp = "lstm_twin_run";
  static constexpr int64_t kDeltaColumns = 1;
  static constexpr bool kPortableQr = true;    // the portable Gram-Schmidt always
  using Denormals = FlushDenormals;
  template <typename T>
  static void pointwise(CellKind, int64_t H, int64_t nb, int64_t cols, int64_t n, const T* g, const T* const* in,
                        T* z, T* coef) {
    twin_pointwise_tile(H, nb, cols, n, g, in, z, coef);
  }
  template <typename T>
  static void fused(CellKind, const FusedLayerStep<T>& step) {
    fused_twin_layer_step(step);
  }
};

// Everything a work unit reads, as raw pointers into contiguous tensors.
template <typename T>
struct RunArgs {
  RunDims d;
  bool portable;              // portable GEMM and QR (the op's portable_gemm)
  bool fused;                 // the fused step (fused_step.h) where this CPU has one
  bool avx2;                  // ... with its AVX2 code even on an AVX-512 CPU (cpu_path="fused_avx2")
  const T* x;                 // [C|1, T, B, I]
  const int64_t* lengths;     // [B]
  std::vector<const T*> w_ih; // per layer [C, G, I_l]
  std::vector<const T*> w_hh; // per layer [C, G, H]
  std::vector<const T*> bias; // per layer [C, G]
  const T* h0;                // [C|1, L, B, H]
  const T* c0;                // [C|1, L, B, Hc]  (Hc = H for the LSTM, else 0)
  const T* dh0;               // twin: [C|1, L, B, H] (else nullptr)
  const T* dc0;               // twin: [C|1, L, B, H]
  const T* q0;                // [C|1, B|1, n, k]
  double* logs;               // [C, B, nblocks, k]
  T* hT;                      // [C, L, B, H]
  T* cT;                      // [C, L, B, Hc]
  T* dhT;                     // twin: [C, L, B, H]
  T* dcT;                     // twin: [C, L, B, H]
};

template <typename T, class Variant>
class TileRunner {
 public:
  static constexpr int64_t kFrame = 1 + Variant::kDeltaColumns;  // column of the first tangent vector

  TileRunner(const RunArgs<T>& a, int64_t tile)
      : a_(a), d_(a.d), cols_(kFrame + a.d.k), M_(tile * (kFrame + a.d.k)),
        qr_(a.d.n, a.d.k, Variant::kPortableQr || a.portable) {
    z_.resize(d_.n * M_);
    coef_.resize(kMaxCoefs * d_.H);
    xp_.resize(d_.G * d_.T * tile);
    xbuf_.resize(d_.I * d_.T * tile);
    inputs_.resize(tile);
    if (a.fused) sh_ = fused_shape(d_.cell, d_.H, M_, sizeof(T), a.avx2);
    if (sh_.lanes > 0) {  // the fused step (csrc/cpu/fused_step.h): its packed weights and scratch
      const int64_t packed = fused_packed_size(sh_, d_.H);
      wp_hh_.resize(d_.L * packed);
      wp_ih_.resize((d_.L - 1) * packed);
      wp_x_.resize(fused_packed_size(sh_, d_.I));
      z2_.resize(d_.n * M_);
      fcoef_.resize(tile * kMaxCoefs * d_.H);
      if (Variant::kDeltaColumns > 0) stash_.resize(tile * d_.G);
      panel_.resize(std::max<int64_t>(fused_panel_size(sh_, M_, d_.H), sh_.nr * d_.I));
      fgates_.resize(sh_.nr * sh_.Gpad);
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
    qr_.reset(nb);
    load_initial_state(c, b0);
    project_inputs(c, b0);
    if (sh_.lanes > 0) fused_pack_layers<T>(sh_, d_.L, d_.H, c, a_.w_hh, a_.w_ih, wp_hh_.data(), wp_ih_.data());
    for (int64_t t = 0; t < d_.S; ++t) {
      if (sh_.lanes > 0) {
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

  // Copies one [C|1, L, B, H] state and [.., Hc] cell state into (to_z) or out of column v.
  void copy_state(int64_t s, int64_t v, int64_t b, int64_t cs, const T* h, const T* cc, T* hout, T* cout) {
    const int64_t H = d_.H, Hc = d_.Hc, L = d_.L, B = d_.B;
    T* z = column(s, v);
    for (int64_t l = 0; l < L; ++l) {
      const int64_t o = (cs * L + l) * B + b;
      if (h != nullptr) {
        std::copy(h + o * H, h + o * H + H, z + h_row(l));
        std::copy(cc + o * Hc, cc + o * Hc + Hc, z + h_row(l) + H);
      } else {
        std::copy(z + h_row(l), z + h_row(l) + H, hout + o * H);
        std::copy(z + h_row(l) + H, z + h_row(l) + H + Hc, cout + o * Hc);
      }
    }
  }

  void load_initial_state(int64_t c, int64_t b0) {
    const int64_t B = d_.B, n = d_.n, k = d_.k;
    const int64_t cq = d_.q_per_ckpt ? c : 0;
    for (int64_t s = 0; s < nb_; ++s) {
      const int64_t b = b0 + s;
      copy_state(s, 0, b, d_.state_per_ckpt ? c : 0, a_.h0, a_.c0, nullptr, nullptr);
      if (Variant::kDeltaColumns > 0) copy_state(s, 1, b, d_.delta_per_ckpt ? c : 0, a_.dh0, a_.dc0, nullptr, nullptr);
      const int64_t bq = d_.q_per_seq ? b : 0;
      const T* q = a_.q0 + (cq * (d_.q_per_seq ? B : 1) + bq) * n * k;  // [n, k] row-major
      for (int64_t j = 0; j < k; ++j) {
        T* v = column(s, kFrame + j);
        for (int64_t r = 0; r < n; ++r) v[r] = q[r * k + j];
      }
    }
  }

  void store_final_state(int64_t c, int64_t b0) {
    for (int64_t s = 0; s < nb_; ++s) {
      copy_state(s, 0, b0 + s, c, nullptr, nullptr, a_.hT, a_.cT);
      if (Variant::kDeltaColumns > 0) copy_state(s, 1, b0 + s, c, nullptr, nullptr, a_.dhT, a_.dcT);
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
    // G = W_hh h_l (+ W_ih h_{l-1}, already updated this step), every column alike.
    gemm<T>(portable, true, Gh, M_, H, T(1), a_.w_hh[l] + c * Gh * H, H, z_.data() + h_row(l), n, T(0), g, Gh);
    if (l > 0) {
      gemm<T>(portable, true, Gh, M_, H, T(1), a_.w_ih[l] + c * Gh * H, H, z_.data() + h_row(l - 1), n, T(1),
              g, Gh);
    }
    set_inputs(c, b0, l, t);
    Variant::pointwise(d_.cell, H, nb_, cols_, n, g, inputs_.data(), z_.data() + h_row(l), coef_.data());
  }

  // One step of every layer through the fused step: reads zc_, writes the other buffer, swaps.
  void fused_step(int64_t c, int64_t b0, int64_t t) {
    const int64_t H = d_.H, packed = fused_packed_size(sh_, H);
    T* znext = zc_ == z_.data() ? z2_.data() : z_.data();
    for (int64_t l = 0; l < d_.L; ++l) {
      set_inputs(c, b0, l, t);
      FusedLayerStep<T> step{sh_, H, d_.n, M_, cols_, h_row(l), l > 0 ? h_row(l - 1) : 0,
                             wp_hh_.data() + l * packed, l > 0 ? wp_ih_.data() + (l - 1) * packed : nullptr,
                             zc_, znext, inputs_.data(), fcoef_.data(), panel_.data(), fgates_.data(),
                             stash_.empty() ? nullptr : stash_.data()};
      Variant::fused(d_.cell, step);
    }
    zc_ = znext;
  }

  // inputs_[s]: what layer l adds to sequence s's state column at step t: the input projection
  // (with bias) on driven layer-0 steps, else the bias.
  void set_inputs(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t G = d_.G;
    select_layer_inputs<T>(nb_, a_.lengths + b0, l == 0, t, xp_.data(), a_.bias[l] + c * G, G, inputs_.data());
  }

  // Orthonormalise each sequence's frame (cpu/qr.h's FrameQR: CholeskyQR in float64 and/or
  // Gram-Schmidt, diag R > 0; lost columns -inf) and add log R_jj to the block's logs (block -1:
  // discard).  Slot s: the sequence's own history of which way its frames went.
  void orthonormalise(int64_t c, int64_t b0, int64_t block) {
    for (int64_t s = 0; s < nb_; ++s) {
      double* out = block >= 0 ? a_.logs + ((c * d_.B + b0 + s) * d_.nblocks + block) * d_.k : nullptr;
      qr_(column(s, kFrame), out, s);
    }
  }

  const RunArgs<T>& a_;
  const RunDims& d_;
  const int64_t cols_;
  int64_t M_, nb_ = 0;
  FrameQR<T> qr_;
  FusedShape sh_;             // the fused step's tiling (lanes 0: the GEMM + pointwise path)
  T* zc_ = nullptr;           // the current state buffer: z_ or, on the fused path, z2_
  std::vector<T> z_, g_, coef_, xp_, xbuf_, z2_, wp_hh_, wp_ih_, wp_x_, fcoef_, stash_, panel_, fgates_;
  std::vector<const T*> inputs_;
};

// Sequences per work unit: enough columns for an efficient GEMM (about `columns`, the op's
// cpu_tile_columns), but enough units to keep every thread busy.  cols: columns per sequence.
int64_t choose_tile(const RunDims& d, int64_t cols, int64_t columns) {
  int64_t tile = std::max<int64_t>(1, std::min<int64_t>(d.B, (columns + cols - 1) / cols));
  const int64_t threads = at::get_num_threads();
  while (tile > 1 && d.C * ceil_div(d.B, tile) < 2 * threads) tile = ceil_div(tile, 2);
  return tile;
}

template <typename T, class Variant>
void run_all(const RunArgs<T>& args, int64_t tile_columns) {
  const RunDims& d = args.d;
  const int64_t tile = choose_tile(d, TileRunner<T, Variant>::kFrame + d.k, tile_columns);
  const int64_t tiles_per_ckpt = ceil_div(d.B, tile);
  at::parallel_for(0, d.C * tiles_per_ckpt, 1, [&](int64_t begin, int64_t end) {
    [[maybe_unused]] typename Variant::Denormals denormals;
    TileRunner<T, Variant> runner(args, tile);
    for (int64_t unit = begin; unit < end; ++unit) {
      const int64_t c = unit / tiles_per_ckpt;
      const int64_t b0 = (unit % tiles_per_ckpt) * tile;
      runner.run(c, b0, std::min(tile, d.B - b0));
    }
  });
}

// The CPU options of both ops (cpu_tile_columns, portable_gemm, cpu_path), checked once; returns
// whether the fused step runs.
bool check_cpu_options(const char* op, const RunDims& d, const at::Tensor& x, int64_t cpu_tile_columns,
                       bool portable_gemm, const std::string& cpu_path) {
  TORCH_CHECK(x.device().is_cpu(), op, " (CPU): tensors must be on the CPU");
  TORCH_CHECK(cpu_tile_columns >= 1, op, ": cpu_tile_columns must be >= 1, got ", cpu_tile_columns);
  TORCH_CHECK(cpu_path == "auto" || cpu_path == "fused" || cpu_path == "fused_avx2" || cpu_path == "gemm", op,
              ": cpu_path must be 'auto', 'fused', 'fused_avx2' or 'gemm', got '", cpu_path, "'");
  const int64_t elem = x.element_size();
  if (cpu_path == "fused_avx2") {
    TORCH_CHECK(fused_has_avx2(), op, ": cpu_path='fused_avx2' needs a CPU with AVX2 and FMA; use cpu_path='auto'");
  }
  if (cpu_path == "fused" || cpu_path == "fused_avx2") {
    const int64_t lanes = cpu_path == "fused_avx2" ? 32 / elem : fused_lanes(elem);
    TORCH_CHECK(!portable_gemm, op, ": cpu_path='fused' (or 'fused_avx2') and portable_gemm=True exclude each other");
    TORCH_CHECK(lanes > 0 && d.H >= lanes, op, ": cpu_path='", cpu_path, "' cannot run here: ",
                lanes == 0 ? std::string("this CPU has neither AVX2+FMA nor AVX-512")
                           : "the layers' H = " + std::to_string(d.H) + " is narrower than one vector (" +
                                 std::to_string(lanes) + " lanes)",
                "; use cpu_path='auto' (it falls back to BLAS + pointwise)");
  }
  // "auto" takes the fused step with AVX-512 only: its AVX2 code ran at half the speed of BLAS +
  // pointwise on this project's machine with MKL held to AVX2 (benchmarks/results/README.md)
  return !portable_gemm && (cpu_path == "fused" || cpu_path == "fused_avx2" ||
                            (cpu_path == "auto" && fused_lanes(elem) * elem == 64));
}

// Checks, allocates and runs one call of either op; returns (block_logs, h_T, c_T[, dh_T, dc_T]).
template <class Variant>
std::vector<at::Tensor> run_cpu(const RunInputs& in, int64_t zero_input_steps, int64_t warmup, int64_t qr_every,
                                int64_t cpu_tile_columns, bool portable_gemm, c10::string_view cpu_path) {
  const RunDims d = check_run_inputs(in, zero_input_steps, warmup, qr_every);
  const std::string path(cpu_path);
  const bool fused = check_cpu_options(in.op, d, in.x, cpu_tile_columns, portable_gemm, path);
  const at::Tensor lengths = in.lengths.contiguous();
  const int64_t* len = lengths.data_ptr<int64_t>();
  check_lengths(in.op, d, len);
  const auto opts = in.x.options();
  const bool twin = Variant::kDeltaColumns > 0;
  std::vector<at::Tensor> out{at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble)),
                              at::empty({d.C, d.L, d.B, d.H}, opts), at::empty({d.C, d.L, d.B, d.Hc}, opts)};
  if (twin) out.insert(out.end(), {at::empty({d.C, d.L, d.B, d.H}, opts), at::empty({d.C, d.L, d.B, d.H}, opts)});
  // Keep contiguous copies alive for the duration of the run.
  std::vector<at::Tensor> keep;
  auto contiguous = [&keep](const at::Tensor& t) {
    keep.push_back(t.contiguous());
    return keep.back();
  };
  const at::Tensor x = contiguous(in.x), h0 = contiguous(in.h0), c0 = contiguous(in.c0), q0 = contiguous(in.q0);
  const at::Tensor dh0 = twin ? contiguous(*in.dh0) : at::Tensor(), dc0 = twin ? contiguous(*in.dc0) : at::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "mdesc_run_cpu", [&] {
    using T = scalar_t;
    auto ptr = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<T>() : nullptr; };
    RunArgs<T> args{d, portable_gemm, fused, path == "fused_avx2", ptr(x), len, {}, {}, {}, ptr(h0), ptr(c0),
                    ptr(dh0), ptr(dc0), ptr(q0), out[0].data_ptr<double>(), ptr(out[1]), ptr(out[2]),
                    twin ? ptr(out[3]) : nullptr, twin ? ptr(out[4]) : nullptr};
    for (int64_t l = 0; l < d.L; ++l) {
      args.w_ih.push_back(ptr(contiguous(in.w_ih[l])));
      args.w_hh.push_back(ptr(contiguous(in.w_hh[l])));
      args.bias.push_back(ptr(contiguous(in.bias[l])));
    }
    run_all<T, Variant>(args, cpu_tile_columns);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> tangent_run_cpu(
    const at::Tensor& x, const at::Tensor& lengths, at::TensorList w_ih, at::TensorList w_hh, at::TensorList bias,
    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& q0, int64_t zero_input_steps, int64_t warmup,
    int64_t qr_every, c10::string_view cell, int64_t cpu_tile_columns, bool portable_gemm,
    c10::string_view /*cuda_path*/, int64_t /*cuda_max_checkpoints*/, bool /*poison_outputs*/,
    c10::string_view cpu_path) {
  const RunInputs in{TangentVariant::kOp, std::string(cell), x, lengths, w_ih, w_hh, bias, h0, c0, q0};
  auto out = run_cpu<TangentVariant>(in, zero_input_steps, warmup, qr_every, cpu_tile_columns, portable_gemm,
                                     cpu_path);
  return {out[0], out[1], out[2]};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> lstm_twin_run_cpu(
    const at::Tensor& x, const at::Tensor& lengths, at::TensorList w_ih, at::TensorList w_hh, at::TensorList bias,
    const at::Tensor& h0, const at::Tensor& c0, const at::Tensor& dh0, const at::Tensor& dc0, const at::Tensor& q0,
    int64_t zero_input_steps, int64_t warmup, int64_t qr_every, int64_t cpu_tile_columns, bool portable_gemm,
    c10::string_view cpu_path) {
  const RunInputs in{TwinVariant::kOp, LstmCell::kName, x, lengths, w_ih, w_hh, bias, h0, c0, q0, &dh0, &dc0};
  auto out = run_cpu<TwinVariant>(in, zero_input_steps, warmup, qr_every, cpu_tile_columns, portable_gemm,
                                  cpu_path);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdesc, CPU, m) {
  m.impl("tangent_run", &tangent_run_cpu);
  m.impl("lstm_twin_run", &lstm_twin_run_cpu);
}

}  // namespace mdesc::cpu
