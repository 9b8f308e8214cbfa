// Instruction-set entry points of the fused layer step (csrc/cpu/fused_step.h).  Each is compiled
// for one ISA (the wheel's baseline is x86-64); the choice is made once, by the CPU the extension
// runs on.  Micro-tiles: kGates x NR vectors of accumulators, NR chosen so they and the kGates
// weight vectors fit the register file (32 vector registers with AVX-512, 16 with AVX2).
#include "cpu/fused_step.h"

namespace mdesc::cpu {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define MDESC_FUSED_X86 1
#endif

namespace {

#ifdef MDESC_FUSED_X86
enum class Isa { kNone, kAvx2, kAvx512 };

Isa detect_isa() {
  static const Isa isa = [] {
    __builtin_cpu_init();
    // The levels the code is compiled for (x86-64-v4: AVX512F/BW/CD/DQ/VL; x86-64-v3: AVX2, FMA,
    // BMI1/2, F16C, LZCNT, MOVBE), named as such from GCC 12 on.
#if __GNUC__ >= 12
    if (__builtin_cpu_supports("x86-64-v4")) return Isa::kAvx512;
    if (__builtin_cpu_supports("x86-64-v3")) return Isa::kAvx2;
#else
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512bw") &&
        __builtin_cpu_supports("avx512cd"))
      return Isa::kAvx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("bmi2"))
      return Isa::kAvx2;
#endif
    return Isa::kNone;
  }();
  return isa;
}

// The block GEMMs, one per ISA and dtype (shared by the cells).
#define MDESC_FUSED_GEMM(NAME, TARGET, T, BYTES)                                                          \
  __attribute__((target(TARGET))) void NAME(const FusedShape& sh, int64_t K, const T* wp, const T* panel,  \
                                            const T* wp2, const T* panel2, T* out) {                    \
    fused_detail::block_gemm_any<T, BYTES>(sh, K, wp, panel, wp2, panel2, out);                         \
  }
MDESC_FUSED_GEMM(gemm_f_v4, "arch=x86-64-v4", float, 64)
MDESC_FUSED_GEMM(gemm_d_v4, "arch=x86-64-v4", double, 64)
MDESC_FUSED_GEMM(gemm_f_v3, "arch=x86-64-v3", float, 32)
MDESC_FUSED_GEMM(gemm_d_v3, "arch=x86-64-v3", double, 32)
#undef MDESC_FUSED_GEMM

// The layer steps, one per ISA, cell and dtype (instantiated for every cell of the table by
// dispatch_cell).
template <class Cell, typename T>
__attribute__((target("arch=x86-64-v4"))) void step_v4(const FusedLayerStep<T>& s) {
  if constexpr (sizeof(T) == 4) {
    fused_detail::layer_step<fused_detail::TangentUpdate<Cell>, T, 64>(s, gemm_f_v4);
  } else {
    fused_detail::layer_step<fused_detail::TangentUpdate<Cell>, T, 64>(s, gemm_d_v4);
  }
}

template <class Cell, typename T>
__attribute__((target("arch=x86-64-v3"))) void step_v3(const FusedLayerStep<T>& s) {
  if constexpr (sizeof(T) == 4) {
    fused_detail::layer_step<fused_detail::TangentUpdate<Cell>, T, 32>(s, gemm_f_v3);
  } else {
    fused_detail::layer_step<fused_detail::TangentUpdate<Cell>, T, 32>(s, gemm_d_v3);
  }
}

template <typename T>
bool dispatch(CellKind cell, const FusedLayerStep<T>& s) {
  if (s.sh.lanes == 0) return false;
  const bool v4 = s.sh.bytes == 64;
  dispatch_cell(cell, [&](auto c) {
    using Cell = decltype(c);
    v4 ? step_v4<Cell, T>(s) : step_v3<Cell, T>(s);
  });
  return true;
}
#endif

}  // namespace

int64_t fused_lanes(int64_t elem_bytes) {
#ifdef MDESC_FUSED_X86
  const Isa isa = detect_isa();
  if (isa == Isa::kNone || (elem_bytes != 4 && elem_bytes != 8)) return 0;
  return (isa == Isa::kAvx512 ? 64 : 32) / elem_bytes;
#else
  (void)elem_bytes;
  return 0;
#endif
}

bool fused_has_avx2() {
#ifdef MDESC_FUSED_X86
  return detect_isa() != Isa::kNone;
#else
  return false;
#endif
}

FusedShape fused_shape(CellKind cell, int64_t H, int64_t M, int64_t elem, bool avx2) {
  FusedShape best;
#ifdef MDESC_FUSED_X86
  Isa isa = detect_isa();
  if (avx2 && isa == Isa::kAvx512) isa = Isa::kAvx2;
  if (isa == Isa::kNone || (elem != 4 && elem != 8)) return best;
  const int64_t bytes = isa == Isa::kAvx512 ? 64 : 32, lanes = bytes / elem;
  if (H < lanes) return best;  // the overlapping last unit vector needs one whole vector
  const int64_t G = cell_gates(cell) * H, vectors = (G + lanes - 1) / lanes;
  const int64_t acc = isa == Isa::kAvx512 ? 24 : 12, max_rv = isa == Isa::kAvx512 ? 5 : 3;
  double best_cost = 0;
  for (int64_t rv = 1; rv <= max_rv; ++rv) {
    const int64_t nr = rv == 5 ? 4 : acc / rv;
    const int64_t tiles = (vectors + rv - 1) / rv;
    const int64_t rows = tiles * rv * lanes, cols = (M + nr - 1) / nr * nr;
    // padded products, and a little for the loads per multiply-add away from the balanced tiles
    const double cost = double(rows) * double(cols) * (1.0 + 0.03 * double(rv > 3 ? rv - 3 : 3 - rv));
    if (best.lanes == 0 || cost < best_cost) {
      best = FusedShape{lanes, rv, nr, G, tiles, rows, bytes};
      best_cost = cost;
    }
  }
#else
  (void)cell, (void)H, (void)M, (void)elem, (void)avx2;
#endif
  return best;
}

template <typename T>
void block_gemm_dispatch(const FusedShape& sh, int64_t K, const T* wp, const T* panel, T* out, const T* wp2,
                         const T* panel2) {
#ifdef MDESC_FUSED_X86
  const bool v4 = sh.bytes == 64;
  if constexpr (sizeof(T) == 4) {
    v4 ? gemm_f_v4(sh, K, wp, panel, wp2, panel2, out) : gemm_f_v3(sh, K, wp, panel, wp2, panel2, out);
  } else {
    v4 ? gemm_d_v4(sh, K, wp, panel, wp2, panel2, out) : gemm_d_v3(sh, K, wp, panel, wp2, panel2, out);
  }
#else
  (void)sh, (void)K, (void)wp, (void)panel, (void)out, (void)wp2, (void)panel2;
#endif
}

void fused_block_gemm(const FusedShape& sh, int64_t K, const float* wp, const float* panel, float* out,
                      const float* wp2, const float* panel2) {
  block_gemm_dispatch(sh, K, wp, panel, out, wp2, panel2);
}

void fused_block_gemm(const FusedShape& sh, int64_t K, const double* wp, const double* panel, double* out,
                      const double* wp2, const double* panel2) {
  block_gemm_dispatch(sh, K, wp, panel, out, wp2, panel2);
}

bool fused_layer_step(CellKind cell, const FusedLayerStep<float>& s) {
#ifdef MDESC_FUSED_X86
  return dispatch(cell, s);
#else
  (void)cell, (void)s;
  return false;
#endif
}

bool fused_layer_step(CellKind cell, const FusedLayerStep<double>& s) {
#ifdef MDESC_FUSED_X86
  return dispatch(cell, s);
#else
  (void)cell, (void)s;
  return false;
#endif
}

}  // namespace mdesc::cpu
