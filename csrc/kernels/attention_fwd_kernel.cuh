// Device code of the attention forward (and of the dropout-mask export) and its launcher.
//
// CTA = (batch*head, block of 16 query rows). Keys/values stream through shared memory 32 at a time with an
// online softmax in the log2 domain; the scale and log2(e) are folded into the staged queries.
// Kept in a header so tests/cuda_emu can run the very same code on the CPU.
#pragma once

#include "kernels/attention.h"
#include "kernels/attention_tiles.cuh"

namespace pyseqrl {
namespace kernels {
namespace attn {

template <typename T, int D>
__global__ void __launch_bounds__(kThreads) attention_fwd_kernel(const AttentionForwardParams p, uint32_t threshold) {
  constexpr int P = pitch<D>();
  constexpr int R = kRowsPerWarp;
  constexpr int NT = D / 32;
  PYSEQRL_EXTERN_SMEM(smem4);
  float* Qs = reinterpret_cast<float*>(smem4);  // [kBlockRows][P], scaled by scale * log2(e)
  float* Ks = Qs + kBlockRows * P;              // [kTile][P]
  float* Vs = Ks + kTile * P;                   // [kTile][P]

  const AttentionShape& s = p.shape;
  const int L = s.L;
  const int bh = blockIdx.x, b = bh / s.H, h = bh % s.H;
  const int q0 = blockIdx.y * kBlockRows;
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int r0 = warp * R;  // first local row of this warp

  const T* q = static_cast<const T*>(p.q) + b * p.q_strides.b + h * p.q_strides.h;
  const T* k = static_cast<const T*>(p.k) + b * p.k_strides.b + h * p.k_strides.h;
  const T* v = static_cast<const T*>(p.v) + b * p.v_strides.b + h * p.v_strides.h;
  T* o = static_cast<T*>(p.o) + b * p.o_strides.b + h * p.o_strides.h;
  const uint8_t* mask = s.key_mask == nullptr ? nullptr : s.key_mask + b * s.mask_stride_b;
  const DropoutState drop = load_dropout(s, threshold);

  stage_rows<T, D>(Qs, q, p.q_strides.l, q0, kBlockRows, L, s.scale * kLog2e);

  float m[R], l[R], acc[R][NT];
#pragma unroll
  for (int r = 0; r < R; ++r) {
    m[r] = -INFINITY;
    l[r] = 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) acc[r][t] = 0.0f;
  }

  const int q_last = min(L, q0 + kBlockRows) - 1;  // causal: no key beyond the last query of the block
  for (int k0 = 0; k0 <= q_last; k0 += kTile) {
    __syncthreads();  // the previous tile is consumed (and Qs is staged on the first pass)
    stage_rows<T, D>(Ks, k, p.k_strides.l, k0, kTile, L, 1.0f);
    stage_rows<T, D>(Vs, v, p.v_strides.l, k0, kTile, L, 1.0f);
    __syncthreads();

    const int j = k0 + lane;  // this lane's key
    const bool key_ok = key_allowed(mask, j, L);
    float pr[R];
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = q0 + r0 + r;
      pr[r] = 0.0f;
      if (i >= L || i < k0) continue;  // warp-uniform
      const float sc = dot_rows<D>(Qs + (r0 + r) * P, Ks + lane * P);
      const float sv = (key_ok && j <= i) ? sc : -INFINITY;
      const float m_new = fmaxf(m[r], warp_max(sv));
      if (m_new == -INFINITY) continue;  // no allowed key so far: the row stays empty (warp-uniform)
      const float e = exp2f(sv - m_new);
      const float corr = exp2f(m[r] - m_new);
      l[r] = l[r] * corr + warp_sum(e);
      m[r] = m_new;
#pragma unroll
      for (int t = 0; t < NT; ++t) acc[r][t] *= corr;
      pr[r] = e;
      if (drop.on)
        pr[r] = dropout_keep(drop.seed, drop.offset, bh, i, j, L, drop.threshold) ? e * drop.inv_keep : 0.0f;
    }
    // acc[r] += sum_j pr[r][j] * V[j], keys past the warp's last row contribute nothing (causal)
    const int jn = min(kTile, min(q0 + r0 + R - 1, L - 1) - k0 + 1);
    for (int jj = 0; jj < jn; ++jj) {
      float vv[NT];
#pragma unroll
      for (int t = 0; t < NT; ++t) vv[t] = Vs[jj * P + lane + 32 * t];
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const float pj = __shfl_sync(0xffffffffu, pr[r], jj);
#pragma unroll
        for (int t = 0; t < NT; ++t) acc[r][t] = fmaf(pj, vv[t], acc[r][t]);
      }
    }
  }

#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = q0 + r0 + r;
    if (i >= L) continue;
    const float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
#pragma unroll
    for (int t = 0; t < NT; ++t) o[static_cast<int64_t>(i) * p.o_strides.l + lane + 32 * t] = from_float<T>(acc[r][t] * inv);
    if (lane == 0) p.lse[static_cast<int64_t>(bh) * L + i] = l[r] > 0.0f ? m[r] + log2f(l[r]) : INFINITY;
  }
}

__global__ void dropout_mask_kernel(int BH, int L, uint32_t threshold, const int64_t* philox, uint8_t* out) {
  const int64_t n = static_cast<int64_t>(BH) * L * L;
  const uint64_t seed = static_cast<uint64_t>(philox[0]), offset = static_cast<uint64_t>(philox[1]);
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < n;
       idx += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int j = static_cast<int>(idx % L), i = static_cast<int>((idx / L) % L), bh = static_cast<int>(idx / (static_cast<int64_t>(L) * L));
    out[idx] = dropout_keep(seed, offset, bh, i, j, L, threshold) ? 1 : 0;
  }
}

// Launcher (instantiated in attention_fwd.cu; the CPU emulator calls it too).
template <typename T, int D>
void launch_forward(const AttentionForwardParams& p, cudaStream_t stream) {
  const int smem = (kBlockRows + 2 * kTile) * pitch<D>() * static_cast<int>(sizeof(float));
  const dim3 grid(p.shape.B * p.shape.H, (p.shape.L + kBlockRows - 1) / kBlockRows);
  launch_kernel(attention_fwd_kernel<T, D>, "attention_fwd_kernel", grid, kThreads, smem, stream, p,
                dropout_threshold(p.shape.dropout_p));
}

}  // namespace attn
}  // namespace kernels
}  // namespace pyseqrl
