#include "core/returns.hpp"

#include <cmath>

#include "core/check.hpp"
#include "core/thread_pool.hpp"

namespace pyseqrl {

void check_episode_ends(const int64_t* ends, int64_t num_episodes, int64_t n, const char* what) {
  PYSEQRL_CHECK(num_episodes > 0, what, ": expected at least one episode, got none");
  int64_t prev = 0;
  for (int64_t e = 0; e < num_episodes; ++e) {
    PYSEQRL_CHECK(ends[e] > prev, what, ": expected strictly increasing positive end offsets (no empty episode), got ",
                  what, "[", e, "] = ", ends[e], " after ", prev);
    prev = ends[e];
  }
  PYSEQRL_CHECK(prev == n, what, ": the last end offset must equal the number of steps ", n, ", got ", prev);
}

void returns_to_go(const float* rewards, int64_t n, const int64_t* ends, int64_t num_episodes, double gamma,
                   float* out, ThreadPool* pool) {
  PYSEQRL_CHECK(gamma >= 0.0 && gamma <= 1.0, "gamma: expected a value in [0, 1], got ", gamma);
  check_episode_ends(ends, num_episodes, n);
  auto work = [&](int64_t e_lo, int64_t e_hi) {
    for (int64_t e = e_lo; e < e_hi; ++e) {
      const int64_t start = e == 0 ? 0 : ends[e - 1];
      double acc = 0.0;
      for (int64_t t = ends[e] - 1; t >= start; --t) {
        const float r = rewards[t];
        PYSEQRL_CHECK(std::isfinite(r), "rewards: expected finite values, got ", r, " at index ", t, " (episode ", e,
                      ")");
        acc = static_cast<double>(r) + gamma * acc;
        out[t] = static_cast<float>(acc);
      }
    }
  };
  // Parallel over episodes; split only when there is enough work to pay for waking the workers.
  const int64_t min_episodes = n >= (1 << 16) ? 1 : num_episodes;
  if (pool != nullptr) {
    pool->parallel_for(num_episodes, work, min_episodes);
  } else {
    work(0, num_episodes);
  }
}

}  // namespace pyseqrl
