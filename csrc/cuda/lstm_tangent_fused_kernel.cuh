// Kernel of the fused CUDA path of mdesc::lstm_tangent_run (small hidden sizes): one launch runs
// all S steps.  Device code only (host side: lstm_tangent_fused.cu); the including file provides
// the __pipeline_* intrinsics (<cuda_pipeline.h>).
//
// Grid:  (ceil(B / BT), cc)   block (x, y) runs sequences [x*BT, x*BT + BT) of checkpoint
//                             c_begin + y, from the initial state to h_T, with no grid-wide
//                             barrier and no per-step launch.
// Block: kFusedThreads threads.  Everything a step touches lives in shared memory except the layer-0
// input projection, which is prefetched one step ahead with cp.async.
//
// Shared memory of one block (T = scalar type; each region starts 16-byte aligned):
//   W      [nW]            this checkpoint's packed weights (pack_fused_weights):
//                            block 2l     W_hh[l]^T  [H, 4H]   (row r = input unit r)
//                            block 2l-1   W_ih[l]^T  [H, 4H]   (l >= 1; layer 0's is precomputed)
//                            then bias[l] [4H] for l = 0..L-1
//   Z, Cm  [L, H, ld]      h- and c-matrices (layout in lstm_tangent_common.cuh), nseq = BT,
//                          ld = BT*(1+k) rounded up to odd (no bank conflicts on column walks)
//   G      [4H, ldg]       gate pre-activations of the column chunk being processed,
//                          ldg = (BT + GC) rounded up to odd
//   coef   [BT, 6, H]      Coefs of the current layer per sequence and unit
//   XP     [2, BT, 4H]     double-buffered layer-0 input projection of this step and the next
//   len    [BT]            driven lengths of the tile's sequences
//
// One step, per layer l:
//   G[:, 0 : BT + w0] = W_hh[l] Z[l] (+ W_ih[l] Z[l-1] for l >= 1)   states + first tangent chunk
//   state pointwise   (sequence, unit): gates, new h and c, Coefs
//   tangent pointwise (unit, column) of the first chunk
//   remaining tangent chunks of GC columns: GEMM, then tangent pointwise
// and after the layers, modified Gram-Schmidt when the schedule asks for it (block_mgs).
#pragma once

#include <cstdint>

#include "cuda/lstm_tangent_common.cuh"

namespace mdesc::cuda_impl {

constexpr int kFusedThreads = 256;
constexpr int kTileN = 4;  // columns per thread in the gate GEMM (each thread does 4 gates x 4 columns)

// Byte offsets of the shared-memory regions (host and device agree through this one function).
struct FusedLayout {
  int64_t w, z, cm, g, coef, xp, len, total;
  int64_t ld, ldg, nW;
};

__host__ __device__ inline FusedLayout fused_layout(int64_t H, int64_t L, int64_t k, int64_t BT, int64_t GC,
                                                    int64_t elem) {
  FusedLayout s{};
  s.ld = (BT * (1 + k)) | 1;
  s.ldg = (BT + GC) | 1;
  s.nW = (2 * L - 1) * 4 * H * H + 4 * H * L;
  auto a16 = [](int64_t b) { return (b + 15) / 16 * 16; };
  int64_t off = 0;
  s.w = off;    off += a16(s.nW * elem);
  s.z = off;    off += a16(L * H * s.ld * elem);
  s.cm = off;   off += a16(L * H * s.ld * elem);
  s.g = off;    off += a16(4 * H * s.ldg * elem);
  s.coef = off; off += a16(BT * 6 * H * elem);
  s.xp = off;   off += a16(2 * BT * 4 * H * elem);
  s.len = off;  off += a16(BT * 8);
  s.total = off;
  return s;
}

// Everything the fused kernel reads and writes.  Element strides are in elements of T.
template <typename T>
struct FusedArgs {
  const T* wpack;          // [C, nW] packed weights (all checkpoints)
  const T* xproj;          // layer-0 projection W_ih[0] x + bias[0] of this launch's checkpoints:
                           //   element (cl, t, b, row) at cl*xp_sc + t*xp_st + b*xp_sb + row,
                           //   cl = local checkpoint, t < T, row < 4H
  int64_t xp_sc, xp_st, xp_sb;
  const int64_t* lengths;  // [B]
  const T* h0;             // [C|1, L, B, H]
  const T* c0;             // [C|1, L, B, H]
  int64_t state_sc;        // checkpoint stride of h0/c0 (0 when broadcast)
  const T* q0;             // [C|1, B|1, n, k]
  int64_t q_sc, q_sb;      // checkpoint / sequence strides of q0 (0 when broadcast)
  double* logs;            // [C, B, nblocks, k]
  T* hT;                   // [C, L, B, H]
  T* cT;                   // [C, L, B, H]
  int64_t c_begin;         // global index of this launch's first checkpoint
  int B, Tdrive, L, H, k, BT, GC;  // Tdrive: driven steps (time axis of x)
  int64_t S, warmup, qr_every, nblocks;
};

// G[row, gcol0 + gc] = sum_r Wa[r, row] * Za[r, zcol0 + gc]  (+ Wb/Zb likewise when Wb != nullptr)
// for every row < 4H and gc < w.  Wa, Wb: [H, 4H] (transposed weights); Za, Zb: [H, ld].
// A thread computes the four gate rows u, H+u, 2H+u, 3H+u of kTileN columns cg, cg+ncg, ...
template <typename T>
__device__ __forceinline__ void gate_gemm(const T* __restrict__ Wa, const T* __restrict__ Za, const T* __restrict__ Wb,
                                          const T* __restrict__ Zb, int H, int ld, int zcol0, int w, T* __restrict__ G,
                                          int ldg, int gcol0) {
  const int H4 = 4 * H;
  const int ncg = (w + kTileN - 1) / kTileN;
  for (int item = threadIdx.x; item < H * ncg; item += blockDim.x) {
    const int u = item % H;
    const int cg = item / H;
    int col[kTileN];
#pragma unroll
    for (int j = 0; j < kTileN; ++j) col[j] = zcol0 + min(cg + j * ncg, w - 1);
    T acc[4][kTileN];
#pragma unroll
    for (int g = 0; g < 4; ++g)
#pragma unroll
      for (int j = 0; j < kTileN; ++j) acc[g][j] = T(0);
    for (int pass = 0; pass < 2; ++pass) {
      const T* W = pass == 0 ? Wa : Wb;
      const T* Z = pass == 0 ? Za : Zb;
      if (W == nullptr) break;
#pragma unroll 2
      for (int r = 0; r < H; ++r) {
        const T* wr = W + r * H4 + u;
        const T w0 = wr[0], w1 = wr[H], w2 = wr[2 * H], w3 = wr[3 * H];
        const T* zr = Z + r * ld;
#pragma unroll
        for (int j = 0; j < kTileN; ++j) {
          const T z = zr[col[j]];
          acc[0][j] += w0 * z;
          acc[1][j] += w1 * z;
          acc[2][j] += w2 * z;
          acc[3][j] += w3 * z;
        }
      }
    }
#pragma unroll
    for (int j = 0; j < kTileN; ++j) {
      const int gc = cg + j * ncg;
      if (gc < w) {
#pragma unroll
        for (int g = 0; g < 4; ++g) G[(g * H + u) * ldg + gcol0 + gc] = acc[g][j];
      }
    }
  }
}

// Tangent pointwise update of tangent columns [t0, t0 + w) (index among the tile's BT*k tangent
// columns), whose pre-activations sit in G columns [gcol0, gcol0 + w).
template <typename T>
__device__ __forceinline__ void tangent_pointwise(T* Z, T* Cm, const T* G, const T* coef, int H, int k, int BT, int ld,
                                                  int ldg, int t0, int w, int gcol0) {
  for (int item = threadIdx.x; item < H * w; item += blockDim.x) {
    const int gc = item % w;
    const int u = item / w;
    const int tj = t0 + gc;
    const int s = tj / k;
    const T* cs = coef + s * 6 * H + u;
    Coefs<T> kf{cs[0], cs[H], cs[2 * H], cs[3 * H], cs[4 * H], cs[5 * H]};
    const T* g = G + u * ldg + gcol0 + gc;
    const int64_t e = static_cast<int64_t>(u) * ld + BT + tj;
    T dc = Cm[e];
    const T dh = lstm_unit_tangent(kf, g[0], g[H * ldg], g[2 * H * ldg], g[3 * H * ldg], dc);
    Cm[e] = dc;
    Z[e] = dh;
  }
}

template <typename T>
__global__ void __launch_bounds__(kFusedThreads) lstm_tangent_fused_kernel(const FusedArgs<T> a) {
  extern __shared__ __align__(16) unsigned char smem[];
  const int H = a.H, H4 = 4 * H, L = a.L, k = a.k, BT = a.BT, GC = a.GC;
  const FusedLayout lay = fused_layout(H, L, k, BT, GC, sizeof(T));
  const int ld = static_cast<int>(lay.ld), ldg = static_cast<int>(lay.ldg);
  T* W = reinterpret_cast<T*>(smem + lay.w);
  T* Zs = reinterpret_cast<T*>(smem + lay.z);
  T* Cs = reinterpret_cast<T*>(smem + lay.cm);
  T* Gs = reinterpret_cast<T*>(smem + lay.g);
  T* coef = reinterpret_cast<T*>(smem + lay.coef);
  T* XP = reinterpret_cast<T*>(smem + lay.xp);
  int64_t* len = reinterpret_cast<int64_t*>(smem + lay.len);

  const int tid = threadIdx.x, nt = blockDim.x;
  const int cl = blockIdx.y;
  const int64_t c = a.c_begin + cl;
  const int b0 = blockIdx.x * BT;
  const int nb = min(BT, a.B - b0);
  const int64_t LHld = static_cast<int64_t>(H) * ld;

  // ---- load weights, lengths, initial state and frame ----
  {
    const int4* src = reinterpret_cast<const int4*>(a.wpack + c * lay.nW);  // nW*elem is a multiple of 16
    int4* dst = reinterpret_cast<int4*>(W);
    const int64_t n16 = lay.nW * static_cast<int64_t>(sizeof(T)) / 16;
    for (int64_t i = tid; i < n16; i += nt) dst[i] = src[i];
  }
  for (int s = tid; s < BT; s += nt) len[s] = s < nb ? a.lengths[b0 + s] : 0;
  for (int64_t i = tid; i < L * LHld; i += nt) {
    Zs[i] = T(0);
    Cs[i] = T(0);
  }
  __syncthreads();
  {
    const int64_t B = a.B;
    const T* h0 = a.h0 + c * a.state_sc;
    const T* c0 = a.c0 + c * a.state_sc;
    for (int i = tid; i < L * nb * H; i += nt) {
      const int u = i % H, s = (i / H) % nb, l = i / (H * nb);
      const int64_t src = (l * B + b0 + s) * H + u;
      Zs[l * LHld + u * ld + s] = h0[src];
      Cs[l * LHld + u * ld + s] = c0[src];
    }
    const int n = 2 * H * L;
    for (int64_t i = tid; i < static_cast<int64_t>(nb) * n * k; i += nt) {
      const int j = i % k;
      const int row = (i / k) % n;
      const int s = i / (static_cast<int64_t>(k) * n);
      const T* q = a.q0 + c * a.q_sc + (b0 + s) * a.q_sb;
      const int l = row / (2 * H), hr = row % (2 * H);
      T* dst = (hr < H ? Zs : Cs) + l * LHld + (hr % H) * ld + BT + s * k + j;
      *dst = q[static_cast<int64_t>(row) * k + j];
    }
  }

  // ---- layer-0 input projection prefetch: XP[buf, s, :] = xproj(cl, t, b0 + s, :) ----
  const T* xp_base = a.xproj + cl * a.xp_sc + static_cast<int64_t>(b0) * a.xp_sb;
  const int chunks_per_row = H4 * static_cast<int>(sizeof(T)) / 16;  // 4H*elem is a multiple of 16
  auto prefetch = [&](int t) {
    T* dst = XP + (t & 1) * BT * H4;
    for (int i = tid; i < nb * chunks_per_row; i += nt) {
      const int s = i / chunks_per_row, q = i % chunks_per_row;
      if (t < len[s]) {
        const T* src = xp_base + t * a.xp_st + s * a.xp_sb;
        __pipeline_memcpy_async(reinterpret_cast<char*>(dst + s * H4) + 16 * q,
                                reinterpret_cast<const char*>(src) + 16 * q, 16);
      }
    }
    __pipeline_commit();
  };
  prefetch(0);

  const int ktot = BT * k;           // tangent columns of the tile
  const int w0 = min(ktot, GC);      // tangent columns in the first chunk
  for (int64_t t = 0; t < a.S; ++t) {
    __pipeline_wait_prior(0);
    __syncthreads();
    if (t + 1 < a.Tdrive) prefetch(static_cast<int>(t + 1));
    const T* xp_now = XP + (t & 1) * BT * H4;

    for (int l = 0; l < L; ++l) {
      T* Zl = Zs + l * LHld;
      T* Cl = Cs + l * LHld;
      const T* Whh = W + static_cast<int64_t>(2 * l) * 4 * H * H;
      const T* Wih = l > 0 ? W + static_cast<int64_t>(2 * l - 1) * 4 * H * H : nullptr;
      const T* Zbelow = l > 0 ? Zl - LHld : nullptr;
      const T* bias = W + static_cast<int64_t>(2 * L - 1) * 4 * H * H + l * H4;

      // states and the first tangent chunk: tile columns [0, BT + w0) are contiguous
      gate_gemm(Whh, Zl, Wih, Zbelow, H, ld, 0, BT + w0, Gs, ldg, 0);
      __syncthreads();
      for (int item = tid; item < BT * H; item += nt) {
        const int u = item % H, s = item / H;
        const T* in = (l == 0 && t < len[s]) ? xp_now + s * H4 : bias;
        const T* g = Gs + u * ldg + s;
        const int64_t e = static_cast<int64_t>(u) * ld + s;
        T h_new, c_new;
        const Coefs<T> kf = lstm_unit(g[0] + in[u], g[H * ldg] + in[H + u], g[2 * H * ldg] + in[2 * H + u],
                                      g[3 * H * ldg] + in[3 * H + u], Cl[e], h_new, c_new);
        T* cs = coef + s * 6 * H + u;
        cs[0] = kf.ci;
        cs[H] = kf.cf;
        cs[2 * H] = kf.cg;
        cs[3 * H] = kf.ff;
        cs[4 * H] = kf.co;
        cs[5 * H] = kf.oc;
        Cl[e] = c_new;
        Zl[e] = h_new;
      }
      if (ktot > 0) {
        __syncthreads();
        tangent_pointwise(Zl, Cl, Gs, coef, H, k, BT, ld, ldg, 0, w0, BT);
        for (int t0 = w0; t0 < ktot; t0 += GC) {
          const int w = min(GC, ktot - t0);
          __syncthreads();
          gate_gemm(Whh, Zl, Wih, Zbelow, H, ld, BT + t0, w, Gs, ldg, 0);
          __syncthreads();
          tangent_pointwise(Zl, Cl, Gs, coef, H, k, BT, ld, ldg, t0, w, 0);
        }
      }
      __syncthreads();
    }

    if (k > 0) {
      const int64_t blk = qr_block_after(t + 1, a.warmup, a.qr_every, a.S);
      if (blk != -2) {
        double* out = blk >= 0 ? a.logs + ((c * a.B + b0) * a.nblocks + blk) * k : nullptr;
        const FrameView<T> f{Zs, Cs, ld, LHld, H, L};
        block_mgs(f, BT, nb, BT, k, out, a.nblocks * k);
      }
    }
  }

  // ---- final state ----
  __syncthreads();
  for (int i = tid; i < L * nb * H; i += nt) {
    const int u = i % H, s = (i / H) % nb, l = i / (H * nb);
    const int64_t dst = ((c * L + l) * a.B + b0 + s) * H + u;
    a.hT[dst] = Zs[l * LHld + u * ld + s];
    a.cT[dst] = Cs[l * LHld + u * ld + s];
  }
}

}  // namespace mdesc::cuda_impl
