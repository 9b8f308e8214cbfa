// Column-major GEMM for the CPU kernels: the BLAS that torch itself links (MKL's or OpenBLAS's
// Fortran `sgemm_`/`dgemm_`, looked up at run time in libtorch_cpu), with a portable fallback.
//
// Looking the symbol up at run time keeps the extension loadable against any torch build: a
// torch without an exported Fortran BLAS still works, only slower.  The fallback is also what
// the kernels use when the op's portable_gemm argument is true, which the tests use to check
// both paths agree.  (CUDA's counterpart: csrc/cuda/gemm.cuh.)
#pragma once

#include <dlfcn.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace mdesc::cpu {

template <typename T>
using fortran_gemm_t = void (*)(const char*, const char*, const int*, const int*, const int*, const T*,
                                const T*, const int*, const T*, const int*, const T*, T*, const int*);

// LAPACK Householder QR: xGEQRF (factor) and xORGQR (form Q), Fortran calling convention.
template <typename T>
using fortran_geqrf_t = void (*)(const int*, const int*, T*, const int*, T*, T*, const int*, int*);
template <typename T>
using fortran_orgqr_t = void (*)(const int*, const int*, const int*, T*, const int*, const T*, T*,
                                 const int*, int*);

struct BlasTable {
  fortran_gemm_t<float> sgemm = nullptr;
  fortran_gemm_t<double> dgemm = nullptr;
  fortran_geqrf_t<float> sgeqrf = nullptr;
  fortran_geqrf_t<double> dgeqrf = nullptr;
  fortran_orgqr_t<float> sorgqr = nullptr;
  fortran_orgqr_t<double> dorgqr = nullptr;
};

inline const BlasTable& blas_table() {
  static const BlasTable table = [] {
    BlasTable t;
    // RTLD_NOLOAD: only look at the copy torch already loaded, never load another BLAS.
    for (const char* lib : {"libtorch_cpu.so", "libtorch_cpu.dylib"}) {
      void* handle = dlopen(lib, RTLD_LAZY | RTLD_NOLOAD);
      if (handle == nullptr) continue;
      t.sgemm = reinterpret_cast<fortran_gemm_t<float>>(dlsym(handle, "sgemm_"));
      t.dgemm = reinterpret_cast<fortran_gemm_t<double>>(dlsym(handle, "dgemm_"));
      t.sgeqrf = reinterpret_cast<fortran_geqrf_t<float>>(dlsym(handle, "sgeqrf_"));
      t.dgeqrf = reinterpret_cast<fortran_geqrf_t<double>>(dlsym(handle, "dgeqrf_"));
      t.sorgqr = reinterpret_cast<fortran_orgqr_t<float>>(dlsym(handle, "sorgqr_"));
      t.dorgqr = reinterpret_cast<fortran_orgqr_t<double>>(dlsym(handle, "dorgqr_"));
      if (t.sgemm != nullptr && t.dgemm != nullptr) break;
    }
    if (t.sgemm == nullptr || t.dgemm == nullptr) t = BlasTable{};
    if (!t.sgeqrf || !t.dgeqrf || !t.sorgqr || !t.dorgqr) t.sgeqrf = nullptr, t.dgeqrf = nullptr;
    return t;
  }();
  return table;
}

inline bool have_lapack() { return blas_table().sgeqrf != nullptr; }

// Householder QR in place through LAPACK: A [m x k] column-major (lda) becomes Q, tau [k] gets
// the reflector scales, diag_r [k] R's diagonal.  Returns false when no LAPACK is available (the
// caller then uses Gram-Schmidt).  work must hold `lwork` elements (see qr_workspace).
template <typename T>
bool lapack_qr(int64_t m, int64_t k, T* A, int64_t lda, T* tau, T* diag_r, T* work, int64_t lwork) {
  const BlasTable& b = blas_table();
  fortran_geqrf_t<T> geqrf;
  fortran_orgqr_t<T> orgqr;
  if constexpr (std::is_same_v<T, float>) {
    geqrf = b.sgeqrf, orgqr = b.sorgqr;
  } else {
    geqrf = b.dgeqrf, orgqr = b.dorgqr;
  }
  if (geqrf == nullptr) return false;
  const int im = static_cast<int>(m), ik = static_cast<int>(k), ilda = static_cast<int>(lda);
  const int ilwork = static_cast<int>(lwork);
  int info = 0;
  geqrf(&im, &ik, A, &ilda, tau, work, &ilwork, &info);
  for (int64_t i = 0; i < k; ++i) diag_r[i] = A[i * lda + i];
  orgqr(&im, &ik, &ik, A, &ilda, tau, work, &ilwork, &info);
  return true;
}

// Workspace size for lapack_qr on [m x k] (0 when LAPACK is unavailable).
template <typename T>
int64_t qr_workspace(int64_t m, int64_t k) {
  const BlasTable& b = blas_table();
  if (b.sgeqrf == nullptr) return 0;
  const int im = static_cast<int>(m), ik = static_cast<int>(k), lwork = -1;
  int info = 0;
  T query1 = T(0), query2 = T(0), dummy = T(0);
  if constexpr (std::is_same_v<T, float>) {
    b.sgeqrf(&im, &ik, &dummy, &im, &dummy, &query1, &lwork, &info);
    b.sorgqr(&im, &ik, &ik, &dummy, &im, &dummy, &query2, &lwork, &info);
  } else {
    b.dgeqrf(&im, &ik, &dummy, &im, &dummy, &query1, &lwork, &info);
    b.dorgqr(&im, &ik, &ik, &dummy, &im, &dummy, &query2, &lwork, &info);
  }
  return std::max<int64_t>({static_cast<int64_t>(query1), static_cast<int64_t>(query2), k});
}

// C[m x n] = alpha * op(A) * B + beta * C, column-major, op(A) = A^T when trans_a
// (A stored k x m, lda >= k) else A (stored m x k, lda >= m).  B stored k x n.
template <typename T>
void portable_gemm(bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda,
                   const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  for (int64_t j = 0; j < n; ++j) {
    T* c = C + j * ldc;
    const T* b = B + j * ldb;
    if (beta == T(0)) {
      for (int64_t i = 0; i < m; ++i) c[i] = T(0);
    } else if (beta != T(1)) {
      for (int64_t i = 0; i < m; ++i) c[i] *= beta;
    }
    if (trans_a) {
      for (int64_t i = 0; i < m; ++i) {
        const T* a = A + i * lda;
        T acc = T(0);
        for (int64_t p = 0; p < k; ++p) acc += a[p] * b[p];
        c[i] += alpha * acc;
      }
    } else {
      for (int64_t p = 0; p < k; ++p) {
        const T* a = A + p * lda;
        const T s = alpha * b[p];
        for (int64_t i = 0; i < m; ++i) c[i] += s * a[i];
      }
    }
  }
}

// The GEMM of portable_gemm, or of torch's BLAS when `portable` is false and it has one.
template <typename T>
inline void gemm(bool portable, bool trans_a, int64_t m, int64_t n, int64_t k, T alpha, const T* A, int64_t lda,
                 const T* B, int64_t ldb, T beta, T* C, int64_t ldc) {
  if (m == 0 || n == 0) return;
  fortran_gemm_t<T> f;
  if constexpr (std::is_same_v<T, float>) {
    f = blas_table().sgemm;
  } else {
    f = blas_table().dgemm;
  }
  if (portable || f == nullptr || k == 0) {
    portable_gemm(trans_a, m, n, k, alpha, A, lda, B, ldb, beta, C, ldc);
    return;
  }
  const char ta = trans_a ? 'T' : 'N', tb = 'N';
  const int im = static_cast<int>(m), in = static_cast<int>(n), ik = static_cast<int>(k);
  const int ilda = static_cast<int>(lda), ildb = static_cast<int>(ldb), ildc = static_cast<int>(ldc);
  f(&ta, &tb, &im, &in, &ik, &alpha, A, &ilda, B, &ildb, &beta, C, &ildc);
}

}  // namespace mdesc::cpu
