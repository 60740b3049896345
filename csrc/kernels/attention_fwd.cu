// Forward of causal self-attention with a key padding mask (see attention.h for the contract): explicit
// instantiations, dispatch and argument checks. The kernels and their launcher are in attention_fwd_kernel.cuh.
#include <algorithm>
#include <string>

#include "kernels/attention.h"
#include "kernels/attention_tc.h"
#include "kernels/attention_fwd_kernel.cuh"

namespace pyseqrl {
namespace kernels {
namespace attn {

#define PYSEQRL_INSTANTIATE_FWD(T, D) template void launch_forward<T, D>(const AttentionForwardParams&, cudaStream_t);
PYSEQRL_INSTANTIATE_FWD(float, 32)
PYSEQRL_INSTANTIATE_FWD(float, 64)
PYSEQRL_INSTANTIATE_FWD(float, 128)
PYSEQRL_INSTANTIATE_FWD(__nv_bfloat16, 32)
PYSEQRL_INSTANTIATE_FWD(__nv_bfloat16, 64)
PYSEQRL_INSTANTIATE_FWD(__nv_bfloat16, 128)
PYSEQRL_INSTANTIATE_FWD(__half, 32)
PYSEQRL_INSTANTIATE_FWD(__half, 64)
PYSEQRL_INSTANTIATE_FWD(__half, 128)
#undef PYSEQRL_INSTANTIATE_FWD

template <typename T>
void forward_dispatch_d(const AttentionForwardParams& p, cudaStream_t stream) {
  switch (p.shape.D) {
    case 32: return launch_forward<T, 32>(p, stream);
    case 64: return launch_forward<T, 64>(p, stream);
    case 128: return launch_forward<T, 128>(p, stream);
    default: throw std::invalid_argument("attention_forward: head dim D must be 32, 64 or 128, got " + std::to_string(p.shape.D));
  }
}

}  // namespace attn

void check_shape(const AttentionShape& s, const char* fn) {
  if (s.B < 1 || s.H < 1 || s.L < 1 || s.L > kAttentionMaxLen)
    throw std::invalid_argument(std::string(fn) + ": expected B, H >= 1 and 1 <= L <= " +
                                std::to_string(kAttentionMaxLen) + ", got B=" + std::to_string(s.B) +
                                " H=" + std::to_string(s.H) + " L=" + std::to_string(s.L));
  if (static_cast<int64_t>(s.B) * s.H > 0x7fffffff)  // one CTA column per (batch, head): grid.x < 2^31
    throw std::invalid_argument(std::string(fn) + ": expected B x H < 2^31, got B=" + std::to_string(s.B) +
                                " H=" + std::to_string(s.H));
  if (!(s.dropout_p >= 0.0f && s.dropout_p < 1.0f))
    throw std::invalid_argument(std::string(fn) + ": dropout_p must be in [0, 1), got " + std::to_string(s.dropout_p));
  if (s.dropout_p > 0.0f && s.philox == nullptr)
    throw std::invalid_argument(std::string(fn) + ": dropout_p > 0 needs the philox [seed, offset] device pointer");
}

void attention_forward(const AttentionForwardParams& p, cudaStream_t stream) {
  check_shape(p.shape, "attention_forward");
  if (use_tensor_cores(p.shape, "attention_forward")) return attention_forward_tc(p, stream);
  switch (p.shape.dtype) {
    case DType::kFloat32: return attn::forward_dispatch_d<float>(p, stream);
    case DType::kBFloat16: return attn::forward_dispatch_d<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return attn::forward_dispatch_d<__half>(p, stream);
  }
  throw std::invalid_argument("attention_forward: unknown dtype code " + std::to_string(static_cast<int>(p.shape.dtype)));
}

void attention_dropout_mask(int B, int H, int L, float dropout_p, const int64_t* philox, uint8_t* out,
                            cudaStream_t stream) {
  AttentionShape s;
  s.B = B, s.H = H, s.L = L, s.dropout_p = dropout_p, s.philox = philox;
  check_shape(s, "attention_dropout_mask");
  if (philox == nullptr) throw std::invalid_argument("attention_dropout_mask: philox must be a device pointer");
  const int64_t n = static_cast<int64_t>(B) * H * L * L;
  const int blocks = static_cast<int>(std::min<int64_t>((n + 255) / 256, 65536));
  attn::dropout_mask_kernel<<<blocks, 256, 0, stream>>>(B * H, L, dropout_threshold(dropout_p), philox, out);
  check_launch("dropout_mask_kernel");
}

}  // namespace kernels
}  // namespace pyseqrl
