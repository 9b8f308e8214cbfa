// Just enough of CUDA to run mdesc's kernels, unchanged, on the CPU: every thread of a block is an
// OS thread, __syncthreads / __syncwarp are barriers, warp shuffles go through a shared array,
// cp.async copies are plain copies.  Blocks run one after another.
//
// This exists so the kernels' index arithmetic, shared-memory layout and barriers can be checked
// against the CPU kernel on a machine without a GPU (tests/test_cuda.py); it says nothing about
// speed.  It is stricter than hardware in one useful way: threads of a warp do not run in lockstep,
// so a missing __syncwarp/__syncthreads shows up as a wrong answer more readily.
#pragma once

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <stdexcept>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__
#define __align__(n) __attribute__((aligned(n)))
#define __restrict__

struct EmuDim3 {
  unsigned x = 1, y = 1, z = 1;
};
inline thread_local EmuDim3 threadIdx;
inline thread_local EmuDim3 blockIdx;
inline EmuDim3 blockDim;
inline EmuDim3 gridDim;

using std::max;  // device code calls min/max unqualified
using std::min;
using std::isfinite;  // and isfinite

struct int4 {
  int x, y, z, w;
};

// Per-block synchronisation state.
struct EmuBlock {
  std::unique_ptr<std::barrier<>> all;
  std::vector<std::unique_ptr<std::barrier<>>> warps;
  std::vector<double> lane_slot;
};
inline EmuBlock* emu_block = nullptr;

inline void __syncthreads() { emu_block->all->arrive_and_wait(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu_block->warps[threadIdx.x / 32]->arrive_and_wait(); }

inline double __shfl_xor_sync(unsigned, double v, int lane_mask) {
  const unsigned t = threadIdx.x;
  emu_block->lane_slot[t] = v;
  __syncwarp();
  const double r = emu_block->lane_slot[(t & ~31u) | ((t & 31u) ^ static_cast<unsigned>(lane_mask))];
  __syncwarp();
  return r;
}

inline void __pipeline_memcpy_async(void* dst, const void* src, size_t n) { std::memcpy(dst, src, n); }
inline void __pipeline_commit() {}
inline void __pipeline_wait_prior(size_t) {}

// Runs kernel(args...) on a grid of grid_x * grid_y blocks of `threads` threads.  `smem` points to
// the buffer the kernel's `extern __shared__` array names; it is filled with 0xFF bytes (NaN as
// float or double) before every block so that reading shared memory nobody wrote poisons results.
template <typename... KArgs, typename... Args>
void emu_launch(void (*kernel)(KArgs...), unsigned grid_x, unsigned grid_y, unsigned threads,
                unsigned char* smem, size_t smem_capacity, size_t smem_bytes, const Args&... args) {
  if (threads % 32 != 0) throw std::invalid_argument("emu_launch: threads must be a multiple of 32");
  if (smem_bytes > smem_capacity) throw std::invalid_argument("emu_launch: shared memory request too large");
  gridDim = {grid_x, grid_y, 1};
  blockDim = {threads, 1, 1};
  for (unsigned by = 0; by < grid_y; ++by) {
    for (unsigned bx = 0; bx < grid_x; ++bx) {
      std::memset(smem, 0xFF, smem_bytes);
      EmuBlock block;
      block.all = std::make_unique<std::barrier<>>(threads);
      for (unsigned w = 0; w < threads / 32; ++w) block.warps.push_back(std::make_unique<std::barrier<>>(32));
      block.lane_slot.assign(threads, 0.0);
      emu_block = &block;
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (unsigned t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          threadIdx = {t, 0, 0};
          blockIdx = {bx, by, 0};
          kernel(args...);
        });
      }
      for (auto& th : pool) th.join();
      emu_block = nullptr;
    }
  }
}
