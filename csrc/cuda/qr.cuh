// Re-orthonormalisation of tangent frames on the GPU (the CPU's counterpart: csrc/cpu/qr.h),
// shared by the two CUDA paths of mdesc::tangent_run (schema and shapes: csrc/mdesc.cpp).
//
// Both paths keep the state and the k tangent vectors of a group of sequences side by side as
// columns of one row-major matrix per layer and per half (h, and c for the LSTM):
//
//   Z[l], Cm[l]   [H, ld]   row u = hidden unit u of layer l.  Columns:
//                           s                      state (h or c) of sequence s, s < nseq
//                           nseq + s * k + j       tangent vector j of sequence s, restricted to
//                                                  layer l's h (or c) block
//
// (the fused path has one such matrix per thread block in shared memory, nseq = its tile of
// sequences; the stepwise path one per checkpoint in global memory, nseq = B).  States first
// lets the pointwise pass handle all states before any tangent that needs their gate values.
// A tangent vector is thus spread over the blocks [h_1, c_1, ..., h_L, c_L] (cells without a c
// state: [h_1, ..., h_L]), the row order of q0.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "common/cell_math.h"  // lost_column_ratio, column_lost

namespace mdesc::cuda_impl {

constexpr int kWarpSize = 32;

// The tangent frame of a group of sequences inside the Z / Cm matrices described above.
// Element (l, half, u, col) lives at (half ? cm : z)[l * lstride + u * ld + col].
template <typename T>
struct FrameView {
  T* z;             // layer 0's h-matrix
  T* cm;            // layer 0's c-matrix, nullptr for cells without a c state
  int64_t ld;       // row stride (elements)
  int64_t lstride;  // layer stride (elements)
  int H;
  int L;
};

template <typename T>
__device__ __forceinline__ double warp_sum(double v) {
#pragma unroll
  for (int off = kWarpSize / 2; off > 0; off /= 2) v += __shfl_xor_sync(0xffffffffu, v, off);
  return v;
}

// Calls fn(row) for every row of the frame this lane owns (whole warp): lane q gets the h (and
// then c) rows of units u = q, q + 32, ... of every layer, in that order; element col of a row is
// row[col].  So a warp reading columns it has just written through these helpers sees its own
// writes.
template <typename T, class F>
__device__ __forceinline__ void frame_rows(const FrameView<T>& f, F&& fn) {
  const int lane = threadIdx.x % kWarpSize;
  for (int l = 0; l < f.L; ++l) {
    T* zb = f.z + l * f.lstride;
    T* cb = f.cm != nullptr ? f.cm + l * f.lstride : nullptr;
    for (int u = lane; u < f.H; u += kWarpSize) {
      const int64_t r = u * f.ld;
      fn(zb + r);
      if (cb != nullptr) fn(cb + r);
    }
  }
}

// Dot product of frame columns ca and cb over all n rows, accumulated in float64.  Called by a
// whole warp; every lane gets the result.
template <typename T>
__device__ double frame_dot(const FrameView<T>& f, int64_t ca, int64_t cb) {
  double acc = 0.0;
  frame_rows(f, [&](T* row) { acc += static_cast<double>(row[ca]) * static_cast<double>(row[cb]); });
  return warp_sum<T>(acc);
}

// column cy -= alpha * column cx   (whole warp)
template <typename T>
__device__ void frame_axpy(const FrameView<T>& f, T alpha, int64_t cx, int64_t cy) {
  frame_rows(f, [&](T* row) { row[cy] -= alpha * row[cx]; });
}

// column cy *= alpha   (whole warp)
template <typename T>
__device__ void frame_scale(const FrameView<T>& f, T alpha, int64_t cy) {
  frame_rows(f, [&](T* row) { row[cy] *= alpha; });
}

// column cy = value   (whole warp; unlike frame_scale, also clears NaN)
template <typename T>
__device__ void frame_fill(const FrameView<T>& f, T value, int64_t cy) {
  frame_rows(f, [&](T* row) { row[cy] = value; });
}

// Doubles of block_mgs's scratch per sequence slot: the columns' norms before the projections
// and their R_jj.
__host__ __device__ inline int64_t mgs_scratch_per_slot(int64_t k) { return 2 * k; }

// Re-orthonormalises the k tangent vectors of each of nseq sequences (columns tcol0 + s*k + j of
// the frame) by modified Gram-Schmidt, run twice ("twice is enough") when k > 1 so the frame stays
// orthonormal to rounding in float32.  The diagonal of R is the product of both passes' diagonals,
// so log R_jj = log r_jj(pass 1) + log r_jj(pass 2), each norm taken in float64.  Then, as on the
// CPU (cpu/qr.h): a lost column (common/cell_math.h::column_lost: R_jj within rounding of zero
// relative to the column's norm before the projections, a singular tangent map) and every later
// one are set to zero with log R_jj = -inf; a frame with a non-finite norm is set to NaN with NaN
// logs.  (A zero column makes its pass produce NaN in the later columns, 1/0 * 0; they are
// lost, so zeroed, anyway.)
//
// Must be called by every thread of the block (it contains __syncthreads()).  Warps are split into
// groups of wps warps, one group per sequence; within a group the projections of the later columns
// are shared out over the warps (right-looking MGS: column j is final once the step j finishes, and
// is scaled to unit length during step j + 1, when nobody reads it).
//   nslots       sequences the block holds (same in every call, so every thread loops alike)
//   nseq         sequences that are real (the rest, nseq <= s < nslots, are skipped)
//   out          logs of sequence 0 for this block ([k] doubles), nullptr for "discard"
//   out_stride   distance between two sequences' logs in out
//   scratch      mgs_scratch_per_slot(k) doubles per slot, consecutive (shared or global memory
//                of this block alone)
template <typename T>
__device__ void block_mgs(const FrameView<T>& f, int nslots, int nseq, int64_t tcol0, int k, double* out,
                          int64_t out_stride, double* scratch) {
  const int warp = threadIdx.x / kWarpSize;
  const int lane = threadIdx.x % kWarpSize;
  const int nwarps = blockDim.x / kWarpSize;
  int wps = 1;
  if (k > 1) wps = max(1, min(nwarps / max(1, nslots), k - 1));
  const int groups = nwarps / wps;
  const int rounds = (nslots + groups - 1) / groups;
  const int group = warp / wps;
  const int sub = warp % wps;
  const int npass = k > 1 ? 2 : 1;
  const double ratio = lost_column_ratio<T>();
  // One warp per sequence needs no block-wide barrier between columns.
  auto sync = [wps]() {
    if (wps == 1) {
      __syncwarp();
    } else {
      __syncthreads();
    }
  };
  for (int round = 0; round < rounds; ++round) {
    const int s = group + round * groups;
    const bool active = group < groups && s < nseq;
    const int64_t base = tcol0 + static_cast<int64_t>(s) * k;
    double* nu = scratch + s * mgs_scratch_per_slot(k);  // [k] norms before the projections
    double* rjj = nu + k;                                // [k] R_jj of both passes
    if (active) {
      for (int j = sub; j < k; j += wps) {
        const double n2 = frame_dot(f, base + j, base + j);
        if (lane == 0) nu[j] = sqrt(n2);
      }
    }
    sync();
    for (int pass = 0; pass < npass; ++pass) {
      double prev_inv = 0.0;
      for (int j = 0; j < k; ++j) {
        if (active) {
          const double nrm2 = frame_dot(f, base + j, base + j);
          const double r = sqrt(nrm2);
          const double inv = 1.0 / r;
          if (sub == 0 && lane == 0) rjj[j] = pass == 0 ? r : rjj[j] * r;
          if (out != nullptr && sub == 0 && lane == 0) {
            double* o = out + s * out_stride + j;
            *o = pass == 0 ? log(r) : *o + log(r);
          }
          for (int i = j + 1 + sub; i < k; i += wps) {
            const double d = frame_dot(f, base + j, base + i) * inv * inv;
            frame_axpy(f, static_cast<T>(d), base + j, base + i);
          }
          if (sub == 0 && j > 0) frame_scale(f, static_cast<T>(prev_inv), base + j - 1);
          prev_inv = inv;
        }
        sync();
      }
      if (active && sub == 0) frame_scale(f, static_cast<T>(prev_inv), base + k - 1);
      __syncthreads();
    }
    // lost columns and non-finite frames (one warp per sequence; every lane reads the same values)
    if (active && sub == 0) {
      bool finite = true;
      for (int j = 0; j < k; ++j) finite = finite && isfinite(nu[j]);
      bool lost = false;
      for (int j = 0; j < k; ++j) {
        lost = lost || column_lost(rjj[j], nu[j], ratio);
        if (finite && !lost) continue;
        frame_fill(f, finite ? T(0) : static_cast<T>(NAN), base + j);
        if (out != nullptr && lane == 0) out[s * out_stride + j] = finite ? -INFINITY : NAN;
      }
    }
    __syncthreads();
  }
}

constexpr int kQrThreads = 128;

// Grid (ceil(B / nslots), cc): block (x, y) re-orthonormalises the frames of sequences
// [x*nslots, x*nslots + nslots) of local checkpoint y.
//   z, cm      [L, cc, H, N]  h- and c-matrices (cm nullptr: no c state), N = B * (1 + k);
//                             tangent j of sequence b is column B + b*k + j
//   cc         checkpoints in this launch; c_begin: global index of the first
//   H, L, B, k sizes; nslots: sequences per block (kQrThreads / 32 warps are shared among them)
//   logs       [C, B, nblocks, k]  log R_jj written at counted block blk when blk >= 0
//                                  (blk = -1: warm-up, logs discarded)
//   scratch    [cc, B, mgs_scratch_per_slot(k)] doubles (block_mgs's scratch)
template <typename T>
__global__ void __launch_bounds__(kQrThreads)
    stepwise_qr_kernel(T* z, T* cm, int64_t cc, int H, int L, int64_t B, int k, int64_t N, int nslots, double* logs,
                       int64_t c_begin, int64_t nblocks, int64_t blk, double* scratch) {
  const int64_t cl = blockIdx.y;
  const int64_t b0 = static_cast<int64_t>(blockIdx.x) * nslots;
  const int nb = static_cast<int>(std::min<int64_t>(nslots, B - b0));
  const int64_t HN = static_cast<int64_t>(H) * N;
  const FrameView<T> f{z + cl * HN, cm != nullptr ? cm + cl * HN : nullptr, N, cc * HN, H, L};
  double* out = blk >= 0 ? logs + (((c_begin + cl) * B + b0) * nblocks + blk) * k : nullptr;
  block_mgs(f, nslots, nb, B + b0 * k, k, out, nblocks * k, scratch + (cl * B + b0) * mgs_scratch_per_slot(k));
}

}  // namespace mdesc::cuda_impl
