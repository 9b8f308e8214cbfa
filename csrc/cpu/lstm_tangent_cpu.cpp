// CPU implementation of mdesc::lstm_tangent_run (schema and shapes: csrc/mdesc.cpp).
//
// The whole time loop runs here.  Work is split into units of (checkpoint, tile of sequences),
// run in parallel with at::parallel_for; each unit owns its buffers, allocated once before its
// time loop.  Inside a unit, the state and the k tangent vectors of every sequence in the tile
// sit side by side as columns of one matrix, so a step of layer l is one GEMM per weight matrix
// ([4H x H] times [H x tile*(1+k)], reading the layer's h rows of every column) plus one pass of
// pointwise work:
//
//   Z   [n, M] column-major, M = tile * (1 + k), rows [h_1, c_1, ..., h_L, c_L] (n = 2HL):
//       column s*(1+k) is sequence s's state, columns s*(1+k) + 1 .. + k its tangent frame, so a
//       sequence's frame is a contiguous [n, k] matrix for the QR.
//   G   [4H, M] gate pre-activations of the current layer.
//   XP  [4H, Tu * tile] layer-0 input projection W_ih x + bias of the driven part, computed up
//       front in one GEMM (Tu = longest drive in the tile).
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <type_traits>
#include <vector>

#include "cpu/blas.h"
#include "cpu/pointwise.h"
#include "run_checks.h"

namespace mdesc::cpu {
namespace {

// Everything a work unit reads, as raw pointers into contiguous tensors.
template <typename T>
struct RunArgs {
  RunDims d;
  const T* x;                 // [C|1, T, B, I]
  const int64_t* lengths;     // [B]
  std::vector<const T*> w_ih; // per layer [C, 4H, I_l]
  std::vector<const T*> w_hh; // per layer [C, 4H, H]
  std::vector<const T*> bias; // per layer [C, 4H]
  const T* h0;                // [C|1, L, B, H]
  const T* c0;                // [C|1, L, B, H]
  const T* q0;                // [C|1, B|1, n, k]
  double* logs;               // [C, B, nblocks, k]
  T* hT;                      // [C, L, B, H]
  T* cT;                      // [C, L, B, H]
};

template <typename T>
class TileRunner {
 public:
  TileRunner(const RunArgs<T>& a, int64_t tile)
      : a_(a), d_(a.d), cols_(1 + a.d.k), M_(tile * (1 + a.d.k)) {
    const int64_t H = d_.H;
    z_.resize(d_.n * M_);
    g_.resize(4 * H * M_);
    coef_.resize(6 * H);
    xp_.resize(4 * H * d_.T * tile);
    xbuf_.resize(d_.I * d_.T * tile);
    inputs_.resize(tile);
    if (d_.k > kMaxGramSchmidt) {
      lwork_ = qr_workspace<T>(d_.n, d_.k);
      qr_work_.resize(std::max<int64_t>(lwork_, 1));
      tau_.resize(d_.k);
      diag_.resize(d_.k);
    }
  }

  // Runs sequences [b0, b0 + nb) of checkpoint c through all S steps.
  void run(int64_t c, int64_t b0, int64_t nb) {
    nb_ = nb;
    M_ = nb * cols_;
    load_initial_state(c, b0);
    project_inputs(c, b0);
    for (int64_t t = 0; t < d_.S; ++t) {
      for (int64_t l = 0; l < d_.L; ++l) step_layer(c, b0, l, t);
      if (d_.k > 0) {
        const int64_t block = qr_block_after_step(d_, t + 1);
        if (block != -2) orthonormalise(c, b0, block);
      }
    }
    store_final_state(c, b0);
  }

 private:
  // Frames up to this many vectors use Gram-Schmidt (no call overhead); larger ones LAPACK.
  static constexpr int64_t kMaxGramSchmidt = 8;

  T* column(int64_t s, int64_t v) { return z_.data() + (s * cols_ + v) * d_.n; }

  void load_initial_state(int64_t c, int64_t b0) {
    const int64_t H = d_.H, L = d_.L, B = d_.B, n = d_.n, k = d_.k;
    const int64_t cs = d_.state_per_ckpt ? c : 0;
    const int64_t cq = d_.q_per_ckpt ? c : 0;
    for (int64_t s = 0; s < nb_; ++s) {
      const int64_t b = b0 + s;
      const int64_t bq = d_.q_per_seq ? b : 0;
      T* state = column(s, 0);
      for (int64_t l = 0; l < L; ++l) {
        const T* h = a_.h0 + ((cs * L + l) * B + b) * H;
        const T* cc = a_.c0 + ((cs * L + l) * B + b) * H;
        std::copy(h, h + H, state + 2 * l * H);
        std::copy(cc, cc + H, state + 2 * l * H + H);
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
    const int64_t I = d_.I, H4 = 4 * d_.H, B = d_.B;
    int64_t tu = 0;
    for (int64_t s = 0; s < nb_; ++s) tu = std::max(tu, a_.lengths[b0 + s]);
    const T* x = a_.x + (d_.x_per_ckpt ? c : 0) * d_.T * B * I;
    for (int64_t t = 0; t < tu; ++t) {
      std::copy(x + (t * B + b0) * I, x + (t * B + b0 + nb_) * I, xbuf_.data() + t * nb_ * I);
    }
    const T* w = a_.w_ih[0] + c * H4 * I;
    gemm<T>(true, H4, tu * nb_, I, T(1), w, I, xbuf_.data(), I, T(0), xp_.data(), H4);
    const T* bias = a_.bias[0] + c * H4;
    for (int64_t col = 0; col < tu * nb_; ++col) {
      T* p = xp_.data() + col * H4;
      for (int64_t r = 0; r < H4; ++r) p[r] += bias[r];
    }
  }

  void step_layer(int64_t c, int64_t b0, int64_t l, int64_t t) {
    const int64_t H = d_.H, H4 = 4 * H, n = d_.n;
    T* g = g_.data();
    // G = W_hh h_l (+ W_ih h_{l-1}, already updated this step), state and tangent columns alike.
    gemm<T>(true, H4, M_, H, T(1), a_.w_hh[l] + c * H4 * H, H, z_.data() + 2 * l * H, n, T(0), g, H4);
    if (l > 0) {
      gemm<T>(true, H4, M_, H, T(1), a_.w_ih[l] + c * H4 * H, H, z_.data() + 2 * (l - 1) * H, n, T(1), g,
              H4);
    }
    const T* bias = a_.bias[l] + c * H4;
    for (int64_t s = 0; s < nb_; ++s) {
      // bias only for upper layers, and for layer 0 after the sequence's drive
      const bool driven = l == 0 && t < a_.lengths[b0 + s];
      inputs_[s] = driven ? xp_.data() + (t * nb_ + s) * H4 : bias;
    }
    lstm_pointwise_tile(H, nb_, cols_, n, g, inputs_.data(), z_.data() + 2 * l * H, coef_.data());
  }

  // Orthonormalise each sequence's frame (diag R > 0) and add log R_ii to the block's logs.
  // A zero or non-finite norm yields a non-finite log, which poisons the sums (reported as NaN
  // upstream); such a frame is set to NaN so nothing downstream looks finite.
  void orthonormalise(int64_t c, int64_t b0, int64_t block) {
    const int64_t k = d_.k, n = d_.n;
    for (int64_t s = 0; s < nb_; ++s) {
      double* out = block >= 0 ? a_.logs + ((c * d_.B + b0 + s) * d_.nblocks + block) * k : nullptr;
      T* q = column(s, 1);
      bool finite = true;
      for (int64_t r = 0; r < n * k; ++r) finite &= std::isfinite(q[r]);
      if (!finite) {
        std::fill(q, q + n * k, std::numeric_limits<T>::quiet_NaN());
        if (out != nullptr) std::fill(out, out + k, std::numeric_limits<double>::quiet_NaN());
        continue;
      }
      if (k > kMaxGramSchmidt && lapack_qr<T>(n, k, q, n, tau_.data(), diag_.data(), qr_work_.data(), lwork_)) {
        for (int64_t j = 0; j < k; ++j) {
          const double r = static_cast<double>(diag_[j]);
          if (out != nullptr) out[j] += std::log(std::abs(r));
          if (r < 0) {
            for (int64_t i = 0; i < n; ++i) q[j * n + i] = -q[j * n + i];
          }
        }
      } else {
        gram_schmidt(q, out);
      }
    }
  }

  // Modified Gram-Schmidt with one re-orthogonalisation pass ("twice is enough") on the
  // contiguous frame q [n, k]; dot products accumulate in float64.
  void gram_schmidt(T* q, double* out) {
    const int64_t k = d_.k, n = d_.n;
    auto dot = [n](const T* u, const T* v) {
      double acc = 0.0;
      for (int64_t r = 0; r < n; ++r) acc += static_cast<double>(u[r]) * static_cast<double>(v[r]);
      return acc;
    };
    for (int64_t j = 0; j < k; ++j) {
      T* v = q + j * n;
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t p = 0; p < j; ++p) {
          const T* u = q + p * n;
          const T a = static_cast<T>(dot(u, v));
          for (int64_t r = 0; r < n; ++r) v[r] -= a * u[r];
        }
      }
      const double norm = std::sqrt(dot(v, v));
      if (out != nullptr) out[j] += std::log(norm);
      const T inv = static_cast<T>(1.0 / norm);
      for (int64_t r = 0; r < n; ++r) v[r] *= inv;
    }
  }

  void store_final_state(int64_t c, int64_t b0) {
    const int64_t H = d_.H, L = d_.L, B = d_.B;
    for (int64_t s = 0; s < nb_; ++s) {
      const T* state = column(s, 0);
      for (int64_t l = 0; l < L; ++l) {
        std::copy(state + 2 * l * H, state + 2 * l * H + H, a_.hT + ((c * L + l) * B + b0 + s) * H);
        std::copy(state + 2 * l * H + H, state + 2 * l * H + 2 * H, a_.cT + ((c * L + l) * B + b0 + s) * H);
      }
    }
  }

  const RunArgs<T>& a_;
  const RunDims& d_;
  const int64_t cols_;
  int64_t M_, nb_ = 0, lwork_ = 0;
  std::vector<T> z_, g_, coef_, xp_, xbuf_, qr_work_, tau_, diag_;
  std::vector<const T*> inputs_;
};

// Sequences per work unit: enough columns for an efficient GEMM (about kTileColumns), but enough
// units to keep every thread busy.  MDESC_CPU_TILE_COLUMNS overrides the target (for tuning).
int64_t choose_tile(const RunDims& d) {
  static const int64_t columns = [] {
    const char* env = std::getenv("MDESC_CPU_TILE_COLUMNS");
    const int64_t v = env != nullptr ? std::atoll(env) : 0;
    return v > 0 ? v : int64_t{48};
  }();
  int64_t tile = std::max<int64_t>(1, std::min<int64_t>(d.B, (columns + d.k) / (1 + d.k)));
  const int64_t threads = at::get_num_threads();
  while (tile > 1 && d.C * ceil_div(d.B, tile) < 2 * threads) tile = ceil_div(tile, 2);
  return tile;
}

template <typename T>
void run_all(const RunArgs<T>& args) {
  const RunDims& d = args.d;
  const int64_t tile = choose_tile(d);
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

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_tangent_run_cpu(
    const at::Tensor& x_in, const at::Tensor& lengths_in, at::TensorList w_ih, at::TensorList w_hh,
    at::TensorList bias, const at::Tensor& h0_in, const at::Tensor& c0_in, const at::Tensor& q0_in,
    int64_t zero_input_steps, int64_t warmup, int64_t qr_every) {
  const RunDims d = check_run_inputs(x_in, lengths_in, w_ih, w_hh, bias, h0_in, c0_in, q0_in,
                                     zero_input_steps, warmup, qr_every);
  TORCH_CHECK(x_in.device().is_cpu(), "lstm_tangent_run (CPU): tensors must be on the CPU");
  const at::Tensor lengths = lengths_in.contiguous();
  const int64_t* len = lengths.data_ptr<int64_t>();
  check_lengths(d, len);
  const auto opts = x_in.options();
  at::Tensor logs = at::zeros({d.C, d.B, d.nblocks, d.k}, opts.dtype(at::kDouble));
  at::Tensor hT = at::empty({d.C, d.L, d.B, d.H}, opts);
  at::Tensor cT = at::empty({d.C, d.L, d.B, d.H}, opts);
  // Keep contiguous copies alive for the duration of the run.
  std::vector<at::Tensor> keep;
  auto contiguous = [&keep](const at::Tensor& t) {
    keep.push_back(t.contiguous());
    return keep.back();
  };
  const at::Tensor x = contiguous(x_in), h0 = contiguous(h0_in), c0 = contiguous(c0_in),
                   q0 = contiguous(q0_in);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "lstm_tangent_run_cpu", [&] {
    RunArgs<scalar_t> args{d, x.data_ptr<scalar_t>(), len, {}, {}, {}, h0.data_ptr<scalar_t>(),
                           c0.data_ptr<scalar_t>(), q0.data_ptr<scalar_t>(), logs.data_ptr<double>(),
                           hT.data_ptr<scalar_t>(), cT.data_ptr<scalar_t>()};
    for (int64_t l = 0; l < d.L; ++l) {
      args.w_ih.push_back(contiguous(w_ih[l]).data_ptr<scalar_t>());
      args.w_hh.push_back(contiguous(w_hh[l]).data_ptr<scalar_t>());
      args.bias.push_back(contiguous(bias[l]).data_ptr<scalar_t>());
    }
    run_all(args);
  });
  return {logs, hT, cT};
}

}  // namespace

TORCH_LIBRARY_IMPL(mdesc, CPU, m) { m.impl("lstm_tangent_run", &lstm_tangent_run_cpu); }

}  // namespace mdesc::cpu
