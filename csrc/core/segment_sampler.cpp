#include "core/segment_sampler.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <system_error>

#include "core/check.hpp"
#include "core/returns.hpp"
#include "core/rng.hpp"
#include "core/segment_draw.hpp"

namespace pyseqrl {

SegmentBatch::SegmentBatch(int64_t B, int64_t K, int64_t S, int64_t A) {
  // Sizes were checked against overflow when the sampler was built; checked again here for direct callers.
  const int64_t BK = checked_mul(B, K, "batch_size x context_len");
  const char* what = "batch_size x context_len: one batch";
  states.reset(allocate_array<float>(checked_mul(BK, S, "batch_size x context_len x state_dim"), what));
  actions.reset(allocate_array<float>(checked_mul(BK, A, "batch_size x context_len x action_dim"), what));
  rewards.reset(allocate_array<float>(BK, what));
  returns_to_go.reset(allocate_array<float>(BK, what));
  mask.reset(allocate_array<float>(BK, what));
  timesteps.reset(allocate_array<int64_t>(BK, what));
}

std::unique_ptr<SegmentBatch> BatchPool::take() {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.empty()) return nullptr;
  auto b = std::move(free_.back());
  free_.pop_back();
  return b;
}

void BatchPool::give(std::unique_ptr<SegmentBatch> batch) {
  std::lock_guard<std::mutex> lock(mu_);
  if (free_.size() < max_free_) free_.push_back(std::move(batch));
}

namespace {

// Checks the configuration before anything is built from it (the thread pool is a member).
const SegmentSamplerConfig& validated(const SegmentSamplerConfig& c) {
  PYSEQRL_CHECK(c.context_len > 0, "context_len: expected a positive integer, got ", c.context_len);
  PYSEQRL_CHECK(c.batch_size > 0, "batch_size: expected a positive integer, got ", c.batch_size);
  PYSEQRL_CHECK(c.max_ep_len > 0, "max_ep_len: expected a positive integer, got ", c.max_ep_len);
  PYSEQRL_CHECK(std::isfinite(c.return_scale) && c.return_scale != 0.0,
                "return_scale: expected a finite non-zero number, got ", c.return_scale);
  PYSEQRL_CHECK(c.gamma >= 0.0 && c.gamma <= 1.0, "gamma: expected a value in [0, 1], got ", c.gamma);
  PYSEQRL_CHECK(c.prefetch >= 0, "prefetch: expected >= 0, got ", c.prefetch);
  PYSEQRL_CHECK(c.num_threads >= 1, "num_threads: expected >= 1, got ", c.num_threads);
  return c;
}

// Bytes of one batch ([B,K,S] + [B,K,A] + 3 x [B,K] float32 + [B,K] int64), every product overflow-checked, and
// a check that the batches prefetched ahead and the one being filled fit in memory.
void check_batch_size(const SegmentSamplerConfig& c, int64_t S, int64_t A) {
  const int64_t BK = checked_mul(c.batch_size, c.context_len, "batch_size x context_len");
  checked_mul(BK, S, "batch_size x context_len x state_dim");
  checked_mul(BK, A, "batch_size x context_len x action_dim");
  const int64_t per_row = checked_add(S, A, "state_dim + action_dim") * 4 + 3 * 4 + 8;  // S, A < 2^62 here
  const int64_t bytes = checked_mul(BK, per_row, "batch_size x context_len: one batch");
  check_allocation(bytes, "batch_size x context_len: one batch");
  check_allocation(checked_mul(bytes, static_cast<int64_t>(c.prefetch) + 1, "prefetch: batches prepared ahead"),
                   "prefetch: the batches prepared ahead");
}

}  // namespace

SegmentSampler::SegmentSampler(const float* observations, const float* actions, const float* rewards,
                               int64_t num_steps, int64_t state_dim, int64_t action_dim,
                               const int64_t* episode_ends, int64_t num_episodes, const float* state_mean,
                               const float* state_std, const SegmentSamplerConfig& config)
    : obs_(observations),
      act_(actions),
      rew_(rewards),
      N_(num_steps),
      S_(state_dim),
      A_(action_dim),
      cfg_(validated(config)),
      pool_(config.num_threads),
      pool_buffers_(std::make_shared<BatchPool>(static_cast<size_t>(config.prefetch) + 4)) {
  PYSEQRL_CHECK(num_steps > 0, "dataset: expected at least one step, got 0");
  PYSEQRL_CHECK(state_dim > 0, "observations: expected a positive state dimension, got ", state_dim);
  PYSEQRL_CHECK(action_dim > 0, "actions: expected a positive action dimension, got ", action_dim);
  checked_mul(num_steps, state_dim, "observations: num_steps x state_dim");
  checked_mul(num_steps, action_dim, "actions: num_steps x action_dim");
  checked_mul(cfg_.context_len, state_dim, "context_len x state_dim");
  check_batch_size(cfg_, state_dim, action_dim);
  check_episode_ends(episode_ends, num_episodes, num_steps);
  ends_.assign(episode_ends, episode_ends + num_episodes);
  starts_.resize(num_episodes);
  for (int64_t e = 0; e < num_episodes; ++e) starts_[e] = e == 0 ? 0 : ends_[e - 1];

  for (int64_t i = 0; i < N_ * S_; ++i)
    PYSEQRL_CHECK(std::isfinite(obs_[i]), "observations: expected finite values, got ", obs_[i], " at step ", i / S_,
                  ", dimension ", i % S_);
  for (int64_t i = 0; i < N_ * A_; ++i)
    PYSEQRL_CHECK(std::isfinite(act_[i]), "actions: expected finite values, got ", act_[i], " at step ", i / A_,
                  ", dimension ", i % A_);
  rtg_.resize(N_);
  pyseqrl::returns_to_go(rew_, N_, ends_.data(), num_episodes, cfg_.gamma, rtg_.data(), &pool_);

  PYSEQRL_CHECK((state_mean == nullptr) == (state_std == nullptr),
                "state_mean/state_std: give both or neither");
  pad_state_.assign(S_, 0.0f);
  if (state_mean != nullptr) {
    mean_.assign(state_mean, state_mean + S_);
    inv_std_.resize(S_);
    for (int64_t j = 0; j < S_; ++j) {
      PYSEQRL_CHECK(std::isfinite(state_mean[j]), "state_mean: expected finite values, got ", state_mean[j],
                    " at index ", j);
      PYSEQRL_CHECK(std::isfinite(state_std[j]) && state_std[j] > 0.0f,
                    "state_std: expected finite positive values, got ", state_std[j], " at index ", j);
      inv_std_[j] = 1.0f / state_std[j];
      pad_state_[j] = (0.0f - mean_[j]) * inv_std_[j];
    }
    // Tile the statistics K times so a window of tlen steps normalises in one contiguous loop.
    std::vector<float> mean_tile(cfg_.context_len * S_), inv_tile(cfg_.context_len * S_);
    for (int64_t i = 0; i < cfg_.context_len * S_; ++i) {
      mean_tile[i] = mean_[i % S_];
      inv_tile[i] = inv_std_[i % S_];
    }
    mean_.swap(mean_tile);
    inv_std_.swap(inv_tile);
  }
  if (cfg_.prefetch > 0) {
    try {
      worker_ = std::thread([this] { worker_loop(); });
    } catch (const std::system_error& e) {
      throw std::runtime_error(detail::concat("prefetch: could not start the background thread that prepares "
                                              "batches (", e.what(), "); use prefetch=0 or free resources"));
    }
  }
}

SegmentSampler::~SegmentSampler() { stop_worker(); }

void SegmentSampler::draw(int64_t batch_index, int64_t row, int64_t* episode, int64_t* start) const {
  const uint64_t key = counter_stream(cfg_.seed, static_cast<uint64_t>(batch_index));
  draw_window(key, static_cast<uint64_t>(row), ends_.data(), num_episodes(), N_, cfg_.sample_by_length, episode,
              start);
}

namespace {

// Requests the cache lines of the n floats at p (a hint: never faults, whatever the address).
inline void prefetch_floats(const float* p, int64_t n) {
  const char* c = reinterpret_cast<const char*>(p);
  const int64_t bytes = n * static_cast<int64_t>(sizeof(float));
  for (int64_t i = 0; i < bytes; i += 64) __builtin_prefetch(c + i);
  __builtin_prefetch(c + bytes - 1);
}

}  // namespace

void SegmentSampler::fill(int64_t index, float* states, float* actions, float* rewards, float* rtg,
                          int64_t* timesteps, float* mask) {
  const int64_t K = cfg_.context_len, S = S_, A = A_, max_t = cfg_.max_ep_len - 1;
  const float inv_scale = static_cast<float>(1.0 / cfg_.return_scale);
  const float pad_action = cfg_.pad_action;
  // Local restrict pointers: the compiler may otherwise assume the outputs alias the statistics and reload them.
  const float* __restrict obs = obs_;
  const float* __restrict act = act_;
  const float* __restrict rew = rew_;
  const float* __restrict rtg_all = rtg_.data();
  const float* __restrict mean = mean_.empty() ? nullptr : mean_.data();  // [K*S], tiled
  const float* __restrict inv_std = inv_std_.data();                      // [K*S], tiled
  const float* __restrict pad_state = pad_state_.data();

  // The windows lie anywhere in the dataset, so filling is bound by memory latency: each row draws its window
  // kAhead rows early and requests its cache lines then, so that they arrive while earlier rows are written.
  constexpr int64_t kAhead = 4;
  struct Window {
    int64_t base, tlen, start;  // first dataset step, real steps, start offset within the episode
  };
  const uint64_t key = counter_stream(cfg_.seed, static_cast<uint64_t>(index));
  const int64_t* ends = ends_.data();
  const int64_t E = num_episodes();
  auto open = [&](int64_t r) {
    int64_t e, si;
    draw_window(key, static_cast<uint64_t>(r), ends, E, N_, cfg_.sample_by_length, &e, &si);
    const int64_t base = starts_[e] + si;
    const Window w{base, std::min(K, ends_[e] - base), si};
    prefetch_floats(obs + base * S, w.tlen * S);
    prefetch_floats(act + base * A, w.tlen * A);
    prefetch_floats(rew + base, w.tlen);
    prefetch_floats(rtg_all + base, w.tlen);
    return w;
  };
  auto rows = [&](int64_t lo, int64_t hi) {
    Window ahead[kAhead];
    for (int64_t r = lo; r < std::min(hi, lo + kAhead); ++r) ahead[r % kAhead] = open(r);
    for (int64_t r = lo; r < hi; ++r) {
      const Window w = ahead[r % kAhead];
      if (r + kAhead < hi) ahead[r % kAhead] = open(r + kAhead);
      const int64_t base = w.base, tlen = w.tlen, si = w.start;
      const int64_t pad = K - tlen;
      const int64_t real0 = cfg_.pad_right ? 0 : pad;  // position of the first real step
      const int64_t pad0 = cfg_.pad_right ? tlen : 0;  // position of the first padded step
      float* __restrict st = states + r * K * S;
      float* __restrict ac = actions + r * K * A;
      float* __restrict rw = rewards + r * K;
      float* __restrict rt = rtg + r * K;
      int64_t* __restrict ts = timesteps + r * K;
      float* __restrict mk = mask + r * K;
      // (pad,) padded positions, as the reference pipeline pads
      for (int64_t k = pad0; k < pad0 + pad; ++k) {
        std::memcpy(st + k * S, pad_state, S * sizeof(float));
        std::fill(ac + k * A, ac + (k + 1) * A, pad_action);
        rw[k] = 0.0f;
        rt[k] = 0.0f;
        ts[k] = 0;
        mk[k] = 0.0f;
      }
      // (tlen,) real steps
      if (mean != nullptr) {
        // one contiguous, vectorisable loop over tlen*S values against the K-times tiled statistics
        const float* src = obs + base * S;
        float* dst = st + real0 * S;
        for (int64_t i = 0; i < tlen * S; ++i) dst[i] = (src[i] - mean[i]) * inv_std[i];
      } else {
        std::memcpy(st + real0 * S, obs + base * S, tlen * S * sizeof(float));
      }
      std::memcpy(ac + real0 * A, act + base * A, tlen * A * sizeof(float));
      for (int64_t k = 0; k < tlen; ++k) {
        rw[real0 + k] = rew[base + k];
        rt[real0 + k] = rtg_all[base + k] * inv_scale;
        ts[real0 + k] = std::min(si + k, max_t);
        mk[real0 + k] = 1.0f;
      }
    }
  };
  std::lock_guard<std::mutex> lock(fill_mu_);
  pool_.parallel_for(cfg_.batch_size, rows, 16);
}

void SegmentSampler::next_into(float* states, float* actions, float* rewards, float* rtg, int64_t* timesteps,
                               float* mask) {
  if (cfg_.prefetch == 0) {
    int64_t index;
    {
      std::lock_guard<std::mutex> lock(mu_);
      index = consumed_++;
    }
    fill(index, states, actions, rewards, rtg, timesteps, mask);
    return;
  }
  auto b = next();
  const int64_t BK = cfg_.batch_size * cfg_.context_len;
  std::memcpy(states, b->states.get(), BK * S_ * sizeof(float));
  std::memcpy(actions, b->actions.get(), BK * A_ * sizeof(float));
  std::memcpy(rewards, b->rewards.get(), BK * sizeof(float));
  std::memcpy(rtg, b->returns_to_go.get(), BK * sizeof(float));
  std::memcpy(timesteps, b->timesteps.get(), BK * sizeof(int64_t));
  std::memcpy(mask, b->mask.get(), BK * sizeof(float));
  pool_buffers_->give(std::move(b));
}

std::unique_ptr<SegmentBatch> SegmentSampler::make_batch(int64_t index) {
  auto b = pool_buffers_->take();
  if (!b) b = std::make_unique<SegmentBatch>(cfg_.batch_size, cfg_.context_len, S_, A_);
  b->index = index;
  fill(index, b->states.get(), b->actions.get(), b->rewards.get(), b->returns_to_go.get(), b->timesteps.get(),
       b->mask.get());
  return b;
}

void SegmentSampler::stop_worker() {
  if (!worker_.joinable()) return;
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  worker_.join();
  ready_.clear();
}

void SegmentSampler::worker_loop() {
  std::unique_lock<std::mutex> lock(mu_);
  while (true) {
    // Wait for room in the queue of this epoch; after a failure, wait for set_position() to start a new epoch.
    cv_.wait(lock, [&] {
      return stop_ || (!worker_error_ && static_cast<int>(ready_.size()) < cfg_.prefetch);
    });
    if (stop_) return;
    const int64_t index = produced_++;
    const uint64_t epoch = epoch_;
    lock.unlock();
    std::unique_ptr<SegmentBatch> b;
    std::exception_ptr err;
    try {
      b = make_batch(index);
    } catch (...) {
      err = std::current_exception();
    }
    lock.lock();
    if (epoch != epoch_) {  // set_position() moved the stream meanwhile: this batch is no longer wanted
      if (b) pool_buffers_->give(std::move(b));
      continue;
    }
    if (err)
      worker_error_ = err;
    else
      ready_.push_back(std::move(b));
    cv_.notify_all();
  }
}

std::unique_ptr<SegmentBatch> SegmentSampler::next() {
  if (cfg_.prefetch == 0) {
    int64_t index;
    {
      std::lock_guard<std::mutex> lock(mu_);
      index = consumed_++;
    }
    return make_batch(index);
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_.wait(lock, [&] { return !ready_.empty() || worker_error_; });
  if (ready_.empty()) std::rethrow_exception(worker_error_);  // sticky until set_position()
  auto b = std::move(ready_.front());
  ready_.pop_front();
  ++consumed_;
  lock.unlock();
  cv_.notify_all();
  return b;
}

int64_t SegmentSampler::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  return consumed_;
}

void SegmentSampler::set_position(int64_t index) {
  PYSEQRL_CHECK(index >= 0, "position: expected a non-negative batch index, got ", index);
  std::deque<std::unique_ptr<SegmentBatch>> dropped;
  {
    std::lock_guard<std::mutex> lock(mu_);
    consumed_ = produced_ = index;
    ++epoch_;
    worker_error_ = nullptr;
    dropped.swap(ready_);
  }
  cv_.notify_all();
  for (auto& b : dropped) pool_buffers_->give(std::move(b));
}

}  // namespace pyseqrl
