// The fast re-orthonormalisation of large CPU frames (k > kMaxGramSchmidt columns; csrc/cpu/qr.h
// calls it): CholeskyQR in float64, one pass or two (CholeskyQR2), with an incremental condition
// estimate that hands every column it cannot vouch for to Gram-Schmidt.
//
// Why: Gram-Schmidt column after column (qr.h's gram_schmidt_blas) is level-2 work, 2 BLAS calls
// per column and pass; at k = 120 it ran at about a third of the core's float32 product rate.
// CholeskyQR is level-3 throughout: the Gram matrix G = A^T A, its Cholesky factor G = R^T R,
// Q = A R^-1 (on the AMD EPYC of benchmarks/results, whose BLAS runs small float64 products at
// ~45 GFLOP/s, that gained only 1.1-1.25x on full frames: benchmarks/bench_frame_qr.cpp).  Its
// weakness is the squared condition number: Q's loss of orthogonality after one pass is
// ~eps64 * kappa(A)^2 and the factorisation breaks down for kappa(A) ~ 1/sqrt(eps64).  Hence
//   * everything in float64 (a float32 frame's products are exact in float64, so its Gram matrix
//     is exact to float64 rounding), with the columns normalised first (kappa of the column-scaled
//     frame, which is what the exponents' spread produces, not their norms);
//   * while factorising, an incremental estimate of the smallest singular value of each leading
//     block of R (Bischof's ICE, O(k^2) in all) and each column's R_jj / nu_j are checked: the
//     first column j0 where R_jj / nu_j < kSafeLostFactor * lost_column_ratio<T>() or the leading
//     block's condition estimate exceeds kappa_max<T> (or the pivot is not positive) ends the
//     Cholesky part.  Columns 0 .. j0-1 are then certainly not lost (their R_jj / nu_j is well
//     above the lost-column threshold of docs/conventions.md §3, far beyond rounding) and
//     accurately orthonormalised; columns j0 .. k-1 go to Gram-Schmidt twice against the finished
//     ones, which decides the lost columns by the convention's own measurement (a lost column stops
//     everything after it at once, so a frame losing columns costs little there either);
//   * float64 frames always take two passes (CholeskyQR2: the second pass on the nearly orthonormal
//     Q1 repairs its eps64 * kappa^2 loss of orthogonality); float32 frames take one while the
//     condition estimate stays below CholeskyQrLimits::one_pass_kappa.
// Every step is a BLAS product (gemm.h) or an O(k^2 * block) loop; `portable` runs the products
// in gemm.h's loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "common/cell_math.h"  // lost_column_ratio
#include "cpu/gemm.h"

namespace mdesc::cpu {

// The limits of the Cholesky part, per frame dtype.  kappa_max: the largest condition estimate
// (of the leading, column-normalised block) a column is accepted under: CholeskyQR2 in float64 is
// then accurate (eps64 * kappa^2 ~ 1e-4 after the first pass, which the second repairs).
// one_pass_kappa: below it a float32 frame takes one pass: its R is then accurate to ~eps64 *
// kappa^2 <= eps32 * kappa (more accurate than float32 Gram-Schmidt's, ~eps32 * kappa) and Q
// orthonormal to eps64 * kappa^2 <= 1e-6 (the estimate carries a factor up to sqrt(k) ~ 11 over
// kappa, so typically ~1e-8); float64 frames always take two passes.
template <typename T>
struct CholeskyQrLimits {
  static constexpr double kappa_max = 1e6;
  static constexpr double one_pass_kappa = sizeof(T) == 4 ? 1e5 : 0.0;
};

// A column is handed to Gram-Schmidt when its R_jj / nu_j (as CholeskyQR measured it) is below
// kSafeLostFactor times the lost-column threshold: close enough that only the convention's own
// measurement may decide.
constexpr double kSafeLostFactor = 8.0;

// Columns per block of the blocked Cholesky, triangular solve and Gram matrix.
constexpr int64_t kCholeskyBlock = 24;

namespace cholesky_detail {

// Incremental condition estimation (C. Bischof, "Incremental condition estimation", SIAM J.
// Matrix Anal. Appl. 11, 1990) for the smallest singular value of the leading blocks of an upper
// triangular R: x (unit norm) with delta = |x^T R_j|; appending column (v, gamma) takes the best
// combination (s x, c) on the unit circle, the smaller eigenvector of a 2 x 2 matrix.  delta is an
// upper bound of sigma_min(R_j), usually within a small factor.
struct SmallestSingularValue {
  std::vector<double> x;
  double delta = 0.0;

  void reset(int64_t k) {
    x.assign(k, 0.0);
    delta = 0.0;
  }

  // Column j of R: v = R[0:j, j], gamma = R[j, j] > 0.  Returns the new estimate.
  double append(int64_t j, const double* v, double gamma) {
    if (j == 0) {
      x[0] = 1.0;
      return delta = gamma;
    }
    double part[4] = {0.0, 0.0, 0.0, 0.0};  // independent sums: no latency chain
    int64_t i = 0;
    for (; i + 4 <= j; i += 4)
      for (int u = 0; u < 4; ++u) part[u] += x[i + u] * v[i + u];
    for (; i < j; ++i) part[0] += x[i] * v[i];
    const double alpha = (part[0] + part[1]) + (part[2] + part[3]);
    const double a = delta * delta + alpha * alpha, b = alpha * gamma, c = gamma * gamma;
    const double half = 0.5 * (a - c), root = std::sqrt(half * half + b * b);
    const double lmax = 0.5 * (a + c) + root;
    const double lmin = lmax > 0 ? (a * c - b * b) / lmax : 0.0;  // det / lambda_max, no cancellation
    // eigenvector of lmin: (b, lmin - a) or (lmin - c, b), whichever is longer
    double s = b, t = lmin - a;
    if (std::abs(lmin - c) + std::abs(b) > std::abs(s) + std::abs(t)) s = lmin - c, t = b;
    // |(s, t)| scaled by its larger entry (not std::hypot: glibc 2.35 versioned it anew, which
    // would lift the wheel's manylinux tag past 2_34)
    const double big = std::max(std::abs(s), std::abs(t));
    const double norm = big > 0 ? big * std::sqrt((s / big) * (s / big) + (t / big) * (t / big)) : 0.0;
    if (norm > 0) {
      s /= norm, t /= norm;
    } else {  // b = 0 and lmin = a = c: either is a minimiser
      s = 1.0, t = 0.0;
    }
    for (int64_t i = 0; i < j; ++i) x[i] *= s;
    x[j] = t;
    return delta = std::sqrt(std::max(lmin, 0.0));
  }
};

// C[0:c1, c0:c1] = X[:, 0:c1]^T X[:, c0:c1] block column by block column: the upper triangle (and
// the diagonal blocks) of X^T X, X [n, m] column-major (ld n), C [m, m] (ld m).
inline void gram_upper(bool portable, int64_t n, int64_t m, const double* X, double* C) {
  for (int64_t c0 = 0; c0 < m; c0 += kCholeskyBlock) {
    const int64_t c1 = std::min(m, c0 + kCholeskyBlock);
    gemm<double>(portable, true, c1, c1 - c0, n, 1.0, X, n, X + c0 * n, n, 0.0, C + c0 * m, m);
  }
}

// Blocked right-looking Cholesky G = R^T R of the upper triangle of G [m, m] (ld m) in place,
// stopping before the first column j whose pivot R_jj is below rho_min or whose leading block's
// condition estimate sqrt(j + 1) / sigma_min exceeds kappa_max (G's diagonal is 1, so its columns
// have unit norm and sigma_max <= sqrt(j + 1)).  Returns the number j0 of columns factorised: R[0:j0,
// 0:j0] is then the Cholesky factor of G[0:j0, 0:j0]; *kappa the largest estimate accepted.
inline int64_t cholesky_upper(bool portable, int64_t m, double* G, double rho_min, double kappa_max,
                              SmallestSingularValue& ice, double* kappa) {
  constexpr int64_t nb = kCholeskyBlock;
  double rt[nb * nb];  // the diagonal block's rows of R, row-major: rt[(p - c0) * nb + (j - c0)] = R[p, j]
  ice.reset(m);
  *kappa = 1.0;
  for (int64_t c0 = 0; c0 < m; c0 += kCholeskyBlock) {
    const int64_t c1 = std::min(m, c0 + kCholeskyBlock);
    for (int64_t j = c0; j < c1; ++j) {  // the diagonal block, unblocked
      double* gj = G + j * m;
      const double d = gj[j];
      if (!(d >= rho_min * rho_min)) return j;
      const double r = std::sqrt(d);
      const double est = std::sqrt(double(j + 1)) / ice.append(j, gj, r);
      if (!(est <= kappa_max)) return j;
      *kappa = std::max(*kappa, est);
      gj[j] = r;
      const double inv = 1.0 / r;
      for (int64_t l = j + 1; l < c1; ++l) G[l * m + j] *= inv;
      for (int64_t l = j + 1; l < c1; ++l) {
        double* gl = G + l * m;
        const double rjl = gl[j];
        for (int64_t i = j + 1; i <= l; ++i) gl[i] -= G[i * m + j] * rjl;
      }
    }
    if (c1 == m) break;
    // rows c0..c1 of R right of the block: R[J, l] = R[J, J]^-T G[J, l], by forward substitution
    // whose inner loop runs along a row of R (the row-major copy rt) and the column l: contiguous
    const int64_t w = c1 - c0;
    for (int64_t p = 0; p < w; ++p)
      for (int64_t j = p; j < w; ++j) rt[p * nb + j] = G[(c0 + j) * m + c0 + p];
    for (int64_t l = c1; l < m; ++l) {
      double* gl = G + l * m + c0;
      for (int64_t p = 0; p < w; ++p) {
        const double* rp = rt + p * nb;
        const double x = gl[p] / rp[p];
        gl[p] = x;
#pragma omp simd
        for (int64_t j = p + 1; j < w; ++j) gl[j] -= rp[j] * x;
      }
    }
    // the trailing matrix: G[c1:, c1:] -= R[J, c1:]^T R[J, c1:]
    const double* rp = G + c1 * m + c0;
    gemm<double>(portable, true, m - c1, m - c1, c1 - c0, -1.0, rp, m, rp, m, 1.0, G + c1 * m + c1, m);
  }
  return m;
}

// X[:, 0:j0] <- X[:, 0:j0] R^-1 (R [j0, j0] upper triangular, ld m, in G), blocked: the products
// with the finished columns through gemm, the diagonal blocks in column loops.
inline void solve_right_upper(bool portable, int64_t n, int64_t j0, const double* R, int64_t m, double* X) {
  for (int64_t c0 = 0; c0 < j0; c0 += kCholeskyBlock) {
    const int64_t c1 = std::min(j0, c0 + kCholeskyBlock);
    if (c0 > 0) gemm<double>(portable, false, n, c1 - c0, c0, -1.0, X, n, R + c0 * m, m, 1.0, X + c0 * n, n);
    for (int64_t j = c0; j < c1; ++j) {
      double* xj = X + j * n;
      const double* rj = R + j * m;
      for (int64_t p = c0; p < j; ++p) {
        const double* xp = X + p * n;
        const double a = rj[p];
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) xj[i] -= a * xp[i];
      }
      const double inv = 1.0 / rj[j];
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) xj[i] *= inv;
    }
  }
}

}  // namespace cholesky_detail

// Which way a frame went (for tests and profiles): how many leading columns the Cholesky part
// orthonormalised, in how many passes, under which condition estimate.
struct CholeskyQrReport {
  int64_t live = 0;  // columns before the trailing exact zeros
  int64_t accepted = 0;
  int passes = 0;
  double kappa = 0.0;
};

// CholeskyQR of the leading columns of a frame q [n, k] (T, column j at q + j*n, finite): columns
// 0 .. accepted-1 are replaced by their orthonormal basis (diag R > 0) and log R_jj is added to
// out[j] (out may be nullptr).  Returns the report; columns from `accepted` on are untouched, for
// Gram-Schmidt to finish (qr.h).  Workspace kept between calls.
template <typename T>
class CholeskyQR {
 public:
  CholeskyQR(int64_t n, int64_t k, bool portable)
      : n_(n), k_(k), portable_(portable), x_(n * k), g_(k * k), nu_(k), logr_(k) {}

  CholeskyQrReport operator()(T* q, double* out) {
    using namespace cholesky_detail;
    const int64_t n = n_, k = k_;
    const double rho_min = kSafeLostFactor * lost_column_ratio<T>();
    CholeskyQrReport rep;
    // Columns lost at an earlier re-orthonormalisation are exact zeros and stay so (the tangent
    // map is linear): only the columns before them are live, and Gram-Schmidt finds the zeros lost
    // at no cost.  A frame that loses columns thus pays for its live ones only.
    int64_t live = k;
    while (live > 0 && zero_column(q + (live - 1) * n, n)) --live;
    rep.live = live;
    for (int64_t i = 0; i < n * live; ++i) x_[i] = static_cast<double>(q[i]);
    // pass 1: the column-normalised Gram matrix of the live columns
    gram_upper(portable_, n, live, x_.data(), g_.data());
    int64_t m = live;
    for (int64_t j = 0; j < live; ++j) {
      nu_[j] = std::sqrt(g_[j * live + j]);
      if (!(nu_[j] > 0.0)) {  // a zero column: Gram-Schmidt's to decide (it is lost)
        m = j;
        break;
      }
    }
    if (m < live) compact(live, m);
    for (int64_t l = 0; l < m; ++l)
      for (int64_t i = 0; i <= l; ++i) g_[l * m + i] /= nu_[i] * nu_[l];
    const int64_t j0 = cholesky_upper(portable_, m, g_.data(), rho_min, CholeskyQrLimits<T>::kappa_max, ice_,
                                      &rep.kappa);
    if (j0 == 0) return rep;
    for (int64_t j = 0; j < j0; ++j) {
      const double inv = 1.0 / nu_[j];
      double* xj = x_.data() + j * n;
      for (int64_t i = 0; i < n; ++i) xj[i] *= inv;
      logr_[j] = std::log(nu_[j]) + std::log(g_[j * m + j]);
    }
    solve_right_upper(portable_, n, j0, g_.data(), m, x_.data());
    rep.passes = 1;
    if (rep.kappa > CholeskyQrLimits<T>::one_pass_kappa) {
      if (!second_pass(j0)) return CholeskyQrReport{live, 0, 0, rep.kappa};  // q untouched: all to Gram-Schmidt
      rep.passes = 2;
    }
    for (int64_t j = 0; j < j0; ++j) {
      const double* xj = x_.data() + j * n;
      T* qj = q + j * n;
      for (int64_t i = 0; i < n; ++i) qj[i] = static_cast<T>(xj[i]);
      if (out != nullptr) out[j] += logr_[j];
    }
    rep.accepted = j0;
    return rep;
  }

 private:
  static bool zero_column(const T* v, int64_t n) {
    bool zero = true;
    for (int64_t i = 0; i < n; ++i) zero &= v[i] == T(0);
    return zero;
  }

  // Keeps the leading [m, m] block of the [k, k] Gram matrix, ld m.
  void compact(int64_t k, int64_t m) {
    for (int64_t l = 0; l < m; ++l)
      for (int64_t i = 0; i <= l; ++i) g_[l * m + i] = g_[l * k + i];
  }

  // CholeskyQR of the j0 columns of Q1 = x_: Q = Q1 R2^-1, log R2_jj added to logr_.  Q1 is
  // orthonormal to ~eps64 * kappa^2, so R2 is near I; false (give up on CholeskyQR for the frame)
  // if it is not.
  bool second_pass(int64_t j0) {
    using namespace cholesky_detail;
    const int64_t n = n_;
    gram_upper(portable_, n, j0, x_.data(), g_.data());
    double kappa = 0.0;
    // pivots near 1 expected; the estimate's sqrt(j + 1) makes 1e3 a loose bound here
    if (cholesky_upper(portable_, j0, g_.data(), 0.5, 1e3, ice_, &kappa) < j0) return false;
    for (int64_t j = 0; j < j0; ++j) logr_[j] += std::log(g_[j * j0 + j]);
    solve_right_upper(portable_, n, j0, g_.data(), j0, x_.data());
    return true;
  }

  int64_t n_, k_;
  bool portable_;
  std::vector<double> x_, g_, nu_, logr_;
  cholesky_detail::SmallestSingularValue ice_;
};

}  // namespace mdesc::cpu
