// Decision-Transformer window batches gathered on the GPU from a device-resident dataset (plain structs).
//
// Same stream as the CPU pyseqrl::SegmentSampler (csrc/core/segment_sampler.cpp): row r of batch b draws its
// episode and start from counter_hash(seed, b, r, 0/1) (csrc/core/rng.hpp, shared with the host code), and windows
// are padded (on the left, or on the right with pad_right) exactly as there. The batch index is read from device memory so a CUDA graph can replay the
// gather while a captured increment advances the stream.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyseqrl {
namespace kernels {

struct SegmentGatherParams {
  // dataset, device-resident, C-contiguous
  const float* observations = nullptr;  // [N, S]
  const float* actions = nullptr;       // [N, A]
  const float* rewards = nullptr;       // [N]
  const float* rtg = nullptr;           // [N] return-to-go with the sampler's gamma, not scaled
  const int64_t* episode_ends = nullptr;  // [E] exclusive, strictly increasing, last == N
  const float* state_mean = nullptr;    // [S] or nullptr (no normalisation; then state_inv_std is nullptr too)
  const float* state_inv_std = nullptr;  // [S] 1 / std, computed in fp32 like the CPU sampler
  int64_t N = 0, S = 0, A = 0, E = 0;
  // sampling
  int64_t batch_size = 0, context_len = 0, max_ep_len = 1000;
  uint64_t seed = 0;
  bool sample_by_length = true;
  float inv_return_scale = 1.0f;  // float(1.0 / return_scale), as the CPU sampler computes it
  float pad_action = -10.0f;
  bool pad_right = false;  // padding after the real steps instead of before them
  const int64_t* batch_index = nullptr;  // device scalar: which batch of the stream to produce
  // outputs, C-contiguous
  float* states = nullptr;         // [B, K, S]
  float* out_actions = nullptr;    // [B, K, A]
  float* out_rewards = nullptr;    // [B, K]
  float* returns_to_go = nullptr;  // [B, K]
  int64_t* timesteps = nullptr;    // [B, K]
  float* mask = nullptr;           // [B, K]
};

// One launch producing a whole batch on `stream`; throws std::invalid_argument / std::runtime_error.
void segment_gather(const SegmentGatherParams& params, cudaStream_t stream);

}  // namespace kernels
}  // namespace pyseqrl
