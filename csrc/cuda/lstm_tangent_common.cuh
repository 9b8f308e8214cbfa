// Device helpers shared by the two CUDA paths of mdesc::lstm_tangent_run
// (schema and shapes: csrc/mdesc.cpp; semantics: csrc/cpu/lstm_tangent_cpu.cpp).
//
// Both paths keep the state and the k tangent vectors of a group of sequences side by side as
// columns of one row-major matrix per layer and per half (h or c):
//
//   Z[l], Cm[l]   [H, ld]   row u = hidden unit u of layer l.  Columns:
//                           s                      state (h or c) of sequence s, s < nseq
//                           nseq + s * k + j       tangent vector j of sequence s, restricted to
//                                                  layer l's h (or c) block
//
// (the fused path has one such matrix per thread block in shared memory, nseq = its tile of
// sequences; the stepwise path one per checkpoint in global memory, nseq = B).  States first
// lets the pointwise pass handle all states before any tangent that needs their gate values.
// A tangent vector is thus spread over the 2L blocks [h_1, c_1, ..., h_L, c_L], the row order
// of q0.
#pragma once

#include <cmath>
#include <cstdint>

namespace mdesc::cuda_impl {

constexpr int kWarpSize = 32;

__device__ __forceinline__ float exp_t(float x) { return expf(x); }
__device__ __forceinline__ double exp_t(double x) { return exp(x); }
__device__ __forceinline__ float tanh_t(float x) { return tanhf(x); }
__device__ __forceinline__ double tanh_t(double x) { return tanh(x); }

template <typename T>
__device__ __forceinline__ T sigmoid_t(T x) {
  return T(1) / (T(1) + exp_t(-x));
}

// Coefficients of the linearised cell update of one hidden unit (same names as the CPU kernel):
//   dc' = cf * da_f + ff * dc + ci * da_i + cg * da_g
//   dh' = co * da_o + oc * dc'
template <typename T>
struct Coefs {
  T ci;  // i (1 - i) g
  T cf;  // f (1 - f) c_old
  T cg;  // i (1 - g^2)
  T ff;  // f
  T co;  // o (1 - o) tanh c'
  T oc;  // o (1 - tanh^2 c')
};

// One LSTM cell update of one hidden unit from its four gate pre-activations (i, f, g, o).
// Returns the new (h, c) and the coefficients its tangent update needs.
template <typename T>
__device__ __forceinline__ Coefs<T> lstm_unit(T ai, T af, T ag, T ao, T c_old, T& h_new, T& c_new) {
  const T i = sigmoid_t(ai);
  const T f = sigmoid_t(af);
  const T g = tanh_t(ag);
  const T o = sigmoid_t(ao);
  c_new = f * c_old + i * g;
  const T tc = tanh_t(c_new);
  h_new = o * tc;
  Coefs<T> k;
  k.ci = i * (T(1) - i) * g;
  k.cf = f * (T(1) - f) * c_old;
  k.cg = i * (T(1) - g * g);
  k.ff = f;
  k.co = o * (T(1) - o) * tc;
  k.oc = o * (T(1) - tc * tc);
  return k;
}

// Tangent update of one hidden unit for one tangent vector: dc is updated in place, dh returned.
template <typename T>
__device__ __forceinline__ T lstm_unit_tangent(const Coefs<T>& k, T dai, T daf, T dag, T dao, T& dc) {
  const T dcn = k.cf * daf + k.ff * dc + k.ci * dai + k.cg * dag;
  dc = dcn;
  return k.co * dao + k.oc * dcn;
}

// Device copy of mdesc::qr_block_after_step (csrc/run_checks.h): after step s (1-based), -2 =
// no QR, -1 = QR with logs discarded (warm-up), >= 0 = the counted block the logs belong to.
__host__ __device__ __forceinline__ int64_t qr_block_after(int64_t s, int64_t warmup, int64_t qr_every,
                                                           int64_t S) {
  if (s <= warmup) return (s % qr_every == 0 || s == warmup) ? -1 : -2;
  const int64_t counted = s - warmup;
  if (counted % qr_every == 0 || s == S) return (counted - 1) / qr_every;
  return -2;
}

// The tangent frame of a group of sequences inside the Z / Cm matrices described above.
// Element (l, half, u, col) lives at (half ? cm : z)[l * lstride + u * ld + col].
template <typename T>
struct FrameView {
  T* z;             // layer 0's h-matrix
  T* cm;            // layer 0's c-matrix
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

// Dot product of frame columns ca and cb over all 2*H*L rows, accumulated in float64.  Called
// by a whole warp; every lane gets the result.  Lane q touches rows u = q, q + 32, ... only, so
// a warp reading columns it has just written through frame_axpy / frame_scale sees its own
// writes.
template <typename T>
__device__ double frame_dot(const FrameView<T>& f, int64_t ca, int64_t cb) {
  const int lane = threadIdx.x % kWarpSize;
  double acc = 0.0;
  for (int l = 0; l < f.L; ++l) {
    const T* zb = f.z + l * f.lstride;
    const T* cb_ = f.cm + l * f.lstride;
    for (int u = lane; u < f.H; u += kWarpSize) {
      const int64_t r = u * f.ld;
      acc += static_cast<double>(zb[r + ca]) * static_cast<double>(zb[r + cb]);
      acc += static_cast<double>(cb_[r + ca]) * static_cast<double>(cb_[r + cb]);
    }
  }
  return warp_sum<T>(acc);
}

// column cy -= alpha * column cx   (whole warp)
template <typename T>
__device__ void frame_axpy(const FrameView<T>& f, T alpha, int64_t cx, int64_t cy) {
  const int lane = threadIdx.x % kWarpSize;
  for (int l = 0; l < f.L; ++l) {
    T* zb = f.z + l * f.lstride;
    T* cb = f.cm + l * f.lstride;
    for (int u = lane; u < f.H; u += kWarpSize) {
      const int64_t r = u * f.ld;
      zb[r + cy] -= alpha * zb[r + cx];
      cb[r + cy] -= alpha * cb[r + cx];
    }
  }
}

// column cy *= alpha   (whole warp)
template <typename T>
__device__ void frame_scale(const FrameView<T>& f, T alpha, int64_t cy) {
  const int lane = threadIdx.x % kWarpSize;
  for (int l = 0; l < f.L; ++l) {
    T* zb = f.z + l * f.lstride;
    T* cb = f.cm + l * f.lstride;
    for (int u = lane; u < f.H; u += kWarpSize) {
      const int64_t r = u * f.ld;
      zb[r + cy] *= alpha;
      cb[r + cy] *= alpha;
    }
  }
}

// Re-orthonormalises the k tangent vectors of each of nseq sequences (columns tcol0 + s*k + j of
// the frame) by modified Gram-Schmidt, run twice ("twice is enough") when k > 1 so the frame stays
// orthonormal to rounding in float32.  The diagonal of R is the product of both passes' diagonals,
// so log R_jj = log r_jj(pass 1) + log r_jj(pass 2), each norm taken in float64 (> 0 by
// construction).  A zero or non-finite norm gives a non-finite log and a non-finite column, as on
// the CPU; the sums are then reported as NaN upstream.
//
// Must be called by every thread of the block (it contains __syncthreads()).  Warps are split into
// groups of wps warps, one group per sequence; within a group the projections of the later columns
// are shared out over the warps (right-looking MGS: column j is final once the step j finishes, and
// is scaled to unit length during step j + 1, when nobody reads it).
//   nslots       sequences the block holds (same in every call, so every thread loops alike)
//   nseq         sequences that are real (the rest, nseq <= s < nslots, are skipped)
//   out          logs of sequence 0 for this block ([k] doubles), nullptr for "discard"
//   out_stride   distance between two sequences' logs in out
template <typename T>
__device__ void block_mgs(const FrameView<T>& f, int nslots, int nseq, int64_t tcol0, int k, double* out,
                          int64_t out_stride) {
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
    for (int pass = 0; pass < npass; ++pass) {
      double prev_inv = 0.0;
      for (int j = 0; j < k; ++j) {
        if (active) {
          const double nrm2 = frame_dot(f, base + j, base + j);
          const double r = sqrt(nrm2);
          const double inv = 1.0 / r;
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
  }
}

}  // namespace mdesc::cuda_impl
