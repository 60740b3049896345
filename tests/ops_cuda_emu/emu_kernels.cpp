// C entry points (for ctypes) that run csrc/kernels' device code under the CPU emulator (cuda_emu.hpp).
#include "cuda_emu.hpp"
// the emulator must come first
#include "kernels/attention_bwd_kernel.cuh"
#include "kernels/attention_fwd_kernel.cuh"
#include "kernels/attention_tc_kernel.cuh"
#include "kernels/segment_gather_kernel.cuh"

#include <string>

namespace k = pyseqrl::kernels;
namespace a = pyseqrl::kernels::attn;

// --- the CUDA runtime calls the launchers make, emulated (see cuda_emu.hpp) ------------------------------------
extern "C" {

cudaError_t cudaFuncSetAttribute(const void* func, cudaFuncAttribute attr, int value) {
  auto& rt = pyseqrl_emu::runtime();
  std::lock_guard<std::mutex> lock(rt.mu);
  if (attr != cudaFuncAttributeMaxDynamicSharedMemorySize) return cudaErrorNotSupported;
  if (func == nullptr || value < 0 || value > pyseqrl_emu::kMaxDynamicSmemOptIn) return cudaErrorInvalidValue;
  rt.max_dynamic_smem[func] = value;
  return cudaSuccess;
}

cudaError_t cudaGetLastError(void) {
  auto& rt = pyseqrl_emu::runtime();
  std::lock_guard<std::mutex> lock(rt.mu);
  const cudaError_t err = rt.last_error;
  rt.last_error = cudaSuccess;
  return err;
}

cudaError_t cudaGetDevice(int* device) {
  *device = 0;
  return cudaSuccess;
}

const char* cudaGetErrorName(cudaError_t error) {
  switch (error) {
    case cudaSuccess: return "cudaSuccess";
    case cudaErrorInvalidValue: return "cudaErrorInvalidValue";
    case cudaErrorNotSupported: return "cudaErrorNotSupported";
    default: return "cudaError (emulated)";
  }
}

const char* cudaGetErrorString(cudaError_t error) {
  return error == cudaErrorInvalidValue ? "invalid argument" : cudaGetErrorName(error);
}

}  // extern "C"

namespace {

std::string g_last_message;  // what the last failing entry point threw

k::Strides4 strides(const int64_t* s) {
  k::Strides4 r;
  r.b = s[0], r.h = s[1], r.l = s[2];
  return r;
}

k::AttentionShape shape(int dtype, int B, int H, int L, int D, float scale, float dropout_p, const int64_t* philox,
                        const uint8_t* mask, int64_t mask_stride) {
  k::AttentionShape s;
  s.B = B, s.H = H, s.L = L, s.D = D, s.dtype = static_cast<k::DType>(dtype), s.scale = scale;
  s.dropout_p = dropout_p, s.philox = philox, s.key_mask = mask, s.mask_stride_b = mask_stride;
  return s;
}

// The launchers of csrc/kernels themselves (grid, shared memory, attribute, launch check), run on the host.
template <typename T, int D>
void fwd(const k::AttentionForwardParams& p) {
  if (p.shape.algo == 2) {
    if constexpr (!std::is_same<T, float>::value) pyseqrl::kernels::tc::launch_forward<T, D>(p, nullptr);
    return;
  }
  a::launch_forward<T, D>(p, nullptr);
}

template <typename T, int D>
void bwd(const k::AttentionBackwardParams& p) {
  if (p.shape.algo == 2) {
    if constexpr (!std::is_same<T, float>::value) pyseqrl::kernels::tc::launch_backward<T, D>(p, nullptr);
    return;
  }
  a::launch_backward<T, D>(p, nullptr);
}

// Runs f, turning an exception (a failed launch check) into return code 3 and emu_last_error()'s message.
template <typename F>
int guarded(F&& f) {
  try {
    return f();
  } catch (const std::exception& e) {
    g_last_message = e.what();
    return 3;
  }
}

// Only the instantiations the tests use (compile time): fp32 at every D, bf16 at 64 and 128, fp16 at 32.
template <typename P>
int dispatch(int dtype, int D, const P& p, void (*f32_32)(const P&), void (*f32_64)(const P&),
             void (*f32_128)(const P&), void (*bf16_64)(const P&), void (*bf16_128)(const P&),
             void (*f16_32)(const P&)) {
  if (p.shape.algo == 2 && (dtype == 0 || p.shape.L > 64)) return 2;
  if (dtype == 0 && D == 32) return f32_32(p), 0;
  if (dtype == 0 && D == 64) return f32_64(p), 0;
  if (dtype == 0 && D == 128) return f32_128(p), 0;
  if (dtype == 1 && D == 64) return bf16_64(p), 0;
  if (dtype == 1 && D == 128) return bf16_128(p), 0;
  if (dtype == 2 && D == 32) return f16_32(p), 0;
  return 1;
}

}  // namespace

extern "C" {

// Launches a kernel needing smem bytes of dynamic shared memory, after cudaFuncSetAttribute(attribute) when
// attribute > 0: 0 when it ran, 3 when the launch check failed (checks the emulated runtime itself).
static void probe_kernel() {}
int emu_probe_launch(int smem, int attribute) {
  return guarded([&] {
    if (attribute > 0)
      k::check_cuda(cudaFuncSetAttribute(reinterpret_cast<const void*>(probe_kernel),
                                         cudaFuncAttributeMaxDynamicSharedMemorySize, attribute),
                    "cudaFuncSetAttribute");
    pyseqrl_emu::launch_kernel(reinterpret_cast<const void*>(probe_kernel), dim3(1), 1, smem, [] { probe_kernel(); });
    k::check_launch("probe_kernel");
    return 0;
  });
}

// Message of the last entry point that returned 3.
const char* emu_last_error() { return g_last_message.c_str(); }

// Forgets every kernel's shared-memory attribute, as a fresh process would have it.
void emu_reset_func_attributes() {
  auto& rt = pyseqrl_emu::runtime();
  std::lock_guard<std::mutex> lock(rt.mu);
  rt.max_dynamic_smem.clear();
  rt.last_error = cudaSuccess;
}

int emu_attention_forward(int dtype, const void* q, const int64_t* qs, const void* k_, const int64_t* ks,
                          const void* v, const int64_t* vs, void* o, const int64_t* os, float* lse,
                          const uint8_t* mask, int64_t mask_stride, int B, int H, int L, int D, float scale,
                          float dropout_p, const int64_t* philox, int algo) {
  k::AttentionForwardParams p;
  p.shape = shape(dtype, B, H, L, D, scale, dropout_p, philox, mask, mask_stride);
  p.shape.algo = algo;
  p.q = q, p.k = k_, p.v = v, p.o = o, p.lse = lse;
  p.q_strides = strides(qs), p.k_strides = strides(ks), p.v_strides = strides(vs), p.o_strides = strides(os);
  return guarded([&] {
    return dispatch<k::AttentionForwardParams>(dtype, D, p, fwd<float, 32>, fwd<float, 64>, fwd<float, 128>,
                                               fwd<__nv_bfloat16, 64>, fwd<__nv_bfloat16, 128>, fwd<__half, 32>);
  });
}

int emu_attention_backward(int dtype, const void* q, const void* k_, const void* v, const void* o, const void* g,
                           void* dq, void* dk, void* dv, const int64_t* strides8, const float* lse, float* delta,
                           const uint8_t* mask, int64_t mask_stride, int B, int H, int L, int D, float scale,
                           float dropout_p, const int64_t* philox, int algo) {
  k::AttentionBackwardParams p;
  p.shape = shape(dtype, B, H, L, D, scale, dropout_p, philox, mask, mask_stride);
  p.shape.algo = algo;
  p.q = q, p.k = k_, p.v = v, p.o = o, p.dout = g, p.dq = dq, p.dk = dk, p.dv = dv, p.lse = lse, p.delta = delta;
  p.q_strides = strides(strides8), p.k_strides = strides(strides8 + 3), p.v_strides = strides(strides8 + 6);
  p.o_strides = strides(strides8 + 9), p.dout_strides = strides(strides8 + 12), p.dq_strides = strides(strides8 + 15);
  p.dk_strides = strides(strides8 + 18), p.dv_strides = strides(strides8 + 21);
  return guarded([&] {
    return dispatch<k::AttentionBackwardParams>(dtype, D, p, bwd<float, 32>, bwd<float, 64>, bwd<float, 128>,
                                                bwd<__nv_bfloat16, 64>, bwd<__nv_bfloat16, 128>, bwd<__half, 32>);
  });
}

void emu_dropout_mask(int B, int H, int L, float dropout_p, const int64_t* philox, uint8_t* out) {
  const uint32_t thr = k::dropout_threshold(dropout_p);
  pyseqrl_emu::launch(dim3(4), 64, 0, [&] { a::dropout_mask_kernel(B * H, L, thr, philox, out); });
}

void emu_segment_gather(const float* obs, const float* act, const float* rew, const float* rtg, const int64_t* ends,
                        const float* mean, const float* inv_std, int64_t N, int64_t S, int64_t A, int64_t E,
                        int64_t batch_size, int64_t context_len, int64_t max_ep_len, uint64_t seed,
                        int sample_by_length, float inv_return_scale, float pad_action, int pad_right,
                        const int64_t* batch_index, float* states, float* actions, float* rewards, float* rtg_out,
                        int64_t* timesteps, float* mask) {
  k::SegmentGatherParams p;
  p.observations = obs, p.actions = act, p.rewards = rew, p.rtg = rtg, p.episode_ends = ends;
  p.state_mean = mean, p.state_inv_std = inv_std, p.N = N, p.S = S, p.A = A, p.E = E;
  p.batch_size = batch_size, p.context_len = context_len, p.max_ep_len = max_ep_len, p.seed = seed;
  p.sample_by_length = sample_by_length != 0, p.inv_return_scale = inv_return_scale, p.pad_action = pad_action;
  p.pad_right = pad_right != 0, p.batch_index = batch_index, p.states = states, p.out_actions = actions;
  p.out_rewards = rewards, p.returns_to_go = rtg_out, p.timesteps = timesteps, p.mask = mask;
  pyseqrl_emu::launch(dim3(static_cast<unsigned>(batch_size)), k::gather::kGatherThreads, 0,
                      [&] { k::gather::segment_gather_kernel(p); });
}

}  // extern "C"
