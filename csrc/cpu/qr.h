// Re-orthonormalisation of one sequence's tangent frame on the CPU (CUDA's counterpart:
// csrc/cuda/qr.cuh).  Frames of up to kMaxGramSchmidt vectors use modified Gram-Schmidt (no call
// overhead); larger ones LAPACK's Householder QR through gemm.h, when torch has one.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "cpu/gemm.h"

namespace mdesc::cpu {

constexpr int64_t kMaxGramSchmidt = 8;

// Modified Gram-Schmidt with one re-orthogonalisation pass per column ("twice is enough") on the
// contiguous frame q [n, k] (column j at q + j*n); dot products accumulate in float64.  Adds
// log R_jj to out[j] unless out is nullptr.
template <typename T>
void gram_schmidt(int64_t n, int64_t k, T* q, double* out) {
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

// Orthonormalises frames q [n, k] (diag R > 0) and adds log R_jj to out[j] (nullptr: discard).
// Owns the LAPACK workspace of one work unit.  A zero or non-finite norm yields a non-finite log,
// which poisons the sums (reported as NaN upstream); a non-finite frame is set to NaN so nothing
// downstream looks finite.
template <typename T>
class FrameQR {
 public:
  FrameQR(int64_t n, int64_t k, bool portable) : n_(n), k_(k) {
    use_lapack_ = k > kMaxGramSchmidt && !portable && have_lapack();
    if (use_lapack_) {
      lwork_ = qr_workspace<T>(n, k);
      work_.resize(std::max<int64_t>(lwork_, 1));
      tau_.resize(k);
      diag_.resize(k);
    }
  }

  void operator()(T* q, double* out) {
    const int64_t n = n_, k = k_;
    bool finite = true;
    for (int64_t r = 0; r < n * k; ++r) finite &= std::isfinite(q[r]);
    if (!finite) {
      std::fill(q, q + n * k, std::numeric_limits<T>::quiet_NaN());
      if (out != nullptr) std::fill(out, out + k, std::numeric_limits<double>::quiet_NaN());
      return;
    }
    if (use_lapack_ && lapack_qr<T>(n, k, q, n, tau_.data(), diag_.data(), work_.data(), lwork_)) {
      for (int64_t j = 0; j < k; ++j) {
        const double r = static_cast<double>(diag_[j]);
        if (out != nullptr) out[j] += std::log(std::abs(r));
        if (r < 0) {
          for (int64_t i = 0; i < n; ++i) q[j * n + i] = -q[j * n + i];
        }
      }
    } else {
      gram_schmidt(n, k, q, out);
    }
  }

 private:
  int64_t n_, k_, lwork_ = 0;
  bool use_lapack_ = false;
  std::vector<T> work_, tau_, diag_;
};

}  // namespace mdesc::cpu
