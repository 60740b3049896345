// Causal self-attention with a key padding mask, forward and backward (plain structs; no torch, no Python).
//
// Layout: q, k, v, o and their gradients are [B, H, L, D] tensors addressed through element strides for the batch,
// head and position dimensions (the head dimension D is contiguous), so the transposed views GPT-2 produces
// ([B, L, H, D] memory seen as [B, H, L, D]) are read and written in place. Query i attends to key j when
// j <= i and key_mask[b, j] != 0; a query with no such key (a left-padded row) outputs zeros and receives zero
// gradient. Softmax statistics are kept in fp32 whatever the storage dtype (fp32, bf16, fp16).
//
// Dropout (optional) drops attention probabilities with Philox4x32-10 keyed by (seed, offset) read from a device
// pointer, so one draw of the seed on the device makes the forward, the backward and a CUDA graph replay agree.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace pyseqrl {
namespace kernels {

enum class DType : int { kFloat32 = 0, kBFloat16 = 1, kFloat16 = 2 };

// Element strides of one [B, H, L, D] tensor (D is contiguous).
struct Strides4 {
  int64_t b = 0, h = 0, l = 0;
};

struct AttentionShape {
  int B = 0, H = 0, L = 0, D = 0;
  DType dtype = DType::kFloat32;
  float scale = 1.0f;           // multiplies q.k before the softmax
  float dropout_p = 0.0f;       // probability of dropping an attention weight (0: no dropout)
  const int64_t* philox = nullptr;  // device [seed, offset]; required when dropout_p > 0
  const uint8_t* key_mask = nullptr;  // [B, L] bytes, row stride mask_stride_b; nullptr: no padding
  int64_t mask_stride_b = 0;
  int algo = 0;  // 0: automatic; 1: SIMT kernels; 2: tensor-core kernels (L <= 64, bf16/fp16, sm_80+)
};

struct AttentionForwardParams {
  AttentionShape shape;
  const void* q = nullptr;
  const void* k = nullptr;
  const void* v = nullptr;
  void* o = nullptr;
  Strides4 q_strides, k_strides, v_strides, o_strides;
  float* lse = nullptr;  // [B, H, L] contiguous fp32: log2-sum-exp of the scaled scores (+inf for empty rows)
};

struct AttentionBackwardParams {
  AttentionShape shape;
  const void *q = nullptr, *k = nullptr, *v = nullptr, *o = nullptr, *dout = nullptr;
  void *dq = nullptr, *dk = nullptr, *dv = nullptr;
  Strides4 q_strides, k_strides, v_strides, o_strides, dout_strides, dq_strides, dk_strides, dv_strides;
  const float* lse = nullptr;  // from the forward
  float* delta = nullptr;      // [B, H, L] fp32 workspace: rowsum(dout * o)
};

// Launch on `stream`; throw std::runtime_error if a launch fails and std::invalid_argument on unsupported D/L.
void attention_forward(const AttentionForwardParams& params, cudaStream_t stream);
void attention_backward(const AttentionBackwardParams& params, cudaStream_t stream);
// The dropout keep-mask the kernels use, as bytes [B, H, L, L] (1 = kept); for tests.
void attention_dropout_mask(int B, int H, int L, float dropout_p, const int64_t* philox, uint8_t* out,
                            cudaStream_t stream);

constexpr int kAttentionMaxLen = 512;

}  // namespace kernels
}  // namespace pyseqrl
