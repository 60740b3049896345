// Device code of the attention backward; launched from attention_bwd.cu. Kept in a header so tests/cuda_emu can run
// the very same code on the CPU.
//
// Two kernels, no atomics: attention_dq_kernel owns query rows (it also writes delta = rowsum(dO * O)), then
// attention_dkdv_kernel owns key rows and streams the queries after them. Both recompute the probabilities from
// the forward's log2-sum-exp and redraw the same dropout mask from Philox.
//   P_ij = exp2(s_ij - lse_i),  dP_ij = keep_ij / (1 - p) * dO_i . V_j,  dS_ij = P_ij (dP_ij - delta_i)
//   dQ_i = scale * sum_j dS_ij K_j,  dK_j = scale * sum_i dS_ij Q_i,  dV_j = sum_i keep_ij / (1 - p) P_ij dO_i
#pragma once

#include "kernels/attention.h"
#include "kernels/attention_tiles.cuh"

namespace pyseqrl {
namespace kernels {
namespace attn {

// CTA = (batch*head, block of 16 query rows); keys/values stream through shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_dq_kernel(const AttentionBackwardParams p, uint32_t threshold) {
  constexpr int P = pitch<D>();
  constexpr int R = kRowsPerWarp;
  constexpr int NT = D / 32;
  PYSEQRL_EXTERN_SMEM(smem4);
  float* Qs = reinterpret_cast<float*>(smem4);  // [kBlockRows][P], scaled by scale * log2(e)
  float* Gs = Qs + kBlockRows * P;              // dO rows [kBlockRows][P]
  float* Ks = Gs + kBlockRows * P;              // [kTile][P]
  float* Vs = Ks + kTile * P;                   // [kTile][P]

  const AttentionShape& s = p.shape;
  const int L = s.L;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int q0 = blockIdx.y * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = warp * R;

  const T* q = static_cast<const T*>(p.q) + b * p.q_strides.b + h * p.q_strides.h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.b + h * p.k_strides.h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.b + h * p.v_strides.h;
  const T* o = static_cast<const T*>(p.o) + b * p.o_strides.b + h * p.o_strides.h;
  const T* g = static_cast<const T*>(p.dout) + b * p.dout_strides.b + h * p.dout_strides.h;
  T* dq = static_cast<T*>(p.dq) + b * p.dq_strides.b + h * p.dq_strides.h;
  const uint8_t* mask = s.key_mask == nullptr ? nullptr : s.key_mask + b * s.mask_stride_b;
  const DropoutState drop = load_dropout(s, threshold);

  stage_rows<T, D>(Qs, q, p.q_strides.l, q0, kBlockRows, L, s.scale * kLog2e);
  stage_rows<T, D>(Gs, g, p.dout_strides.l, q0, kBlockRows, L, 1.0f);

  // Per-row statistics: lse from the forward and delta_i = dO_i . O_i (written for the dK/dV kernel).
  float lse[R], delta[R], acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = q0 + r0 + r;
    lse[r] = INFINITY;
    delta[r] = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;
    if (i >= L) continue;
    float part = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      const int64_t off_o = static_cast<int64_t>(i) * p.o_strides.l + lane + 32 * t;
      const int64_t off_g = static_cast<int64_t>(i) * p.dout_strides.l + lane + 32 * t;
      part = fmaf(to_float(o[off_o]), to_float(g[off_g]), part);
    }
    delta[r] = warp_sum(part);
    lse[r] = p.lse[static_cast<int64_t>(bh) * L + i];
    if (lane == 0) p.delta[static_cast<int64_t>(bh) * L + i] = delta[r];
  }

  const int q_last = min(L, q0 + kBlockRows) - 1;
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();
    stage_rows<T, D>(Ks, k, p.k_strides.l, k0, kTile, L, 1.0f);
    stage_rows<T, D>(Vs, v, p.v_strides.l, k0, kTile, L, 1.0f);
    __syncthreads();

    const int j = k0 + lane;
    const bool key_ok = key_allowed(mask, j, L);
    float ds[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = q0 + r0 + r;
      ds[r] = 0.0f;
      if (i >= L || i < k0 || lse[r] == INFINITY) continue;  // warp-uniform; empty rows get zero gradient
      const float sc = dot_rows<D>(Qs + (r0 + r) * P, Ks + lane * P);
      float dp = dot_rows<D>(Gs + (r0 + r) * P, Vs + lane * P);
      const float pv = (key_ok && j <= i) ? exp2f(sc - lse[r]) : 0.0f;
      if (drop.on) dp = dropout_keep(drop.seed, drop.offset, bh, i, j, L, drop.threshold) ? dp * drop.inv_keep : 0.0f;
      ds[r] = pv * (dp - delta[r]);
    }
    const int jn = min(kTile, min(q0 + r0 + R - 1, L - 1) - k0 + 1);
    for (int jj = 0; jj < jn; ++jj) {
      float kv[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) kv[t] = Ks[jj * P + lane + 32 * t];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float dsj = __shfl_sync(0xffffffffu, ds[r], jj);
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = fmaf(dsj, kv[t], acc[r][t]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = q0 + r0 + r;
    if (i >= L) continue;
#pragma unroll
    for (int t = 0; t < NT; ++t)
      dq[static_cast<int64_t>(i) * p.dq_strides.l + lane + 32 * t] = from_float<T>(acc[r][t] * s.scale);
  }
}

// CTA = (batch*head, block of 16 key rows); the queries at or after the block stream through shared memory.
template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_dkdv_kernel(const AttentionBackwardParams p, uint32_t threshold) {
  constexpr int P = pitch<D>();
  constexpr int R = kRowsPerWarp;
  constexpr int NT = D / 32;
  PYSEQRL_EXTERN_SMEM(smem4);
  float* Ks = reinterpret_cast<float*>(smem4);  // [kBlockRows][P], scaled by scale * log2(e)
  float* Vs = Ks + kBlockRows * P;              // [kBlockRows][P]
  float* Qs = Vs + kBlockRows * P;              // [kTile][P]
  float* Gs = Qs + kTile * P;                   // dO rows [kTile][P]

  const AttentionShape& s = p.shape;
  const int L = s.L;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int k0 = blockIdx.y * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = warp * R;

  const T* q = static_cast<const T*>(p.q) + b * p.q_strides.b + h * p.q_strides.h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.b + h * p.k_strides.h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.b + h * p.v_strides.h;
  const T* g = static_cast<const T*>(p.dout) + b * p.dout_strides.b + h * p.dout_strides.h;
  T* dk = static_cast<T*>(p.dk) + b * p.dk_strides.b + h * p.dk_strides.h;
  T* dv = static_cast<T*>(p.dv) + b * p.dv_strides.b + h * p.dv_strides.h;
  const uint8_t* mask = s.key_mask == nullptr ? nullptr : s.key_mask + b * s.mask_stride_b;
  const DropoutState drop = load_dropout(s, threshold);
  const float* lse_bh = p.lse + static_cast<int64_t>(bh) * L;
  const float* delta_bh = p.delta + static_cast<int64_t>(bh) * L;

  stage_rows<T, D>(Ks, k, p.k_strides.l, k0, kBlockRows, L, s.scale * kLog2e);
  stage_rows<T, D>(Vs, v, p.v_strides.l, k0, kBlockRows, L, 1.0f);

  bool key_ok[R];
  float gk[R][NT], gv[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    key_ok[r] = key_allowed(mask, k0 + r0 + r, L);
#pragma unroll
    for (int t = 0; t < NT; ++t) gk[r][t] = gv[r][t] = 0.0f;
  }

  for (int i0 = k0; i0 < L; i0 += kTile) {  // causal: only queries i >= the block's first key
    __syncthreads();
    stage_rows<T, D>(Qs, q, p.q_strides.l, i0, kTile, L, 1.0f);
    stage_rows<T, D>(Gs, g, p.dout_strides.l, i0, kTile, L, 1.0f);
    __syncthreads();

    const int i = i0 + lane;  // this lane's query
    const float lse_i = i < L ? lse_bh[i] : INFINITY;
    const float delta_i = i < L ? delta_bh[i] : 0.0f;
    float pd[R], ds[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int j = k0 + r0 + r;
      pd[r] = ds[r] = 0.0f;
      if (!key_ok[r]) continue;  // warp-uniform: padded or out-of-range keys get zero gradient
      const float sc = dot_rows<D>(Ks + (r0 + r) * P, Qs + lane * P);
      float dp = dot_rows<D>(Vs + (r0 + r) * P, Gs + lane * P);
      const float pv = (i >= j && lse_i != INFINITY) ? exp2f(sc - lse_i) : 0.0f;  // i < L implied by finite lse
      float pdrop = pv;
      if (drop.on) {
        const bool keep = dropout_keep(drop.seed, drop.offset, bh, i, j, L, drop.threshold);
        pdrop = keep ? pv * drop.inv_keep : 0.0f;
        dp = keep ? dp * drop.inv_keep : 0.0f;
      }
      pd[r] = pdrop;
      ds[r] = pv * (dp - delta_i);
    }
    const int in = min(kTile, L - i0);
    for (int ii = 0; ii < in; ++ii) {
      float qv[NT], gg[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) {
        qv[t] = Qs[ii * P + lane + 32 * t];
        gg[t] = Gs[ii * P + lane + 32 * t];
      }
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float pj = __shfl_sync(0xffffffffu, pd[r], ii);
        const float dsj = __shfl_sync(0xffffffffu, ds[r], ii);
#pragma unroll
        for (int t = 0; t < NT; ++t) {
          gv[r][t] = fmaf(pj, gg[t], gv[r][t]);
          gk[r][t] = fmaf(dsj, qv[t], gk[r][t]);
        }
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int j = k0 + r0 + r;
    if (j >= L) continue;
#pragma unroll
    for (int t = 0; t < NT; ++t) {
      dk[static_cast<int64_t>(j) * p.dk_strides.l + lane + 32 * t] = from_float<T>(gk[r][t] * s.scale);
      dv[static_cast<int64_t>(j) * p.dv_strides.l + lane + 32 * t] = from_float<T>(gv[r][t]);
    }
  }
}

// Launcher (instantiated in attention_bwd.cu; the CPU emulator calls it too). dQ and dK/dV are two kernels of
// the same signature: each needs its own shared-memory attribute.
template <typename T, int D>
void launch_backward(const AttentionBackwardParams& p, cudaStream_t stream) {
  const int smem = (2 * kBlockRows + 2 * kTile) * pitch<D>() * static_cast<int>(sizeof(float));
  const dim3 grid(p.shape.B * p.shape.H, (p.shape.L + kBlockRows - 1) / kBlockRows);
  const uint32_t threshold = dropout_threshold(p.shape.dropout_p);
  launch_kernel(attention_dq_kernel<T, D>, "attention_dq_kernel", grid, kThreads, smem, stream, p, threshold);
  launch_kernel(attention_dkdv_kernel<T, D>, "attention_dkdv_kernel", grid, kThreads, smem, stream, p, threshold);
}

}  // namespace attn
}  // namespace kernels
}  // namespace pyseqrl
