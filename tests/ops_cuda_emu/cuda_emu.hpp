// A tiny CPU emulator for pyseqrl's CUDA kernels, so tests can run the real kernel code without a GPU.
//
// Compiled by the host compiler (g++), it maps one CUDA thread to one std::thread: __syncthreads is a block
// barrier, warp shuffles exchange values through a per-warp buffer and barrier, dynamic shared memory is a
// per-block buffer and static __shared__ variables are function statics (blocks run one after another). Only what
// csrc/kernels uses is provided. The few runtime calls the launchers make (cudaFuncSetAttribute, cudaGetLastError,
// ...) are emulated in emu_kernels.cpp: each kernel (function pointer) has its own dynamic shared-memory limit,
// 48 KiB until raised, and a launch above it fails with cudaErrorInvalidValue as on a GPU. Slow, exact in fp32 (no FMA contraction differences matter for the tolerances
// used), and good at catching indexing, masking and synchronisation bugs.
#pragma once

#define PYSEQRL_CUDA_EMULATION 1

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <type_traits>
#include <thread>
#include <vector>

#undef __shared__
#define __shared__ static
#define __launch_bounds__(...)

namespace pyseqrl_emu {

struct Warp {
  float vals[32] = {};
  std::barrier<> bar{32};
};

struct Block {
  Block(int threads, size_t smem_bytes) : bar(threads), warps((threads + 31) / 32), smem(smem_bytes / 16 + 9) {}
  std::barrier<> bar;
  std::vector<Warp> warps;
  std::vector<float4> smem;  // 8 spare float4 so the base can be aligned to 128 bytes, as on the GPU
  float4* aligned() {
    const uintptr_t p = reinterpret_cast<uintptr_t>(smem.data());
    return reinterpret_cast<float4*>((p + 127) / 128 * 128);
  }
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_lane = 0, tl_warp = 0;

inline float4* dynamic_smem() { return tl_block->aligned(); }

}  // namespace pyseqrl_emu

inline thread_local uint3 threadIdx;
inline thread_local uint3 blockIdx;
inline dim3 blockDim, gridDim;

inline void __syncthreads() { pyseqrl_emu::tl_block->bar.arrive_and_wait(); }

inline float __shfl_sync(unsigned /*mask*/, float v, int src) {
  auto& w = pyseqrl_emu::tl_block->warps[pyseqrl_emu::tl_warp];
  w.vals[pyseqrl_emu::tl_lane] = v;
  w.bar.arrive_and_wait();
  const float r = w.vals[src & 31];
  w.bar.arrive_and_wait();
  return r;
}

inline float __shfl_xor_sync(unsigned mask, float v, int lane_mask) {
  return __shfl_sync(mask, v, pyseqrl_emu::tl_lane ^ lane_mask);
}

inline void __syncwarp(unsigned /*mask*/ = 0xffffffffu) {
  pyseqrl_emu::tl_block->warps[pyseqrl_emu::tl_warp].bar.arrive_and_wait();
}

using std::max;
using std::min;

// WMMA 16x16x16 with whole-tile fragments: every lane holds the full tile and computes the full product (the
// real layout is opaque to the kernels, which only load, multiply, fill and store). Stores are done by lane 0;
// kernels __syncwarp() before other lanes read stored data, as they must on a GPU too.
namespace nvcuda {
namespace wmma {
struct matrix_a {};
struct matrix_b {};
struct accumulator {};
struct row_major {};
struct col_major {};
enum layout_t { mem_row_major, mem_col_major };

template <typename Use, int M, int N, int K, typename T, typename Layout = void>
struct fragment {
  static_assert(M == 16 && N == 16 && K == 16, "the emulator only has 16x16x16 tiles");
  float x[256];
};

inline float emu_to_float(float v) { return v; }
inline float emu_to_float(__nv_bfloat16 v) { return __bfloat162float(v); }
inline float emu_to_float(__half v) { return __half2float(v); }

template <typename Use, typename T, typename Layout>
void load_matrix_sync(fragment<Use, 16, 16, 16, T, Layout>& f, const T* p, unsigned ldm) {
  static_assert(!std::is_same<Use, accumulator>::value, "accumulator loads are not emulated");
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) throw std::runtime_error("wmma::load_matrix_sync: pointer not 32-byte aligned");
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c)
      f.x[r * 16 + c] = emu_to_float(std::is_same<Layout, row_major>::value ? p[r * ldm + c] : p[c * ldm + r]);
}

template <typename T>
void fill_fragment(fragment<accumulator, 16, 16, 16, T>& f, float v) {
  for (float& e : f.x) e = v;
}

template <typename TA, typename LA, typename TB, typename LB>
void mma_sync(fragment<accumulator, 16, 16, 16, float>& d, const fragment<matrix_a, 16, 16, 16, TA, LA>& a,
              const fragment<matrix_b, 16, 16, 16, TB, LB>& b, const fragment<accumulator, 16, 16, 16, float>& c) {
  float out[256];
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 16; ++n) {
      float acc = c.x[m * 16 + n];
      for (int k = 0; k < 16; ++k) acc += a.x[m * 16 + k] * b.x[k * 16 + n];
      out[m * 16 + n] = acc;
    }
  std::copy(out, out + 256, d.x);
}

inline void store_matrix_sync(float* p, const fragment<accumulator, 16, 16, 16, float>& f, unsigned ldm,
                              layout_t layout) {
  if (reinterpret_cast<uintptr_t>(p) % 32 != 0) throw std::runtime_error("wmma::store_matrix_sync: pointer not 32-byte aligned");
  if (pyseqrl_emu::tl_lane != 0) return;
  for (int r = 0; r < 16; ++r)
    for (int c = 0; c < 16; ++c) (layout == mem_row_major ? p[r * ldm + c] : p[c * ldm + r]) = f.x[r * 16 + c];
}
}  // namespace wmma
}  // namespace nvcuda

namespace pyseqrl_emu {

// Runs kernel() for every thread of every block of a 2-D grid of 1-D blocks, blocks one after another.
template <typename Kernel>
void launch(dim3 grid, int threads, size_t smem_bytes, Kernel&& kernel) {
  gridDim = grid;
  blockDim = dim3(threads);
  for (unsigned by = 0; by < grid.y; ++by) {
    for (unsigned bx = 0; bx < grid.x; ++bx) {
      Block block(threads, smem_bytes);
      std::vector<std::thread> pool;
      pool.reserve(threads);
      for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
          tl_block = &block;
          tl_lane = t % 32;
          tl_warp = t / 32;
          threadIdx = uint3{static_cast<unsigned>(t), 0, 0};
          blockIdx = uint3{bx, by, 0};
          kernel();
        });
      }
      for (auto& th : pool) th.join();
    }
  }
}

// Per-kernel cudaFuncAttributeMaxDynamicSharedMemorySize, as cudaFuncSetAttribute leaves it; the sticky last
// error that cudaGetLastError returns and clears.
constexpr int kDefaultDynamicSmem = 48 * 1024;
constexpr int kMaxDynamicSmemOptIn = 227 * 1024;  // sm_90; sm_80 allows 163 KiB
struct Runtime {
  std::mutex mu;
  std::map<const void*, int> max_dynamic_smem;
  cudaError_t last_error = cudaSuccess;
};
inline Runtime& runtime() {
  static Runtime r;
  return r;
}

// What a real launch of kernel `fn` with `smem` bytes of dynamic shared memory does: fail (setting the last error,
// running nothing) above the kernel's limit, otherwise run it.
template <typename Kernel>
void launch_kernel(const void* fn, dim3 grid, int threads, size_t smem_bytes, Kernel&& kernel) {
  {
    auto& rt = runtime();
    std::lock_guard<std::mutex> lock(rt.mu);
    const auto it = rt.max_dynamic_smem.find(fn);
    const size_t limit = it == rt.max_dynamic_smem.end() ? kDefaultDynamicSmem : static_cast<size_t>(it->second);
    if (smem_bytes > limit) {
      rt.last_error = cudaErrorInvalidValue;
      return;
    }
  }
  launch(grid, threads, smem_bytes, std::forward<Kernel>(kernel));
}

}  // namespace pyseqrl_emu
