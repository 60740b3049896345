// Backward of causal self-attention with a key padding mask (see attention.h and attention_bwd_kernel.cuh):
// explicit instantiations and dispatch (the launcher is in attention_bwd_kernel.cuh).
#include <string>

#include "kernels/attention.h"
#include "kernels/attention_tc.h"
#include "kernels/attention_bwd_kernel.cuh"

namespace pyseqrl {
namespace kernels {
namespace attn {

#define PYSEQRL_INSTANTIATE_BWD(T, D) template void launch_backward<T, D>(const AttentionBackwardParams&, cudaStream_t);
PYSEQRL_INSTANTIATE_BWD(float, 32)
PYSEQRL_INSTANTIATE_BWD(float, 64)
PYSEQRL_INSTANTIATE_BWD(float, 128)
PYSEQRL_INSTANTIATE_BWD(__nv_bfloat16, 32)
PYSEQRL_INSTANTIATE_BWD(__nv_bfloat16, 64)
PYSEQRL_INSTANTIATE_BWD(__nv_bfloat16, 128)
PYSEQRL_INSTANTIATE_BWD(__half, 32)
PYSEQRL_INSTANTIATE_BWD(__half, 64)
PYSEQRL_INSTANTIATE_BWD(__half, 128)
#undef PYSEQRL_INSTANTIATE_BWD

template <typename T>
void backward_dispatch_d(const AttentionBackwardParams& p, cudaStream_t stream) {
  switch (p.shape.D) {
    case 32: return launch_backward<T, 32>(p, stream);
    case 64: return launch_backward<T, 64>(p, stream);
    case 128: return launch_backward<T, 128>(p, stream);
    default: throw std::invalid_argument("attention_backward: head dim D must be 32, 64 or 128, got " + std::to_string(p.shape.D));
  }
}

}  // namespace attn

void check_shape(const AttentionShape& s, const char* fn);  // attention_fwd.cu

void attention_backward(const AttentionBackwardParams& p, cudaStream_t stream) {
  check_shape(p.shape, "attention_backward");
  if (use_tensor_cores(p.shape, "attention_backward")) return attention_backward_tc(p, stream);
  switch (p.shape.dtype) {
    case DType::kFloat32: return attn::backward_dispatch_d<float>(p, stream);
    case DType::kBFloat16: return attn::backward_dispatch_d<__nv_bfloat16>(p, stream);
    case DType::kFloat16: return attn::backward_dispatch_d<__half>(p, stream);
  }
  throw std::invalid_argument("attention_backward: unknown dtype code " + std::to_string(static_cast<int>(p.shape.dtype)));
}

}  // namespace kernels
}  // namespace pyseqrl
