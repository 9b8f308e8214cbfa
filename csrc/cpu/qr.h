// Re-orthonormalisation of one sequence's tangent frame on the CPU (CUDA's counterpart:
// csrc/cuda/qr.cuh), and the lost-column rule of docs/conventions.md §3 ("Singular tangent maps").
// Frames of up to kMaxGramSchmidt vectors use modified Gram-Schmidt in scalar loops (no call
// overhead); larger ones CholeskyQR in float64 (csrc/cpu/cholesky_qr.h) for the leading columns it
// can vouch for, then classical Gram-Schmidt twice with its products through gemm.h's BLAS for
// the rest (none, for a well-conditioned frame).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <memory>
#include <vector>

#include "common/cell_math.h"  // lost_column_ratio, column_lost
#include "cpu/cholesky_qr.h"
#include "cpu/gemm.h"

namespace mdesc::cpu {

constexpr int64_t kMaxGramSchmidt = 8;

// Gram-Schmidt on the contiguous frame q [n, k] (column j at q + j*n), column after column from
// column `first` on (the earlier ones already orthonormal): project(j, v) removes from column v
// the components along the j finished columns (twice: "twice is enough"), then v is normalised.
// Adds log R_jj to out[j] unless out is nullptr.  A lost column (common/cell_math.h::column_lost)
// and every later one are set to zero and get log R_jj = -inf.  Norms accumulate in float64.  q
// must be finite.
template <typename T, class Project>
void gram_schmidt_columns(int64_t n, int64_t k, T* q, double* out, Project&& project, int64_t first = 0) {
  auto norm = [n](const T* v) {
    double acc = 0.0;
#pragma omp simd reduction(+ : acc)
    for (int64_t r = 0; r < n; ++r) acc += static_cast<double>(v[r]) * static_cast<double>(v[r]);
    return std::sqrt(acc);
  };
  const double ratio = lost_column_ratio<T>();
  bool lost = false;
  for (int64_t j = first; j < k; ++j) {
    T* v = q + j * n;
    if (!lost) {
      const double nu = norm(v);
      if (j > 0) project(j, v);
      const double r = norm(v);
      lost = column_lost(r, nu, ratio);
      if (!lost) {
        if (out != nullptr) out[j] += std::log(r);
        const T inv = static_cast<T>(1.0 / r);
        for (int64_t i = 0; i < n; ++i) v[i] *= inv;
        continue;
      }
    }
    std::fill(v, v + n, T(0));
    if (out != nullptr) out[j] = -std::numeric_limits<double>::infinity();
  }
}

// Modified Gram-Schmidt, run twice, in scalar loops (dot products in float64): small frames.
template <typename T>
void gram_schmidt(int64_t n, int64_t k, T* q, double* out) {
  gram_schmidt_columns(n, k, q, out, [n, q](int64_t j, T* v) {
    for (int pass = 0; pass < 2; ++pass) {
      for (int64_t p = 0; p < j; ++p) {
        const T* u = q + p * n;
        double d = 0.0;
        for (int64_t r = 0; r < n; ++r) d += static_cast<double>(u[r]) * static_cast<double>(v[r]);
        const T a = static_cast<T>(d);
        for (int64_t r = 0; r < n; ++r) v[r] -= a * u[r];
      }
    }
  });
}

// Classical Gram-Schmidt run twice ("CGS2", as stable as MGS2), the projections as BLAS products
// (gemm.h): column j's coefficients against the j finished columns, then its update, twice.  Same
// results as gram_schmidt to rounding, at BLAS speed for large frames.  a: workspace of k elements.
template <typename T>
void gram_schmidt_blas(int64_t n, int64_t k, T* q, double* out, T* a, bool portable, int64_t first = 0) {
  gram_schmidt_columns(
      n, k, q, out,
      [n, q, a, portable](int64_t j, T* v) {
        for (int pass = 0; pass < 2; ++pass) {
          gemm<T>(portable, true, j, 1, n, T(1), q, n, v, n, T(0), a, j);     // a = Q_<j^T v
          gemm<T>(portable, false, n, 1, j, T(-1), q, n, a, j, T(1), v, n);   // v -= Q_<j a
        }
      },
      first);
}

// Orthonormalises frames q [n, k] (diag R > 0) and adds log R_jj to out[j] (nullptr: discard):
// Gram-Schmidt twice, column after column, so a column's R_jj is measured against the finished
// earlier columns and exact zeros of the frame stay exact (a dead unit's row): the lost-column
// rule (common/cell_math.h::column_lost) then decides the same on every CPU, as the CUDA kernels'
// Gram-Schmidt does.  (Householder QR, used here before, mixes every row into every column and
// left rounding noise of ~100 eps in the R_jj of an exactly dependent column.)  A lost column and
// every later one are set to zero and get log R_jj = -inf; a non-finite frame is set to NaN and
// gets NaN logs, so nothing downstream looks finite.  Frames of up to kMaxGramSchmidt vectors (or
// with `portable`) run the scalar loops, larger ones first CholeskyQR (cholesky_qr.h: it takes
// only columns whose R_jj / nu_j is far above the lost-column threshold, so it never decides a
// lost column, and CholeskyQR too keeps exact zero rows exact: Q = A R^-1 mixes columns, not
// rows), then the BLAS products of Gram-Schmidt for the columns it left.  A frame whose Cholesky
// part stopped short of its live columns (ill-conditioned: exponents far apart, or a column about
// to be lost) makes the next kGramSchmidtFrames frames of the same sequence (`slot`) skip it:
// the spread of the exponents persists from block to block, and Gram-Schmidt, which stops at the
// first lost column, is then the faster (benchmarks/bench_frame_qr.cpp).  Which way a frame goes
// changes its logs by rounding only, and depends on nothing but the sequence's own frames.
template <typename T>
class FrameQR {
 public:
  FrameQR(int64_t n, int64_t k, bool portable) : n_(n), k_(k), portable_(portable) {
    use_blas_ = k > kMaxGramSchmidt && !portable;
    if (use_blas_) {
      coef_.resize(k);
      cholesky_ = std::make_unique<CholeskyQR<T>>(n, k, portable);
    }
  }

  static constexpr int kGramSchmidtFrames = 8;

  // How the last frame went through the Cholesky part (accepted 0 on the scalar path).
  const CholeskyQrReport& last_report() const { return report_; }

  // Forgets the sequences' histories; slots 0 .. slots-1 may be passed to operator() after it.
  void reset(int64_t slots) { skip_.assign(slots, 0); }

  // slot: the sequence q belongs to (-1: none, no history).
  void operator()(T* q, double* out, int64_t slot = -1) {
    const int64_t n = n_, k = k_;
    bool finite = true;
    for (int64_t r = 0; r < n * k; ++r) finite &= std::isfinite(q[r]);
    if (!finite) {
      std::fill(q, q + n * k, std::numeric_limits<T>::quiet_NaN());
      if (out != nullptr) std::fill(out, out + k, std::numeric_limits<double>::quiet_NaN());
      return;
    }
    if (use_blas_) {
      if (slot >= 0 && skip_[slot] > 0) {
        --skip_[slot];
        report_ = CholeskyQrReport{};
      } else {
        report_ = (*cholesky_)(q, out);
        if (slot >= 0 && report_.accepted < report_.live) skip_[slot] = kGramSchmidtFrames;
      }
      if (report_.accepted < k) gram_schmidt_blas(n, k, q, out, coef_.data(), portable_, report_.accepted);
    } else {
      gram_schmidt(n, k, q, out);
    }
  }

 private:
  int64_t n_, k_;
  bool portable_, use_blas_ = false;
  std::vector<T> coef_;
  std::unique_ptr<CholeskyQR<T>> cholesky_;
  CholeskyQrReport report_;
  std::vector<int> skip_;  // per slot: frames left to send to Gram-Schmidt directly
};

}  // namespace mdesc::cpu
