#include "core/returns.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

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

namespace {

// Index of the first non-finite value, or -1. Works on the bit patterns so the loop vectorises.
int64_t first_nonfinite(const float* x, int64_t n) {
  constexpr int64_t kBlock = 4096;
  for (int64_t lo = 0; lo < n; lo += kBlock) {
    const int64_t hi = std::min(n, lo + kBlock);
    uint32_t any = 0;
    for (int64_t i = lo; i < hi; ++i) {
      uint32_t bits;
      std::memcpy(&bits, x + i, sizeof(bits));
      any |= static_cast<uint32_t>((bits & 0x7F800000u) == 0x7F800000u);
    }
    if (any)
      for (int64_t i = lo; i < hi; ++i)
        if (!std::isfinite(x[i])) return i;
  }
  return -1;
}

int64_t episode_of(const int64_t* ends, int64_t num_episodes, int64_t t) {
  return std::upper_bound(ends, ends + num_episodes, t) - ends;
}

// The reverse recursion acc = r[t] + gamma * acc is one long dependency chain; to keep the FPU busy the flat
// array is cut into segments computed side by side (kLanes independent chains per thread), each resetting at
// the episode ends it contains. A segment whose last episode continues into the next segment is then fixed up,
// from the last segment to the first, by recomputing that episode's tail with the carried-in value.
constexpr int kLanes = 4;

struct Segment {
  int64_t lo, hi;     // [lo, hi) steps
  double first_acc;   // return-to-go (double) at step lo, once final
};

void local_pass(const float* r, const int64_t* ends, int64_t E, double gamma, float* out, Segment* seg, int count) {
  int64_t t[kLanes], boundary[kLanes], e[kLanes];
  double acc[kLanes];
  int64_t steps = 0;
  for (int l = 0; l < count; ++l) {
    t[l] = seg[l].hi - 1;
    e[l] = episode_of(ends, E, t[l]);
    boundary[l] = e[l] == 0 ? 0 : ends[e[l] - 1];
    acc[l] = 0.0;
    steps = std::max(steps, seg[l].hi - seg[l].lo);
  }
  for (int64_t i = 0; i < steps; ++i) {
    for (int l = 0; l < kLanes; ++l) {
      if (l >= count || t[l] < seg[l].lo) continue;
      if (t[l] < boundary[l]) {  // crossed into the previous episode: its return-to-go starts from zero
        --e[l];
        boundary[l] = e[l] == 0 ? 0 : ends[e[l] - 1];
        acc[l] = 0.0;
      }
      acc[l] = static_cast<double>(r[t[l]]) + gamma * acc[l];
      out[t[l]] = static_cast<float>(acc[l]);
      --t[l];
    }
  }
  for (int l = 0; l < count; ++l) seg[l].first_acc = acc[l];
}

}  // namespace

void returns_to_go(const float* rewards, int64_t n, const int64_t* ends, int64_t num_episodes, double gamma,
                   float* out, ThreadPool* pool) {
  PYSEQRL_CHECK(gamma >= 0.0 && gamma <= 1.0, "gamma: expected a value in [0, 1], got ", gamma);
  check_episode_ends(ends, num_episodes, n);
  const int64_t bad = first_nonfinite(rewards, n);
  PYSEQRL_CHECK(bad < 0, "rewards: expected finite values, got ", bad < 0 ? 0.0f : rewards[bad], " at index ", bad,
                " (episode ", bad < 0 ? 0 : episode_of(ends, num_episodes, bad), ")");

  const int threads = pool != nullptr && n >= (1 << 16) ? pool->num_threads() : 1;
  const int64_t num_segments = std::max<int64_t>(1, std::min<int64_t>(n / 256, threads * kLanes));
  std::vector<Segment> segs(num_segments);
  for (int64_t s = 0; s < num_segments; ++s) segs[s] = {n * s / num_segments, n * (s + 1) / num_segments, 0.0};

  auto work = [&](int64_t g_lo, int64_t g_hi) {  // groups of kLanes segments
    for (int64_t g = g_lo; g < g_hi; ++g) {
      const int64_t first = g * kLanes;
      const int count = static_cast<int>(std::min<int64_t>(kLanes, num_segments - first));
      local_pass(rewards, ends, num_episodes, gamma, out, &segs[first], count);
    }
  };
  const int64_t groups = (num_segments + kLanes - 1) / kLanes;
  if (threads > 1) {
    pool->parallel_for(groups, work, 1);
  } else {
    work(0, groups);
  }

  // Fix-up, last segment to first: a segment whose last episode runs on into the next segment gets that
  // episode's tail recomputed from the next segment's (final) first return-to-go.
  for (int64_t s = num_segments - 2; s >= 0; --s) {
    Segment& seg = segs[s];
    const int64_t e = episode_of(ends, num_episodes, seg.hi - 1);
    if (ends[e] == seg.hi) continue;  // the segment ends exactly at an episode end: nothing carries in
    const int64_t ep_start = e == 0 ? 0 : ends[e - 1];
    double acc = segs[s + 1].first_acc;
    const int64_t stop = std::max(seg.lo, ep_start);
    for (int64_t t = seg.hi - 1; t >= stop; --t) {
      acc = static_cast<double>(rewards[t]) + gamma * acc;
      out[t] = static_cast<float>(acc);
    }
    if (stop == seg.lo) seg.first_acc = acc;
  }
}

}  // namespace pyseqrl
