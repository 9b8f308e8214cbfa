// Kernel of the fused CUDA path of mdesc::tangent_run (small hidden sizes): one launch runs all S
// steps.  Device code only (host side: run_host.h); the including file provides the
// __pipeline_* intrinsics (<cuda_pipeline.h>).  Templated on the cell (common/cell_math.h).
//
// Grid:  (ceil(B / BT), cc)   block (x, y) runs sequences [x*BT, x*BT + BT) of checkpoint
//                             c_begin + y, from the initial state to h_T, with no grid-wide
//                             barrier and no per-step launch.
// Block: kFusedThreads threads.  Everything a step touches lives in shared memory except the layer-0
// input projection, which is prefetched one step ahead (cp.async where rows are 16-byte multiples).
//
// Shared memory of one block (T = scalar type; G = gates*H gate rows; each region starts 16-byte
// aligned):
//   W      [nW]            this checkpoint's packed weights (pack_fused_weights):
//                            block 2l     W_hh[l]^T  [H, G]   (row r = input unit r)
//                            block 2l-1   W_ih[l]^T  [H, G]   (l >= 1; layer 0's is precomputed)
//                            then bias[l] [G] for l = 0..L-1
//   Z      [L, H, ld]      h-matrices (layout in qr.cuh), nseq = BT,
//                          ld = BT*(1+k) rounded up to odd (no bank conflicts on column walks)
//   Cm     [L, H, ld]      c-matrices (LSTM only; empty for the other cells)
//   G      [G, ldg]        gate pre-activations of the column chunk being processed,
//                          ldg = (BT + GC) rounded up to odd
//   coef   [BT, coefs, H]  the cell's tangent coefficients per sequence and unit
//   XP     [2, BT, G]      double-buffered layer-0 input projection of this step and the next
//   len    [BT]            driven lengths of the tile's sequences
//   qr     [BT, 2k]        block_mgs's scratch (doubles): the frame columns' norms and R_jj
//
// One step, per layer l:
//   G[:, 0 : BT + w0] = W_hh[l] Z[l] (+ W_ih[l] Z[l-1] for l >= 1)   states + first tangent chunk
//   state pointwise   (sequence, unit): the cell update and its coefficients
//   tangent pointwise (unit, column) of the first chunk
//   remaining tangent chunks of GC columns: GEMM, then tangent pointwise
// and after the layers, modified Gram-Schmidt when the schedule asks for it (block_mgs).
#pragma once

#include <cstdint>

#include "common/cell_math.h"
#include "cuda/gemm.cuh"
#include "cuda/pointwise.cuh"
#include "cuda/qr.cuh"

namespace mdesc::cuda_impl {

constexpr int kFusedThreads = 256;

// Byte offsets of the shared-memory regions (host and device agree through this one function).
struct FusedLayout {
  int64_t w, z, cm, g, coef, xp, len, qr, total;
  int64_t ld, ldg, nW;
};

__host__ __device__ inline FusedLayout fused_layout(const CellShape& cs, int64_t H, int64_t L, int64_t k, int64_t BT,
                                                    int64_t GC, int64_t elem) {
  FusedLayout s{};
  const int64_t G = cs.gates * H;
  s.ld = (BT * (1 + k)) | 1;
  s.ldg = (BT + GC) | 1;
  s.nW = (2 * L - 1) * G * H + G * L;
  auto a16 = [](int64_t b) { return (b + 15) / 16 * 16; };
  int64_t off = 0;
  s.w = off;    off += a16(s.nW * elem);
  s.z = off;    off += a16(L * H * s.ld * elem);
  s.cm = off;   off += a16((cs.halves - 1) * L * H * s.ld * elem);
  s.g = off;    off += a16(G * s.ldg * elem);
  s.coef = off; off += a16(BT * cs.coefs * H * elem);
  s.xp = off;   off += a16(2 * BT * G * elem);
  s.len = off;  off += a16(BT * 8);
  s.qr = off;   off += a16(BT * mgs_scratch_per_slot(k) * 8);
  s.total = off;
  return s;
}

// Everything the fused kernel reads and writes.  Element strides are in elements of T.
template <typename T>
struct FusedArgs {
  const T* wpack;          // [C, nW] packed weights (all checkpoints)
  const T* xproj;          // layer-0 projection W_ih[0] x + bias[0] of this launch's checkpoints:
                           //   element (cl, t, b, row) at cl*xp_sc + t*xp_st + b*xp_sb + row,
                           //   cl = local checkpoint, t < T, row < G
  int64_t xp_sc, xp_st, xp_sb;
  const int64_t* lengths;  // [B]
  const T* h0;             // [C|1, L, B, H]
  const T* c0;             // [C|1, L, B, H] (LSTM; unused otherwise)
  int64_t state_sc;        // checkpoint stride of h0/c0 (0 when broadcast)
  const T* q0;             // [C|1, B|1, n, k]
  int64_t q_sc, q_sb;      // checkpoint / sequence strides of q0 (0 when broadcast)
  double* logs;            // [C, B, nblocks, k]
  T* hT;                   // [C, L, B, H]
  T* cT;                   // [C, L, B, H] (LSTM; unused otherwise)
  int64_t c_begin;         // global index of this launch's first checkpoint
  int B, Tdrive, L, H, k, BT, GC;  // Tdrive: driven steps (time axis of x)
  int64_t S, warmup, qr_every, nblocks;
};

template <class Cell, typename T>
__global__ void __launch_bounds__(kFusedThreads) fused_tangent_kernel(const FusedArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  constexpr int NG = Cell::kGates;
  constexpr bool kHasC = Cell::kHalves == 2;
  constexpr CellShape shape{Cell::kGates, Cell::kCoefs, Cell::kHalves};
  const int H = a.H, GH = NG * H, L = a.L, k = a.k, BT = a.BT, GC = a.GC;
  const FusedLayout lay = fused_layout(shape, H, L, k, BT, GC, sizeof(T));
  const int ld = static_cast<int>(lay.ld), ldg = static_cast<int>(lay.ldg);
  T* W = reinterpret_cast<T*>(smem + lay.w);
  T* Zs = reinterpret_cast<T*>(smem + lay.z);
  T* Cs = kHasC ? reinterpret_cast<T*>(smem + lay.cm) : nullptr;
  T* Gs = reinterpret_cast<T*>(smem + lay.g);
  T* coef = reinterpret_cast<T*>(smem + lay.coef);
  T* XP = reinterpret_cast<T*>(smem + lay.xp);
  int64_t* len = reinterpret_cast<int64_t*>(smem + lay.len);
  double* qr_scratch = reinterpret_cast<double*>(smem + lay.qr);

  const int tid = threadIdx.x, nt = blockDim.x;
  const int cl = blockIdx.y;
  const int64_t c = a.c_begin + cl;
  const int b0 = blockIdx.x * BT;
  const int nb = min(BT, a.B - b0);
  const int64_t LHld = static_cast<int64_t>(H) * ld;

  // ---- load weights, lengths, initial state and frame ----
  if ((lay.nW * static_cast<int64_t>(sizeof(T))) % 16 == 0) {  // every checkpoint's image 16-byte aligned
    const int4* src = reinterpret_cast<const int4*>(a.wpack + c * lay.nW);
    int4* dst = reinterpret_cast<int4*>(W);
    const int64_t n16 = lay.nW * static_cast<int64_t>(sizeof(T)) / 16;
    for (int64_t i = tid; i < n16; i += nt) dst[i] = src[i];
  } else {
    const T* src = a.wpack + c * lay.nW;
    for (int64_t i = tid; i < lay.nW; i += nt) W[i] = src[i];
  }
  for (int s = tid; s < BT; s += nt) len[s] = s < nb ? a.lengths[b0 + s] : 0;
  for (int64_t i = tid; i < L * LHld; i += nt) {
    Zs[i] = T(0);
    if constexpr (kHasC) Cs[i] = T(0);
  }
  __syncthreads();
  {
    const int64_t B = a.B;
    const T* h0 = a.h0 + c * a.state_sc;
    const T* c0 = kHasC ? a.c0 + c * a.state_sc : nullptr;
    for (int i = tid; i < L * nb * H; i += nt) {
      const int u = i % H, s = (i / H) % nb, l = i / (H * nb);
      const int64_t src = (l * B + b0 + s) * H + u;
      Zs[l * LHld + u * ld + s] = h0[src];
      if constexpr (kHasC) Cs[l * LHld + u * ld + s] = c0[src];
    }
    const int rows_per_layer = Cell::kHalves * H;
    const int n = rows_per_layer * L;
    for (int64_t i = tid; i < static_cast<int64_t>(nb) * n * k; i += nt) {
      const int j = i % k;
      const int row = (i / k) % n;
      const int s = i / (static_cast<int64_t>(k) * n);
      const T* q = a.q0 + c * a.q_sc + (b0 + s) * a.q_sb;
      const int l = row / rows_per_layer, hr = row % rows_per_layer;
      T* dst = (hr < H ? Zs : Cs) + l * LHld + (hr % H) * ld + BT + s * k + j;
      *dst = q[static_cast<int64_t>(row) * k + j];
    }
  }

  // ---- layer-0 input projection prefetch: XP[buf, s, :] = xproj(cl, t, b0 + s, :) ----
  // cp.async moves 16-byte chunks, so it needs rows (and thus every row start) that are multiples
  // of 16 bytes; otherwise plain loads, made visible by the barrier at the top of the next step.
  const T* xp_base = a.xproj + cl * a.xp_sc + static_cast<int64_t>(b0) * a.xp_sb;
  const bool async_rows = (GH * static_cast<int>(sizeof(T))) % 16 == 0;
  const int chunks_per_row = GH * static_cast<int>(sizeof(T)) / 16;
  auto prefetch = [&](int t) {
    T* dst = XP + (t & 1) * BT * GH;
    if (async_rows) {
      for (int i = tid; i < nb * chunks_per_row; i += nt) {
        const int s = i / chunks_per_row, q = i % chunks_per_row;
        if (t < len[s]) {
          const T* src = xp_base + t * a.xp_st + s * a.xp_sb;
          __pipeline_memcpy_async(reinterpret_cast<char*>(dst + s * GH) + 16 * q,
                                  reinterpret_cast<const char*>(src) + 16 * q, 16);
        }
      }
      __pipeline_commit();
    } else {
      for (int i = tid; i < nb * GH; i += nt) {
        const int s = i / GH, q = i % GH;
        if (t < len[s]) dst[s * GH + q] = xp_base[t * a.xp_st + s * a.xp_sb + q];
      }
    }
  };
  prefetch(0);

  const int ktot = BT * k;           // tangent columns of the tile
  const int w0 = min(ktot, GC);      // tangent columns in the first chunk
  for (int64_t t = 0; t < a.S; ++t) {
    if (async_rows) __pipeline_wait_prior(0);
    __syncthreads();
    if (t + 1 < a.Tdrive) prefetch(static_cast<int>(t + 1));
    const T* xp_now = XP + (t & 1) * BT * GH;

    for (int l = 0; l < L; ++l) {
      T* Zl = Zs + l * LHld;
      T* Cl = kHasC ? Cs + l * LHld : nullptr;
      const T* Whh = W + static_cast<int64_t>(2 * l) * GH * H;
      const T* Wih = l > 0 ? W + static_cast<int64_t>(2 * l - 1) * GH * H : nullptr;
      const T* Zbelow = l > 0 ? Zl - LHld : nullptr;
      const T* bias = W + static_cast<int64_t>(2 * L - 1) * GH * H + l * GH;

      // states and the first tangent chunk: tile columns [0, BT + w0) are contiguous
      gate_gemm<NG>(Whh, Zl, Wih, Zbelow, H, ld, 0, BT + w0, Gs, ldg, 0);
      __syncthreads();
      fused_state_pointwise<Cell>(Zl, Cl, Gs, coef, H, BT, ld, ldg, [&](int s) -> const T* {
        return (l == 0 && t < len[s]) ? xp_now + s * GH : bias;
      });
      if (ktot > 0) {
        __syncthreads();
        fused_tangent_pointwise<Cell>(Zl, Cl, Gs, coef, H, k, BT, ld, ldg, 0, w0, BT);
        for (int t0 = w0; t0 < ktot; t0 += GC) {
          const int w = min(GC, ktot - t0);
          __syncthreads();
          gate_gemm<NG>(Whh, Zl, Wih, Zbelow, H, ld, BT + t0, w, Gs, ldg, 0);
          __syncthreads();
          fused_tangent_pointwise<Cell>(Zl, Cl, Gs, coef, H, k, BT, ld, ldg, t0, w, 0);
        }
      }
      __syncthreads();
    }

    if (k > 0) {
      const int64_t blk = qr_block_after_step(t + 1, a.warmup, a.qr_every, a.S);
      if (blk != -2) {
        double* out = blk >= 0 ? a.logs + ((c * a.B + b0) * a.nblocks + blk) * k : nullptr;
        const FrameView<T> f{Zs, Cs, ld, LHld, H, L};
        block_mgs(f, BT, nb, BT, k, out, a.nblocks * k, qr_scratch);
      }
    }
  }

  // ---- final state ----
  __syncthreads();
  for (int i = tid; i < L * nb * H; i += nt) {
    const int u = i % H, s = (i / H) % nb, l = i / (H * nb);
    const int64_t dst = ((c * L + l) * a.B + b0 + s) * H + u;
    a.hT[dst] = Zs[l * LHld + u * ld + s];
    if constexpr (kHasC) a.cT[dst] = Cs[l * LHld + u * ld + s];
  }
}

}  // namespace mdesc::cuda_impl
