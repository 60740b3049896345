#include "core/dropout.hpp"

#include <cmath>

#include "core/check.hpp"
#include "core/rng.hpp"

namespace pyseqrl {

void dropout_keep_mask(uint8_t* out, int64_t n, double keep_prob, uint64_t seed) {
  PYSEQRL_CHECK(n >= 0, "dropout_keep_mask: n must be >= 0, got ", n);
  PYSEQRL_CHECK(keep_prob >= 0.0 && keep_prob <= 1.0, "dropout_keep_mask: keep_prob must be in [0, 1], got ",
                keep_prob);
  // keep iff bits < threshold; threshold = 2^32 keeps everything, 0 nothing
  const uint64_t threshold = static_cast<uint64_t>(std::llround(keep_prob * 4294967296.0));
  const uint64_t key = counter_stream(seed, kDropoutStream);
  const int64_t pairs = n / 2;
  for (int64_t j = 0; j < pairs; ++j) {
    const uint64_t bits = counter_hash_at(key, static_cast<uint64_t>(j), 0);
    out[2 * j] = static_cast<uint8_t>((bits & 0xFFFFFFFFULL) < threshold);
    out[2 * j + 1] = static_cast<uint8_t>((bits >> 32) < threshold);
  }
  if (n & 1) {
    const uint64_t bits = counter_hash_at(key, static_cast<uint64_t>(pairs), 0);
    out[n - 1] = static_cast<uint8_t>((bits & 0xFFFFFFFFULL) < threshold);
  }
}

}  // namespace pyseqrl
