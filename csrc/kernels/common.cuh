// Small device helpers shared by the kernels: dtype conversion, warp reductions, Philox, launch checks.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <atomic>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <utility>

// Dynamically sized shared memory as `float4 name[]`, 128-byte aligned (WMMA needs 32). Under tests/ops_cuda_emu (the CPU emulator that runs these
// kernels in tests) it is a per-block host buffer instead.
#ifndef PYSEQRL_CUDA_EMULATION
#define PYSEQRL_EXTERN_SMEM(name) extern __shared__ __align__(128) float4 name[]
#else
#define PYSEQRL_EXTERN_SMEM(name) float4* name = ::pyseqrl_emu::dynamic_smem()
#endif

namespace pyseqrl {
namespace kernels {

// Throws std::runtime_error naming the kernel when the last launch (or an earlier asynchronous error) failed.
inline void check_launch(const char* what) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyseqrl CUDA kernel '") + what + "' failed to launch: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

inline void check_cuda(cudaError_t err, const char* what) {
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyseqrl CUDA call '") + what + "' failed: " + cudaGetErrorName(err) +
                             ": " + cudaGetErrorString(err));
}

// Raise the dynamic shared-memory limit of `kernel` to `bytes` (a launch above 48 KiB fails without it). The
// attribute belongs to each kernel, so it is set before every launch: a cheap host call, allowed during stream
// capture, and right whichever kernels ran before on whichever device. (A "done" flag in a static of this template
// would be shared by every kernel of one signature: only the first launched would get its attribute.)
template <typename Kernel>
void allow_dynamic_smem(Kernel kernel, int bytes, const char* what) {
  const cudaError_t err =
      cudaFuncSetAttribute(reinterpret_cast<const void*>(kernel), cudaFuncAttributeMaxDynamicSharedMemorySize, bytes);
  if (err != cudaSuccess)
    throw std::runtime_error(std::string("pyseqrl CUDA kernel '") + what + "': cudaFuncSetAttribute(" +
                             "MaxDynamicSharedMemorySize, " + std::to_string(bytes) + " bytes) failed: " +
                             cudaGetErrorName(err) + ": " + cudaGetErrorString(err));
}

// Launches kernel<<<grid, threads, smem, stream>>>(args...) after raising its dynamic shared-memory limit to
// smem, then checks the launch. Under the CPU emulator (tests/ops_cuda_emu) the same sequence runs on the host,
// where a launch above 48 KiB fails like on a GPU unless the attribute was set for that very kernel.
template <typename... Params, typename... Args>
void launch_kernel(void (*kernel)(Params...), const char* name, dim3 grid, int threads, int smem,
                   cudaStream_t stream, Args&&... args) {
  allow_dynamic_smem(kernel, smem, name);
#ifndef PYSEQRL_CUDA_EMULATION
  kernel<<<grid, threads, smem, stream>>>(std::forward<Args>(args)...);
#else
  (void)stream;
  ::pyseqrl_emu::launch_kernel(reinterpret_cast<const void*>(kernel), grid, threads, static_cast<size_t>(smem),
                               [&] { kernel(args...); });
#endif
  check_launch(name);
}

// Compute capability major of the current device (cached per device; any thread may call it).
inline int device_cc_major() {
  static std::atomic<int> cache[64];  // 0: not known yet
  int device = 0;
  check_cuda(cudaGetDevice(&device), "cudaGetDevice");
  int major = device >= 0 && device < 64 ? cache[device].load(std::memory_order_relaxed) : 0;
  if (major == 0) {
    check_cuda(cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device),
               "cudaDeviceGetAttribute(ComputeCapabilityMajor)");
    if (device >= 0 && device < 64) cache[device].store(major, std::memory_order_relaxed);
  }
  return major;
}

template <typename T>
__device__ __forceinline__ float to_float(T x);
template <>
__device__ __forceinline__ float to_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ float to_float<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <>
__device__ __forceinline__ float to_float<__half>(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T from_float(float x);
template <>
__device__ __forceinline__ float from_float<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half from_float<__half>(float x) { return __float2half(x); }

__device__ __forceinline__ float warp_max(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x = fmaxf(x, __shfl_xor_sync(0xffffffffu, x, o));
  return x;
}

__device__ __forceinline__ float warp_sum(float x) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) x += __shfl_xor_sync(0xffffffffu, x, o);
  return x;
}

// Philox4x32-10 (Salmon et al. 2011, the Random123 reference constants); returns the first of its four words.
__host__ __device__ __forceinline__ uint32_t philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                                         uint32_t k0, uint32_t k1) {
  constexpr uint32_t kM0 = 0xD2511F53u, kM1 = 0xCD9E8D57u, kW0 = 0x9E3779B9u, kW1 = 0xBB67AE85u;
#pragma unroll
  for (int round = 0; round < 10; ++round) {
    const uint64_t p0 = static_cast<uint64_t>(kM0) * c0;
    const uint64_t p1 = static_cast<uint64_t>(kM1) * c2;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    c0 = hi1 ^ c1 ^ k0;
    c1 = lo1;
    c2 = hi0 ^ c3 ^ k1;
    c3 = lo0;
    k0 += kW0;
    k1 += kW1;
  }
  return c0;
}

// Whether attention weight (bh, i, j) survives dropout. `threshold` = dropout_p * 2^32 (words below it drop).
__device__ __forceinline__ bool dropout_keep(uint64_t seed, uint64_t offset, int bh, int i, int j, int L,
                                             uint32_t threshold) {
  const uint32_t word = philox4x32_10(static_cast<uint32_t>(i * L + j), static_cast<uint32_t>(bh),
                                      static_cast<uint32_t>(offset), static_cast<uint32_t>(offset >> 32),
                                      static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32));
  return word >= threshold;
}

inline uint32_t dropout_threshold(float p) {
  const double t = static_cast<double>(p) * 4294967296.0;
  return t >= 4294967295.0 ? 0xFFFFFFFFu : static_cast<uint32_t>(t);
}

}  // namespace kernels
}  // namespace pyseqrl
