// Device code of the SegmentSampler gather: CTA = one row (window) of the batch. Launched from segment_gather.cu;
// kept in a header so tests/cuda_emu can run the very same code on the CPU.
#pragma once

#include <cstdint>

#include "core/segment_draw.hpp"
#include "kernels/common.cuh"
#include "kernels/segment_gather.h"

namespace pyseqrl {
namespace kernels {
namespace gather {

constexpr int kGatherThreads = 128;

__global__ void __launch_bounds__(kGatherThreads) segment_gather_kernel(const SegmentGatherParams p) {
  __shared__ int64_t draw[3];  // base step, real length, start offset within the episode
  const int64_t r = blockIdx.x;
  const int64_t K = p.context_len, S = p.S, A = p.A;
  if (threadIdx.x == 0) {
    int64_t e, si;
    draw_window(counter_stream(p.seed, static_cast<uint64_t>(*p.batch_index)), static_cast<uint64_t>(r),
                p.episode_ends, p.E, p.N, p.sample_by_length, &e, &si);
    const int64_t start = e == 0 ? 0 : p.episode_ends[e - 1];
    draw[0] = start + si;
    draw[1] = min(K, p.episode_ends[e] - (start + si));
    draw[2] = si;
  }
  __syncthreads();
  const int64_t base = draw[0], tlen = draw[1], si = draw[2];
  const int64_t real0 = p.pad_right ? 0 : K - tlen;  // position of the first real step
  const bool normalise = p.state_mean != nullptr;

  // states [K, S]: padding rows hold (0 - mean) / std (0 without normalisation)
  float* st = p.states + r * K * S;
  for (int64_t idx = threadIdx.x; idx < K * S; idx += kGatherThreads) {
    const int64_t k = idx / S, j = idx % S;
    float x;
    if (k < real0 || k >= real0 + tlen) {
      x = normalise ? (0.0f - p.state_mean[j]) * p.state_inv_std[j] : 0.0f;
    } else {
      x = p.observations[(base + k - real0) * S + j];
      if (normalise) x = (x - p.state_mean[j]) * p.state_inv_std[j];
    }
    st[idx] = x;
  }
  float* ac = p.out_actions + r * K * A;
  for (int64_t idx = threadIdx.x; idx < K * A; idx += kGatherThreads) {
    const int64_t k = idx / A, j = idx % A;
    ac[idx] = k < real0 || k >= real0 + tlen ? p.pad_action : p.actions[(base + k - real0) * A + j];
  }
  for (int64_t k = threadIdx.x; k < K; k += kGatherThreads) {
    const int64_t o = r * K + k;
    if (k < real0 || k >= real0 + tlen) {
      p.out_rewards[o] = 0.0f;
      p.returns_to_go[o] = 0.0f;
      p.timesteps[o] = 0;
      p.mask[o] = 0.0f;
    } else {
      const int64_t t = base + k - real0;
      p.out_rewards[o] = p.rewards[t];
      p.returns_to_go[o] = p.rtg[t] * p.inv_return_scale;
      p.timesteps[o] = min(si + k - real0, p.max_ep_len - 1);
      p.mask[o] = 1.0f;
    }
  }
}

}  // namespace gather
}  // namespace kernels
}  // namespace pyseqrl
