// Decision-Transformer window batches over a flat episode dataset.
//
// A batch is B windows of K consecutive steps. Row r of batch b is drawn from the counter-based stream
// (seed, b, r): an episode (with probability proportional to its length, or uniformly), then a start step uniform
// over the episode. Windows that run past the episode end are padded to K: on the left by default, exactly as the
// original Decision Transformer pipeline (gym/experiment.py, get_batch) pads them, or on the right (real steps first,
// so a causal mask alone hides the padding). Batch b is therefore the same whatever the number of threads, and
// resuming at batch b reproduces the rest of the stream.
//
// Thread safety: every public method may be called from any number of threads at once. next(), next_into(),
// position() and set_position() act on the stream under one mutex: each call of next()/next_into() hands out a
// distinct batch index (the one position() showed just before), and set_position() takes effect atomically (a
// concurrent next() returns a batch of either the old or the new stream, never a mix). fill(), draw() and the
// accessors do not move the stream. The sampler itself must outlive every call (the Python object guarantees it).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "core/thread_pool.hpp"

namespace pyseqrl {

struct SegmentSamplerConfig {
  int64_t context_len = 20;
  int64_t batch_size = 64;
  uint64_t seed = 0;
  double return_scale = 1000.0;
  double gamma = 1.0;
  int64_t max_ep_len = 1000;
  bool sample_by_length = true;  // false: episodes uniformly
  float pad_action = -10.0f;     // the reference pipeline pads actions with -10
  bool pad_right = false;        // false: padding before the real steps (DT); true: after them
  int prefetch = 2;              // batches prepared ahead by a background thread (0: none)
  int num_threads = 1;           // threads filling one batch (counting the filler itself)
};

// One batch in one contiguous allocation. Arrays are row-major:
// states [B,K,S], actions [B,K,A], rewards [B,K], returns_to_go [B,K], timesteps [B,K] (int64), mask [B,K].
struct SegmentBatch {
  // Throws allocation_error (MemoryError) naming batch_size/context_len when the arrays cannot be allocated.
  SegmentBatch(int64_t B, int64_t K, int64_t S, int64_t A);
  int64_t index = -1;  // position in the batch stream
  std::unique_ptr<float[]> states, actions, rewards, returns_to_go, mask;
  std::unique_ptr<int64_t[]> timesteps;
};

// Recycles batch buffers handed out to Python: the arrays' owner gives them back here when freed, possibly
// after the sampler itself is gone (the pool is shared).
class BatchPool {
 public:
  explicit BatchPool(size_t max_free) : max_free_(max_free) {}
  std::unique_ptr<SegmentBatch> take();
  void give(std::unique_ptr<SegmentBatch> batch);

 private:
  std::mutex mu_;
  std::vector<std::unique_ptr<SegmentBatch>> free_;
  size_t max_free_;
};

class SegmentSampler {
 public:
  // The arrays are borrowed (not copied) and must outlive the sampler: observations [N,S], actions [N,A],
  // rewards [N], episode_ends [E] (exclusive). state_mean/state_std: [S] or null (no normalisation).
  SegmentSampler(const float* observations, const float* actions, const float* rewards, int64_t num_steps,
                 int64_t state_dim, int64_t action_dim, const int64_t* episode_ends, int64_t num_episodes,
                 const float* state_mean, const float* state_std, const SegmentSamplerConfig& config);
  ~SegmentSampler();
  SegmentSampler(const SegmentSampler&) = delete;
  SegmentSampler& operator=(const SegmentSampler&) = delete;

  const SegmentSamplerConfig& config() const { return cfg_; }
  int64_t state_dim() const { return S_; }
  int64_t action_dim() const { return A_; }
  int64_t num_steps() const { return N_; }
  int64_t num_episodes() const { return static_cast<int64_t>(ends_.size()); }
  const std::vector<float>& returns_to_go() const { return rtg_; }

  // The next batch of the stream (from the prefetch queue when prefetching). Blocks until it is ready.
  std::unique_ptr<SegmentBatch> next();
  // Writes batch `index` of the stream into caller-provided arrays (any thread count gives the same result).
  void fill(int64_t index, float* states, float* actions, float* rewards, float* rtg, int64_t* timesteps,
            float* mask);
  // The next batch of the stream written into caller-provided arrays (a copy from the prefetch queue when
  // prefetching, a direct fill otherwise).
  void next_into(float* states, float* actions, float* rewards, float* rtg, int64_t* timesteps, float* mask);
  // Index of the next batch next() returns; set_position() restarts the stream there (drops prefetched batches).
  int64_t position() const;
  void set_position(int64_t index);

  // Row r of batch b: (episode, start offset within the episode). Exposed for tests and the GPU gather.
  void draw(int64_t batch_index, int64_t row, int64_t* episode, int64_t* start) const;

 private:
  std::unique_ptr<SegmentBatch> make_batch(int64_t index);
  void stop_worker();
  void worker_loop();

  const float* obs_;
  const float* act_;
  const float* rew_;
  int64_t N_, S_, A_;
  std::vector<int64_t> ends_, starts_;
  std::vector<float> rtg_;               // return-to-go with cfg_.gamma, not yet scaled
  std::vector<float> inv_std_, mean_;    // statistics tiled K times ([K*S]); empty: no normalisation
  std::vector<float> pad_state_;         // (0 - mean) / std, as the reference pipeline pads
  SegmentSamplerConfig cfg_;
  ThreadPool pool_;
  std::mutex fill_mu_;  // the pool is not reentrant: one fill at a time

  // Stream state, all guarded by mu_. The prefetch worker runs for the sampler's whole life; set_position()
  // never stops it but starts a new epoch: batches of an older epoch still being filled are discarded.
  mutable std::mutex mu_;
  std::condition_variable cv_;
  int64_t consumed_ = 0;  // index of the next batch handed out
  int64_t produced_ = 0;  // index of the next batch the worker fills
  uint64_t epoch_ = 0;    // bumped by set_position()
  std::deque<std::unique_ptr<SegmentBatch>> ready_;  // batches consumed_, consumed_ + 1, ... of this epoch
  bool stop_ = false;
  std::exception_ptr worker_error_;  // the worker failed filling batch produced_ - 1 of this epoch
  std::shared_ptr<BatchPool> pool_buffers_;
  std::thread worker_;  // declared last: started once everything above exists

 public:
  // Buffers of batches handed out by next() can be returned here for reuse.
  const std::shared_ptr<BatchPool>& buffer_pool() const { return pool_buffers_; }
};

}  // namespace pyseqrl
