// Re-orthonormalisation of one tangent frame on the CPU, alone: csrc/cpu/qr.h's FrameQR for frames
// of k > 8 columns (CholeskyQR in float64 + Gram-Schmidt for the columns it leaves,
// csrc/cpu/cholesky_qr.h) against the column-by-column Gram-Schmidt twice through BLAS that it
// replaced (gram_schmidt_blas), best of `reps` calls on one thread, for n = k = 120 (case c's
// frame) with `live` leading random columns (the rest exact zeros: columns lost earlier) and for
// frames with singular values spread over `decades`.  Build and run (against torch's BLAS):
//
//   TL=$(python -c 'import torch, os; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
//   g++ -O3 -std=c++20 -fopenmp -Icsrc -I$TL/../include benchmarks/bench_frame_qr.cpp -o /tmp/bench_frame_qr \
//       -L$TL -Wl,--no-as-needed -ltorch_cpu -lc10 -Wl,-rpath,$TL && OMP_NUM_THREADS=1 /tmp/bench_frame_qr
#include <chrono>
#include <cstdio>
#include <random>

#include "cpu/qr.h"

using namespace mdesc::cpu;

template <class F>
double best_us(int reps, F&& f) {
  double best = 1e30;
  for (int r = 0; r < reps; ++r) {
    const auto t0 = std::chrono::steady_clock::now();
    f();
    best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count());
  }
  return best * 1e6;
}

// A [n, k]: `live` columns of U diag(s) V^T with s log-spaced over `decades`, the rest zero.
template <typename T>
std::vector<T> frame(int n, int k, int live, double decades, int seed) {
  std::mt19937 rng(seed);
  std::normal_distribution<double> nd;
  std::vector<double> u(n * n), v(k * k), c(n);
  std::vector<double> o(n);
  for (auto& x : u) x = nd(rng);
  for (auto& x : v) x = nd(rng);
  gram_schmidt(n, n, u.data(), o.data());
  gram_schmidt(k, k, v.data(), o.data());
  std::vector<T> a(n * k, T(0));
  for (int j = 0; j < live; ++j)
    for (int p = 0; p < std::min(n, k); ++p) {
      const double s = std::pow(10.0, -decades * p / std::max(1, std::min(n, k) - 1)) * v[p * k + j];
      for (int i = 0; i < n; ++i) a[j * n + i] += static_cast<T>(u[p * n + i] * s);
    }
  return a;
}

template <typename T>
void row(int live, double decades, int reps) {
  const int n = 120, k = 120;
  const std::vector<T> a = frame<T>(n, k, live, decades, 1);
  std::vector<T> q(a), coef(k);
  std::vector<double> out(k);
  FrameQR<T> qr(n, k, false);
  const double t_new = best_us(reps, [&] { q = a; qr(q.data(), out.data()); });
  const CholeskyQrReport rep = qr.last_report();
  const double t_gs = best_us(reps, [&] { q = a; gram_schmidt_blas(n, k, q.data(), out.data(), coef.data(), false); });
  std::printf("| %s | %d | %.0f | %.1f | %ld | %d | %.1f | %.2fx |\n", sizeof(T) == 4 ? "float32" : "float64", live,
              decades, t_new, static_cast<long>(rep.accepted), rep.passes, t_gs, t_gs / t_new);
}

int main() {
  std::printf("| frame | live columns | decades | FrameQR (us) | Cholesky columns | passes | Gram-Schmidt (us) | speed-up |\n");
  std::printf("|---|---:|---:|---:|---:|---:|---:|---:|\n");
  for (int live : {30, 60, 90, 120}) {
    row<float>(live, 2.0, 100);
    row<double>(live, 2.0, 100);
  }
  for (double decades : {5.0, 10.0}) {
    row<float>(120, decades, 100);
    row<double>(120, decades, 100);
  }
  return 0;
}
