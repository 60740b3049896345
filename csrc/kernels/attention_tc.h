// Internal: the tensor-core attention path for short sequences (see attention_tc_kernel.cuh).
#pragma once

#include <cuda_runtime_api.h>

#include <stdexcept>
#include <string>

#include "kernels/attention.h"

namespace pyseqrl {
namespace kernels {

// L <= 64, bf16/fp16, D in {32, 64, 128}, the current device is sm_80 or newer and the library carries sm_80+
// code for it (a build for older architectures only has empty tensor-core kernels).
bool tensor_core_attention_applies(const AttentionShape& s);
void attention_forward_tc(const AttentionForwardParams& p, cudaStream_t stream);
void attention_backward_tc(const AttentionBackwardParams& p, cudaStream_t stream);

// Which path a call takes: true for tensor cores. Throws std::invalid_argument when algo == 2 cannot be honoured.
inline bool use_tensor_cores(const AttentionShape& s, const char* fn) {
  if (s.algo == 1) return false;
  const bool applies = tensor_core_attention_applies(s);
  if (s.algo == 2 && !applies)
    throw std::invalid_argument(std::string(fn) +
                                ": algo=2 (tensor cores) needs L <= 64, bf16/fp16, an sm_80+ device and a build with sm_80+ code");
  return applies;
}

}  // namespace kernels
}  // namespace pyseqrl
