// Dropout keep-masks from a counter-based generator.
//
// torch's CPU dropout draws one Bernoulli variate at a time from a Mersenne Twister (~8 ns per element on one
// core), which makes dropout the largest single cost of a small Decision Transformer's training step on the CPU.
// Here element i of the mask is decided by 32 bits of splitmix64(key(seed) ^ f(i / 2)): no sequential state, so
// the mask depends only on (seed, n, keep_prob), not on how it is split across threads.
#pragma once

#include <cstdint>

namespace pyseqrl {

// out[i] = 1 with probability keep_prob (to within 2^-32), else 0, for i in [0, n).
// keep_prob must be in [0, 1]. Element i uses the low (i even) or high (i odd) 32 bits of
// counter_hash(seed, kDropoutStream, i / 2, 0); it is kept when those bits, read as an unsigned integer, are below
// round(keep_prob * 2^32).
void dropout_keep_mask(uint8_t* out, int64_t n, double keep_prob, uint64_t seed);

// The stream of counter_hash that dropout masks use (distinct from the samplers' streams).
inline constexpr uint64_t kDropoutStream = 0xD50D0D0D0D0D0D0DULL;

}  // namespace pyseqrl
