// A ring buffer of transitions with uniform or proportional-prioritized sampling.
//
// add() copies a batch of n transitions (one vectorised-env step); sample() draws with a xoshiro256** generator
// whose state is part of the saved state, so a restored buffer continues the exact same sample stream.
// All public methods take one mutex: a thread adding while another samples never sees a torn transition.
#pragma once

#include <array>
#include <cstdint>
#include <mutex>
#include <vector>

#include "core/rng.hpp"
#include "core/sum_tree.hpp"

namespace pyseqrl {

struct ReplayBufferConfig {
  int64_t capacity = 0;
  int64_t obs_size = 0;     // product of the observation shape
  int64_t action_size = 0;  // product of the action shape
  uint64_t seed = 0;
  bool prioritized = false;
  double alpha = 0.6;  // priority exponent
  double beta = 0.4;   // importance-weight exponent
  double eps = 1e-6;   // added to updated priorities
};

class ReplayBuffer {
 public:
  explicit ReplayBuffer(const ReplayBufferConfig& config);

  const ReplayBufferConfig& config() const { return cfg_; }
  int64_t size() const;
  int64_t position() const;

  // Throws std::invalid_argument naming the field (names: observations, actions, rewards, next_observations,
  // terminals) when a value is not finite or a terminal flag is not 0 or 1: what add() and set_state() accept.
  void check_transitions(int64_t n, const float* obs, const float* actions, const float* rewards,
                         const float* next_obs, const float* terminals, const char* const names[5]) const;

  // Appends n transitions (validated with check_transitions); the oldest are overwritten once full. terminals
  // are 0/1 floats.
  void add(int64_t n, const float* obs, const float* actions, const float* rewards, const float* next_obs,
           const float* terminals);
  // Draws batch_size transitions (with replacement). indices/weights may be null for uniform sampling.
  void sample(int64_t batch_size, float* obs, float* actions, float* rewards, float* next_obs, float* terminals,
              int64_t* indices, float* weights);
  // Prioritized replay: new priorities (> 0, finite) for previously sampled indices.
  void update_priorities(int64_t n, const int64_t* indices, const double* priorities);
  void set_beta(double beta);

  // --- state, for save/load -------------------------------------------------------------------------------
  struct State {
    int64_t size = 0, position = 0;
    std::array<uint64_t, 4> rng{};
    double max_priority = 1.0;
    std::vector<float> obs, actions, rewards, next_obs, terminals;  // the first `size` slots, in storage order
    std::vector<double> priorities;                                 // raw (un-exponentiated) leaf values
  };
  State get_state() const;
  // Validates the whole state (sizes, ring position, contents as add() would, priorities, RNG) before changing
  // anything: a rejected state leaves the buffer as it was.
  void set_state(const State& state);

 private:
  ReplayBufferConfig cfg_;
  mutable std::mutex mu_;
  int64_t size_ = 0, pos_ = 0;
  Xoshiro256 rng_;
  std::vector<float> obs_, act_, rew_, next_obs_, term_;
  SumTree tree_;
  double max_priority_ = 1.0;
};

}  // namespace pyseqrl
