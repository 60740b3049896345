// Explicit instantiations of the tensor-core attention launchers (attention_tc_kernel.cuh), and the rule that
// picks them: L <= 64, bf16/fp16, a device of compute capability 8.0 or newer.
#include <atomic>
#include <string>

#include "kernels/attention_tc.h"
#include "kernels/attention_tc_kernel.cuh"

namespace pyseqrl {
namespace kernels {
namespace tc {

#define PYSEQRL_INSTANTIATE_TC(T, D)                                                      \
  template void launch_forward<T, D>(const AttentionForwardParams&, cudaStream_t);       \
  template void launch_backward<T, D>(const AttentionBackwardParams&, cudaStream_t);
PYSEQRL_INSTANTIATE_TC(__nv_bfloat16, 32)
PYSEQRL_INSTANTIATE_TC(__nv_bfloat16, 64)
PYSEQRL_INSTANTIATE_TC(__nv_bfloat16, 128)
PYSEQRL_INSTANTIATE_TC(__half, 32)
PYSEQRL_INSTANTIATE_TC(__half, 64)
PYSEQRL_INSTANTIATE_TC(__half, 128)
#undef PYSEQRL_INSTANTIATE_TC

template <typename Params>
void dispatch(const Params& p, cudaStream_t stream, void (*bf16[3])(const Params&, cudaStream_t),
              void (*f16[3])(const Params&, cudaStream_t)) {
  const int slot = p.shape.D == 32 ? 0 : p.shape.D == 64 ? 1 : p.shape.D == 128 ? 2 : -1;
  if (slot < 0) throw std::invalid_argument("attention (tensor cores): D must be 32, 64 or 128, got " + std::to_string(p.shape.D));
  (p.shape.dtype == DType::kBFloat16 ? bf16 : f16)[slot](p, stream);
}

}  // namespace tc

// The WMMA bodies exist only in code compiled for sm_80+ (older targets get empty kernels): check the virtual
// architecture of the code the driver actually loaded for this device, once per device (any thread may ask).
static bool tensor_core_code_loaded() {
  static std::atomic<int> cache[64];  // 0 unknown, 1 yes, 2 no
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  int known = device >= 0 && device < 64 ? cache[device].load(std::memory_order_relaxed) : 0;
  if (known == 0) {
    cudaFuncAttributes attr{};
    check_cuda(cudaFuncGetAttributes(&attr, tc::attention_fwd_tc_kernel<__nv_bfloat16, 64>),
               "cudaFuncGetAttributes(attention_fwd_tc_kernel)");
    known = device_cc_major() >= 8 && attr.ptxVersion >= 80 ? 1 : 2;
    if (device >= 0 && device < 64) cache[device].store(known, std::memory_order_relaxed);
  }
  return known == 1;
}

bool tensor_core_attention_applies(const AttentionShape& s) {
  return s.L <= tc::kMaxLen && s.dtype != DType::kFloat32 && (s.D == 32 || s.D == 64 || s.D == 128) &&
         tensor_core_code_loaded();
}

void attention_forward_tc(const AttentionForwardParams& p, cudaStream_t stream) {
  using F = void (*)(const AttentionForwardParams&, cudaStream_t);
  F bf16[3] = {tc::launch_forward<__nv_bfloat16, 32>, tc::launch_forward<__nv_bfloat16, 64>,
               tc::launch_forward<__nv_bfloat16, 128>};
  F f16[3] = {tc::launch_forward<__half, 32>, tc::launch_forward<__half, 64>, tc::launch_forward<__half, 128>};
  tc::dispatch(p, stream, bf16, f16);
}

void attention_backward_tc(const AttentionBackwardParams& p, cudaStream_t stream) {
  using F = void (*)(const AttentionBackwardParams&, cudaStream_t);
  F bf16[3] = {tc::launch_backward<__nv_bfloat16, 32>, tc::launch_backward<__nv_bfloat16, 64>,
               tc::launch_backward<__nv_bfloat16, 128>};
  F f16[3] = {tc::launch_backward<__half, 32>, tc::launch_backward<__half, 64>, tc::launch_backward<__half, 128>};
  tc::dispatch(p, stream, bf16, f16);
}

}  // namespace kernels
}  // namespace pyseqrl
