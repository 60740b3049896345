#include "core/thread_pool.hpp"

#include <algorithm>
#include <stdexcept>

#include "core/check.hpp"

namespace pyseqrl {

ThreadPool::ThreadPool(int num_threads) {
  if (num_threads <= 0) num_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  try {
    workers_.reserve(static_cast<size_t>(num_threads - 1));
    for (int i = 1; i < num_threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
  } catch (const std::exception& e) {
    // The destructor does not run for a half-built object: stop and join the threads already started here, or
    // they would wait forever on the condition variables about to be destroyed.
    const size_t started = workers_.size();
    shutdown();
    throw std::runtime_error(detail::concat("num_threads: could not start ", num_threads - 1,
                                            " worker threads (started ", started, "): ", e.what(),
                                            "; use fewer threads"));
  }
}

ThreadPool::~ThreadPool() { shutdown(); }

void ThreadPool::shutdown() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stop_ = true;
  }
  cv_work_.notify_all();
  for (auto& t : workers_)
    if (t.joinable()) t.join();
  workers_.clear();
}

void ThreadPool::worker_loop(int id) {
  uint64_t seen = 0;
  while (true) {
    std::unique_lock<std::mutex> lock(mu_);
    cv_work_.wait(lock, [&] { return stop_ || generation_ != seen; });
    if (stop_) return;
    seen = generation_;
    const auto* fn = fn_;
    const int64_t lo = std::min(n_, id * chunk_), hi = std::min(n_, (id + 1) * chunk_);
    const bool has_work = id < num_chunks_;
    lock.unlock();
    std::exception_ptr err;
    if (has_work && lo < hi) {
      try {
        (*fn)(lo, hi);
      } catch (...) {
        err = std::current_exception();
      }
    }
    lock.lock();
    if (err && !error_) error_ = err;
    if (--pending_ == 0) cv_done_.notify_one();
  }
}

void ThreadPool::parallel_for(int64_t n, const std::function<void(int64_t, int64_t)>& fn, int64_t min_chunk) {
  if (n <= 0) return;
  const int64_t max_chunks = std::max<int64_t>(1, n / std::max<int64_t>(1, min_chunk));
  const int chunks = static_cast<int>(std::min<int64_t>(num_threads(), max_chunks));
  if (chunks <= 1 || workers_.empty()) {
    fn(0, n);
    return;
  }
  {
    std::lock_guard<std::mutex> lock(mu_);
    fn_ = &fn;
    n_ = n;
    num_chunks_ = chunks;
    chunk_ = (n + chunks - 1) / chunks;
    pending_ = static_cast<int>(workers_.size());
    error_ = nullptr;
    ++generation_;
  }
  cv_work_.notify_all();
  std::exception_ptr err;
  try {
    fn(0, std::min(n, chunk_));
  } catch (...) {
    err = std::current_exception();
  }
  std::unique_lock<std::mutex> lock(mu_);
  cv_done_.wait(lock, [&] { return pending_ == 0; });
  if (!err) err = error_;
  fn_ = nullptr;
  if (err) std::rethrow_exception(err);
}

}  // namespace pyseqrl
