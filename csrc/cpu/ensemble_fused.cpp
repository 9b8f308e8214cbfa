// Instruction-set entry points of the fused ensemble path (csrc/cpu/ensemble_fused.h): each block
// function is compiled inside a function for AVX-512 or AVX2, chosen by the tiling's vector
// bytes (fused_shape picked them from the CPU the extension runs on).
#include "cpu/ensemble_fused.h"

#include <c10/util/Exception.h>

namespace mdesc::cpu {

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
namespace {

template <class Cell, typename T>
__attribute__((target("arch=x86-64-v4"))) void forward_v4(const EnsembleBlock<T>& b) {
  ensemble_detail::forward_block<Cell, T, 64>(b);
}
template <class Cell, typename T>
__attribute__((target("arch=x86-64-v3"))) void forward_v3(const EnsembleBlock<T>& b) {
  ensemble_detail::forward_block<Cell, T, 32>(b);
}
template <class Cell, typename T>
__attribute__((target("arch=x86-64-v4"))) void backward_v4(const EnsembleBlock<T>& b) {
  ensemble_detail::backward_block<Cell, T, 64>(b);
}
template <class Cell, typename T>
__attribute__((target("arch=x86-64-v3"))) void backward_v3(const EnsembleBlock<T>& b) {
  ensemble_detail::backward_block<Cell, T, 32>(b);
}

template <typename T>
void forward_any(int cell, const EnsembleBlock<T>& b) {
  EnsembleCells::dispatch(cell, [&](auto c) {
    using Cell = decltype(c);
    b.sh.bytes == 64 ? forward_v4<Cell, T>(b) : forward_v3<Cell, T>(b);
  });
}

template <typename T>
void backward_any(int cell, const EnsembleBlock<T>& b) {
  EnsembleCells::dispatch(cell, [&](auto c) {
    using Cell = decltype(c);
    b.sh.bytes == 64 ? backward_v4<Cell, T>(b) : backward_v3<Cell, T>(b);
  });
}

}  // namespace

void ensemble_forward_block(int cell, const EnsembleBlock<float>& b) { forward_any(cell, b); }
void ensemble_forward_block(int cell, const EnsembleBlock<double>& b) { forward_any(cell, b); }
void ensemble_backward_block(int cell, const EnsembleBlock<float>& b) { backward_any(cell, b); }
void ensemble_backward_block(int cell, const EnsembleBlock<double>& b) { backward_any(cell, b); }

#else  // no fused path: fused_lanes() is 0 here, so ensemble.cpp never calls these

template <typename T>
void no_fused_path(const EnsembleBlock<T>&) {
  TORCH_INTERNAL_ASSERT(false, "the fused ensemble path needs x86-64 with GCC");
}
void ensemble_forward_block(int, const EnsembleBlock<float>& b) { no_fused_path(b); }
void ensemble_forward_block(int, const EnsembleBlock<double>& b) { no_fused_path(b); }
void ensemble_backward_block(int, const EnsembleBlock<float>& b) { no_fused_path(b); }
void ensemble_backward_block(int, const EnsembleBlock<double>& b) { no_fused_path(b); }
#endif

}  // namespace mdesc::cpu
