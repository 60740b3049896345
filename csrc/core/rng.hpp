// Random numbers for the data core.
//
// Two kinds, both portable (the same numbers on every platform and compiler, unlike <random>'s distributions):
//  * counter-based draws, hash(seed, batch, row, k) -> uint64, used by the SegmentSampler so a batch depends only on
//    (seed, batch index) and not on how many threads fill it; usable in CUDA device code too.
//  * xoshiro256**, a small sequential generator with a 4-word state that can be saved and restored exactly, used by
//    the ReplayBuffer.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define PYSEQRL_HD __host__ __device__ __forceinline__
#else
#define PYSEQRL_HD inline
#endif

namespace pyseqrl {

PYSEQRL_HD uint64_t splitmix64(uint64_t x) {
  x += 0x9E3779B97F4A7C15ULL;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ULL;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBULL;
  return x ^ (x >> 31);
}

// The key of stream `stream` of seed `seed`: counter_hash(seed, stream, index, k) is counter_hash_at(key, index, k),
// so a caller drawing many indices of one stream mixes the seed and the stream once.
PYSEQRL_HD uint64_t counter_stream(uint64_t seed, uint64_t stream) {
  return splitmix64(splitmix64(seed ^ 0x5851F42D4C957F2DULL) ^ stream);
}

PYSEQRL_HD uint64_t counter_hash_at(uint64_t stream_key, uint64_t index, uint64_t k) {
  return splitmix64(stream_key ^ (index * 0x2545F4914F6CDD1DULL + k));
}

// A well-mixed 64-bit value for the counter (seed, stream, index, k).
PYSEQRL_HD uint64_t counter_hash(uint64_t seed, uint64_t stream, uint64_t index, uint64_t k) {
  return counter_hash_at(counter_stream(seed, stream), index, k);
}

// Uniform integer in [0, n) from 64 random bits (Lemire's multiply-shift; bias below n / 2^64).
PYSEQRL_HD uint64_t uniform_below(uint64_t bits, uint64_t n) {
#if defined(__CUDA_ARCH__)
  return __umul64hi(bits, n);
#else
  return static_cast<uint64_t>((static_cast<unsigned __int128>(bits) * n) >> 64);
#endif
}

// Uniform double in [0, 1) with 53 random bits.
PYSEQRL_HD double uniform_unit(uint64_t bits) { return static_cast<double>(bits >> 11) * 0x1.0p-53; }

struct Xoshiro256 {
  uint64_t s[4];

  explicit Xoshiro256(uint64_t seed = 0) { reseed(seed); }

  void reseed(uint64_t seed) {
    uint64_t x = seed;
    for (auto& w : s) {
      x += 0x9E3779B97F4A7C15ULL;
      w = splitmix64(x);
    }
  }

  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

  uint64_t next() {
    const uint64_t result = rotl(s[1] * 5, 7) * 9;
    const uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
  }

  uint64_t below(uint64_t n) { return uniform_below(next(), n); }
  double unit() { return uniform_unit(next()); }
};

}  // namespace pyseqrl
