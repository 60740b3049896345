#include "core/replay_buffer.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/check.hpp"

namespace pyseqrl {

ReplayBuffer::ReplayBuffer(const ReplayBufferConfig& config) : cfg_(config), rng_(config.seed) {
  PYSEQRL_CHECK(cfg_.capacity > 0, "capacity: expected a positive integer, got ", cfg_.capacity);
  PYSEQRL_CHECK(cfg_.obs_size > 0, "obs_shape: expected a non-empty shape with positive sizes, got size ",
                cfg_.obs_size);
  PYSEQRL_CHECK(cfg_.action_size > 0, "action_shape: expected a non-empty shape with positive sizes, got size ",
                cfg_.action_size);
  PYSEQRL_CHECK(cfg_.alpha >= 0.0 && std::isfinite(cfg_.alpha), "alpha: expected a finite value >= 0, got ",
                cfg_.alpha);
  PYSEQRL_CHECK(cfg_.beta >= 0.0 && std::isfinite(cfg_.beta), "beta: expected a finite value >= 0, got ", cfg_.beta);
  PYSEQRL_CHECK(cfg_.eps > 0.0 && std::isfinite(cfg_.eps), "eps: expected a finite value > 0, got ", cfg_.eps);
  const int64_t C = cfg_.capacity;
  // Every size product is checked before anything is allocated: a wrapped product would allocate a small buffer
  // that add() then overruns.
  const int64_t obs_floats = checked_mul(C, cfg_.obs_size, "capacity x obs_shape");
  const int64_t act_floats = checked_mul(C, cfg_.action_size, "capacity x action_shape");
  int64_t bytes = checked_mul(checked_add(checked_add(obs_floats, obs_floats, "capacity x obs_shape"), act_floats,
                                          "capacity x (obs_shape, action_shape)"),
                              4, "capacity x (obs_shape, action_shape)");
  bytes = checked_add(bytes, checked_mul(C, 8, "capacity"), "capacity: the buffer");
  if (cfg_.prioritized) bytes = checked_add(bytes, SumTree::bytes_for(C), "capacity: the priority tree");
  check_allocation(bytes, "capacity: the replay buffer");
  try {
    obs_.resize(obs_floats);
    next_obs_.resize(obs_floats);
    act_.resize(act_floats);
    rew_.resize(C);
    term_.resize(C);
    if (cfg_.prioritized) tree_.reset(C);
  } catch (const std::bad_alloc&) {
    throw allocation_error(detail::concat("capacity: could not allocate ", bytes, " bytes for ", C,
                                          " transitions"));
  }
}

int64_t ReplayBuffer::size() const {
  std::lock_guard<std::mutex> lock(mu_);
  return size_;
}

int64_t ReplayBuffer::position() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pos_;
}

namespace {

void check_finite(const float* p, int64_t n, int64_t row_size, const char* name) {
  for (int64_t i = 0; i < n; ++i)
    PYSEQRL_CHECK(std::isfinite(p[i]), name, ": expected finite values, got ", p[i], " in transition ", i / row_size);
}

}  // namespace

void ReplayBuffer::check_transitions(int64_t n, const float* obs, const float* actions, const float* rewards,
                                     const float* next_obs, const float* terminals,
                                     const char* const names[5]) const {
  const int64_t O = cfg_.obs_size, A = cfg_.action_size;
  check_finite(obs, checked_mul(n, O, names[0]), O, names[0]);
  check_finite(actions, checked_mul(n, A, names[1]), A, names[1]);
  check_finite(rewards, n, 1, names[2]);
  check_finite(next_obs, n * O, O, names[3]);
  for (int64_t i = 0; i < n; ++i)
    PYSEQRL_CHECK(terminals[i] == 0.0f || terminals[i] == 1.0f, names[4], ": expected booleans (0 or 1), got ",
                  terminals[i], " in transition ", i);
}

void ReplayBuffer::add(int64_t n, const float* obs, const float* actions, const float* rewards,
                       const float* next_obs, const float* terminals) {
  PYSEQRL_CHECK(n >= 0, "add: expected a non-negative number of transitions, got ", n);
  const int64_t O = cfg_.obs_size, A = cfg_.action_size, C = cfg_.capacity;
  static const char* const kNames[5] = {"observations", "actions", "rewards", "next_observations", "terminated"};
  check_transitions(n, obs, actions, rewards, next_obs, terminals, kNames);
  std::lock_guard<std::mutex> lock(mu_);
  // More transitions than slots: only the last `capacity` survive, so skip the rest.
  const int64_t skip = std::max<int64_t>(0, n - C);
  if (skip > 0) pos_ = (pos_ + skip) % C;
  int64_t i = skip;
  while (i < n) {
    const int64_t run = std::min(n - i, C - pos_);  // contiguous slots before the ring wraps
    std::memcpy(&obs_[pos_ * O], obs + i * O, run * O * sizeof(float));
    std::memcpy(&next_obs_[pos_ * O], next_obs + i * O, run * O * sizeof(float));
    std::memcpy(&act_[pos_ * A], actions + i * A, run * A * sizeof(float));
    std::memcpy(&rew_[pos_], rewards + i, run * sizeof(float));
    std::memcpy(&term_[pos_], terminals + i, run * sizeof(float));
    if (cfg_.prioritized) {
      const double p = std::pow(max_priority_, cfg_.alpha);
      for (int64_t k = 0; k < run; ++k) tree_.set(pos_ + k, p);
    }
    pos_ = (pos_ + run) % C;
    i += run;
  }
  size_ = std::min(C, size_ + n);
}

void ReplayBuffer::sample(int64_t batch_size, float* obs, float* actions, float* rewards, float* next_obs,
                          float* terminals, int64_t* indices, float* weights) {
  PYSEQRL_CHECK(batch_size > 0, "batch_size: expected a positive integer, got ", batch_size);
  const int64_t O = cfg_.obs_size, A = cfg_.action_size;
  checked_mul(batch_size, std::max(O, A), "batch_size x obs_shape");
  std::lock_guard<std::mutex> lock(mu_);
  PYSEQRL_CHECK(size_ > 0, "sample: the replay buffer is empty; add transitions before sampling");
  std::vector<int64_t> local;
  int64_t* idx = indices;
  if (idx == nullptr) {
    local.resize(batch_size);
    idx = local.data();
  }
  if (cfg_.prioritized) {
    const double total = tree_.total();
    const double segment = total / static_cast<double>(batch_size);
    const double min_p = tree_.min() / total;
    const double max_w = std::pow(static_cast<double>(size_) * min_p, -cfg_.beta);
    for (int64_t b = 0; b < batch_size; ++b) {
      const double mass = std::min((static_cast<double>(b) + rng_.unit()) * segment, std::nextafter(total, 0.0));
      const int64_t j = std::min(tree_.find_prefix(mass), size_ - 1);
      idx[b] = j;
      if (weights != nullptr) {
        const double p = tree_.get(j) / total;
        weights[b] = static_cast<float>(std::pow(static_cast<double>(size_) * p, -cfg_.beta) / max_w);
      }
    }
  } else {
    for (int64_t b = 0; b < batch_size; ++b) idx[b] = static_cast<int64_t>(rng_.below(static_cast<uint64_t>(size_)));
    if (weights != nullptr) std::fill(weights, weights + batch_size, 1.0f);
  }
  for (int64_t b = 0; b < batch_size; ++b) {
    const int64_t j = idx[b];
    std::memcpy(obs + b * O, &obs_[j * O], O * sizeof(float));
    std::memcpy(next_obs + b * O, &next_obs_[j * O], O * sizeof(float));
    std::memcpy(actions + b * A, &act_[j * A], A * sizeof(float));
    rewards[b] = rew_[j];
    terminals[b] = term_[j];
  }
}

void ReplayBuffer::update_priorities(int64_t n, const int64_t* indices, const double* priorities) {
  PYSEQRL_CHECK(cfg_.prioritized, "update_priorities: this buffer was created with prioritized=False");
  std::lock_guard<std::mutex> lock(mu_);
  for (int64_t k = 0; k < n; ++k) {
    PYSEQRL_CHECK_INDEX(indices[k] >= 0 && indices[k] < size_, "update_priorities: index ", indices[k],
                        " at position ", k, " is out of range [0, ", size_, ")");
    PYSEQRL_CHECK(std::isfinite(priorities[k]) && priorities[k] >= 0.0,
                  "update_priorities: expected finite non-negative priorities, got ", priorities[k], " at position ", k);
  }
  for (int64_t k = 0; k < n; ++k) {
    const double p = priorities[k] + cfg_.eps;
    max_priority_ = std::max(max_priority_, p);
    tree_.set(indices[k], std::pow(p, cfg_.alpha));
  }
}

void ReplayBuffer::set_beta(double beta) {
  PYSEQRL_CHECK(beta >= 0.0 && std::isfinite(beta), "beta: expected a finite value >= 0, got ", beta);
  std::lock_guard<std::mutex> lock(mu_);
  cfg_.beta = beta;
}

ReplayBuffer::State ReplayBuffer::get_state() const {
  std::lock_guard<std::mutex> lock(mu_);
  State st;
  st.size = size_;
  st.position = pos_;
  std::copy(std::begin(rng_.s), std::end(rng_.s), st.rng.begin());
  st.max_priority = max_priority_;
  const int64_t O = cfg_.obs_size, A = cfg_.action_size;
  st.obs.assign(obs_.begin(), obs_.begin() + size_ * O);
  st.next_obs.assign(next_obs_.begin(), next_obs_.begin() + size_ * O);
  st.actions.assign(act_.begin(), act_.begin() + size_ * A);
  st.rewards.assign(rew_.begin(), rew_.begin() + size_);
  st.terminals.assign(term_.begin(), term_.begin() + size_);
  if (cfg_.prioritized) {
    st.priorities.resize(size_);
    for (int64_t i = 0; i < size_; ++i) st.priorities[i] = tree_.get(i);
  }
  return st;
}

void ReplayBuffer::set_state(const State& st) {
  const int64_t O = cfg_.obs_size, A = cfg_.action_size, C = cfg_.capacity;
  PYSEQRL_CHECK(st.size >= 0 && st.size <= C, "state: size ", st.size, " does not fit capacity ", C);
  PYSEQRL_CHECK(st.position >= 0 && st.position < C && (st.size == C || st.position == st.size),
                "state: position ", st.position, " is inconsistent with size ", st.size, " and capacity ", C);
  PYSEQRL_CHECK(static_cast<int64_t>(st.obs.size()) == st.size * O &&
                    static_cast<int64_t>(st.next_obs.size()) == st.size * O &&
                    static_cast<int64_t>(st.actions.size()) == st.size * A &&
                    static_cast<int64_t>(st.rewards.size()) == st.size &&
                    static_cast<int64_t>(st.terminals.size()) == st.size,
                "state: array lengths do not match size ", st.size, " (obs ", st.obs.size(), ", actions ",
                st.actions.size(), ", rewards ", st.rewards.size(), ")");
  PYSEQRL_CHECK(!cfg_.prioritized || static_cast<int64_t>(st.priorities.size()) == st.size,
                "state: expected ", st.size, " priorities for a prioritized buffer, got ", st.priorities.size());
  static const char* const kNames[5] = {"state['observations']", "state['actions']", "state['rewards']",
                                        "state['next_observations']", "state['terminals']"};
  check_transitions(st.size, st.obs.data(), st.actions.data(), st.rewards.data(), st.next_obs.data(),
                    st.terminals.data(), kNames);
  PYSEQRL_CHECK(std::isfinite(st.max_priority) && st.max_priority > 0.0,
                "state['max_priority']: expected a finite positive value, got ", st.max_priority);
  if (cfg_.prioritized)
    for (int64_t i = 0; i < st.size; ++i)
      PYSEQRL_CHECK(std::isfinite(st.priorities[i]) && st.priorities[i] > 0.0,
                    "state['priorities']: expected finite positive values, got ", st.priorities[i],
                    " in transition ", i);
  PYSEQRL_CHECK(st.rng[0] != 0 || st.rng[1] != 0 || st.rng[2] != 0 || st.rng[3] != 0,
                "state['rng']: expected a xoshiro256** state, got all zeros (the generator would only yield 0)");
  std::lock_guard<std::mutex> lock(mu_);
  size_ = st.size;
  pos_ = st.position;
  std::copy(st.rng.begin(), st.rng.end(), rng_.s);
  max_priority_ = st.max_priority;
  std::copy(st.obs.begin(), st.obs.end(), obs_.begin());
  std::copy(st.next_obs.begin(), st.next_obs.end(), next_obs_.begin());
  std::copy(st.actions.begin(), st.actions.end(), act_.begin());
  std::copy(st.rewards.begin(), st.rewards.end(), rew_.begin());
  std::copy(st.terminals.begin(), st.terminals.end(), term_.begin());
  if (cfg_.prioritized) {
    tree_.reset(C);
    for (int64_t i = 0; i < size_; ++i) tree_.set(i, st.priorities[i]);
  }
}

}  // namespace pyseqrl
