// Tile geometry and shared-memory staging shared by the attention forward and backward kernels.
//
// Every kernel follows one pattern, sized for the short sequences of Decision Transformers (3K ~ 60 tokens):
// a warp owns kRowsPerWarp rows; for the dot products each lane takes one of the 32 rows of the opposite tile
// (scores come out one per lane, reduced with shuffles), and for the accumulations each lane owns D / 32 columns.
// Tiles are staged in shared memory as fp32 rows padded to D + 4 floats (float4-aligned and bank-conflict free).
#pragma once

#include <cstdint>

#include "kernels/attention.h"
#include "kernels/common.cuh"

namespace pyseqrl {
namespace kernels {
namespace attn {

// Tuning knobs (override with -DPYSEQRL_ATTN_WARPS=... / -DPYSEQRL_ATTN_ROWS_PER_WARP=...; the CPU emulator tests
// run several settings, so any positive values are correct -- only speed changes).
#ifndef PYSEQRL_ATTN_WARPS
#define PYSEQRL_ATTN_WARPS 4
#endif
#ifndef PYSEQRL_ATTN_ROWS_PER_WARP
#define PYSEQRL_ATTN_ROWS_PER_WARP 4
#endif
constexpr int kWarps = PYSEQRL_ATTN_WARPS;
constexpr int kThreads = kWarps * 32;
constexpr int kRowsPerWarp = PYSEQRL_ATTN_ROWS_PER_WARP;
constexpr int kBlockRows = kWarps * kRowsPerWarp;  // rows owned by one CTA (16 by default)
constexpr int kTile = 32;                          // rows of the streamed tile: one per lane
constexpr float kLog2e = 1.4426950408889634f;

template <int D>
constexpr int pitch() {
  return D + 4;
}

// Whether rows of `src` (row stride `stride_l` elements) can be read with 16-byte vector loads.
template <typename T>
__device__ __forceinline__ bool vector_loadable(const T* src, int64_t stride_l) {
  return reinterpret_cast<uintptr_t>(src) % 16 == 0 && (stride_l * static_cast<int64_t>(sizeof(T))) % 16 == 0;
}

// dst[r][d] = factor * src[(row0 + r) * stride_l + d] for r < rows, zero where row0 + r >= L.
// 16-byte loads when the rows allow it (the usual case, GPT-2's strided views included), else element by element.
template <typename T, int D>
__device__ __forceinline__ void stage_rows(float* __restrict__ dst, const T* __restrict__ src, int64_t stride_l,
                                           int row0, int rows, int L, float factor) {
  constexpr int P = pitch<D>();
  constexpr int V = 16 / sizeof(T);  // elements per 16-byte load
  static_assert(D % V == 0 && V % 4 == 0, "rows must split into 16-byte loads and float4 stores");
  if (vector_loadable(src, stride_l)) {
    for (int idx = threadIdx.x; idx < rows * (D / V); idx += kThreads) {
      const int r = idx / (D / V), d = (idx % (D / V)) * V;
      const int row = row0 + r;
      float x[V];
      if (row < L) {
        const uint4 raw = *reinterpret_cast<const uint4*>(src + static_cast<int64_t>(row) * stride_l + d);
        const T* e = reinterpret_cast<const T*>(&raw);
#pragma unroll
        for (int u = 0; u < V; ++u) x[u] = factor * to_float(e[u]);
      } else {
#pragma unroll
        for (int u = 0; u < V; ++u) x[u] = 0.0f;
      }
#pragma unroll
      for (int u = 0; u < V; u += 4)
        *reinterpret_cast<float4*>(dst + r * P + d + u) = make_float4(x[u], x[u + 1], x[u + 2], x[u + 3]);
    }
    return;
  }
  for (int idx = threadIdx.x; idx < rows * D; idx += kThreads) {
    const int r = idx / D, d = idx % D;
    const int row = row0 + r;
    dst[r * P + d] = row < L ? factor * to_float(src[static_cast<int64_t>(row) * stride_l + d]) : 0.0f;
  }
}

// Dot product of a shared-memory row with another, both D floats, float4 at a time.
template <int D>
__device__ __forceinline__ float dot_rows(const float* __restrict__ a, const float* __restrict__ b) {
  float acc = 0.0f;
#pragma unroll
  for (int d = 0; d < D; d += 4) {
    const float4 x = *reinterpret_cast<const float4*>(a + d);
    const float4 y = *reinterpret_cast<const float4*>(b + d);
    acc = fmaf(x.x, y.x, acc);
    acc = fmaf(x.y, y.y, acc);
    acc = fmaf(x.z, y.z, acc);
    acc = fmaf(x.w, y.w, acc);
  }
  return acc;
}

struct DropoutState {
  bool on = false;
  uint64_t seed = 0, offset = 0;
  uint32_t threshold = 0;
  float inv_keep = 1.0f;
};

__device__ __forceinline__ DropoutState load_dropout(const AttentionShape& s, uint32_t threshold) {
  DropoutState st;
  if (s.dropout_p > 0.0f) {
    st.on = true;
    st.seed = static_cast<uint64_t>(s.philox[0]);
    st.offset = static_cast<uint64_t>(s.philox[1]);
    st.threshold = threshold;
    st.inv_keep = 1.0f / (1.0f - s.dropout_p);
  }
  return st;
}

__device__ __forceinline__ bool key_allowed(const uint8_t* mask_row, int j, int L) {
  return j < L && (mask_row == nullptr || mask_row[j] != 0);
}

}  // namespace attn
}  // namespace kernels
}  // namespace pyseqrl
