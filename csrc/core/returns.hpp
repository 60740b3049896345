// Return-to-go: per-episode discounted reverse cumulative sum over a flat reward array.
#pragma once

#include <cstdint>

namespace pyseqrl {

class ThreadPool;

// Validates episode boundaries: ends strictly increasing, ends[0] > 0, ends[num_episodes-1] == n.
// Throws std::invalid_argument naming `what` (e.g. "episode_ends") and the offending position.
void check_episode_ends(const int64_t* ends, int64_t num_episodes, int64_t n, const char* what = "episode_ends");

// out[t] = sum_{u=t}^{end-1} gamma^(u-t) * rewards[u] for t in each episode [start, end).
// Accumulates in double, writes float. Rewards must be finite. pool may be null (single-threaded).
void returns_to_go(const float* rewards, int64_t n, const int64_t* ends, int64_t num_episodes, double gamma,
                   float* out, ThreadPool* pool);

}  // namespace pyseqrl
