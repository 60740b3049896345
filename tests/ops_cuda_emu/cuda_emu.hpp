// A tiny CPU emulator for pyseqrl's CUDA kernels, so tests can run the real kernel code without a GPU.
//
// Compiled by the host compiler (g++), it maps one CUDA thread to one std::thread: __syncthreads is a block
// barrier, warp shuffles exchange values through a per-warp buffer and barrier, dynamic shared memory is a
// per-block buffer and static __shared__ variables are function statics (blocks run one after another). Only what
// csrc/kernels uses is provided. Slow, exact in fp32 (no FMA contraction differences matter for the tolerances
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
#include <memory>
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
  Block(int threads, size_t smem_bytes) : bar(threads), warps((threads + 31) / 32), smem(smem_bytes / 16 + 1) {}
  std::barrier<> bar;
  std::vector<Warp> warps;
  std::vector<float4> smem;
};

inline thread_local Block* tl_block = nullptr;
inline thread_local int tl_lane = 0, tl_warp = 0;

inline float4* dynamic_smem() { return tl_block->smem.data(); }

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

using std::max;
using std::min;

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

}  // namespace pyseqrl_emu
