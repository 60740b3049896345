// The draw of one SegmentSampler window, shared by the CPU sampler (csrc/core/segment_sampler.cpp) and the GPU
// gather kernel (csrc/kernels/segment_gather_kernel.cuh), so both produce the same stream bit for bit.
#pragma once

#include <cstdint>

#include "core/rng.hpp"

namespace pyseqrl {

// First index e with ends[e] > step (std::upper_bound) over E >= 1 increasing episode ends. Branch-free: a fixed
// number of halvings whose selects compile to conditional moves, where a branch would be mispredicted half the time.
PYSEQRL_HD int64_t episode_of_step(const int64_t* ends, int64_t E, int64_t step) {
  const int64_t* base = ends;  // the answer lies in [base - ends, base - ends + n]
  int64_t n = E;
  while (n > 1) {
    const int64_t half = n / 2;
    base += half * static_cast<int64_t>(base[half - 1] <= step);
    n -= half;
  }
  return (base - ends) + (*base <= step ? 1 : 0);
}

// Row `row` of the batch whose stream key is counter_stream(seed, batch index): an episode, with probability
// proportional to its length when by_length (the episode of a uniform step) or uniformly, then a start offset
// uniform over the episode. ends: [E] exclusive episode ends, the last equal to N.
PYSEQRL_HD void draw_window(uint64_t key, uint64_t row, const int64_t* ends, int64_t E, int64_t N, bool by_length,
                            int64_t* episode, int64_t* start) {
  const uint64_t u0 = counter_hash_at(key, row, 0);
  const uint64_t u1 = counter_hash_at(key, row, 1);
  const int64_t step = static_cast<int64_t>(uniform_below(u0, static_cast<uint64_t>(N)));
  const int64_t e = by_length ? episode_of_step(ends, E, step)
                              : static_cast<int64_t>(uniform_below(u0, static_cast<uint64_t>(E)));
  const int64_t first = e == 0 ? 0 : ends[e - 1];
  *episode = e;
  *start = static_cast<int64_t>(uniform_below(u1, static_cast<uint64_t>(ends[e] - first)));
}

}  // namespace pyseqrl
