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

struct BlasTable {
  fortran_gemm_t<float> sgemm = nullptr;
  fortran_gemm_t<double> dgemm = nullptr;
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
      if (t.sgemm != nullptr && t.dgemm != nullptr) break;
    }
    if (t.sgemm == nullptr || t.dgemm == nullptr) t = BlasTable{};
    return t;
  }();
  return table;
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
